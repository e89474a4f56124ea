//! One deadline per request, inside the time its host gives it (the Lambda function's timeout, or the local
//! server's request budget): every store call takes what is left, so a slow store ends as the contract's
//! `503` with `retry-after` while there is still time to send it, not as the host cutting the request off.
//!
//! The deadline is task-local: the entry point sets it around the handler with [`within`], and a store asks
//! for [`remaining`] before each call. Outside any deadline (tools, tests that call a store directly) there
//! is no limit but the store's own timeouts.

use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with a deadline `budget` from now, or the enclosing one if that is sooner.
pub async fn within<F: Future>(budget: Duration, work: F) -> F::Output {
    let mut deadline = Instant::now() + budget;
    if let Some(outer) = current() {
        deadline = deadline.min(outer);
    }
    DEADLINE.scope(deadline, work).await
}

/// Runs `work` with the enclosing deadline moved `reserve` earlier, keeping that much for what the caller
/// does after it (recording or releasing an idempotency key).
pub async fn keeping<F: Future>(reserve: Duration, work: F) -> F::Output {
    match current() {
        Some(outer) => {
            let deadline = outer
                .checked_sub(reserve)
                .unwrap_or(outer)
                .max(Instant::now());
            DEADLINE.scope(deadline, work).await
        }
        None => work.await,
    }
}

/// The current deadline, if any.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The time left before the current deadline (zero once it passed), or `None` outside any deadline.
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sooner_deadline_wins_and_a_reserve_is_kept() {
        assert_eq!(remaining(), None);
        within(Duration::from_secs(10), async {
            let outer = remaining().unwrap();
            assert!(outer <= Duration::from_secs(10) && outer > Duration::from_secs(9));
            within(Duration::from_secs(60), async {
                assert!(remaining().unwrap() <= Duration::from_secs(10));
            })
            .await;
            keeping(Duration::from_secs(4), async {
                let inner = remaining().unwrap();
                assert!(inner <= Duration::from_secs(6) && inner > Duration::from_secs(5));
            })
            .await;
            keeping(Duration::from_secs(60), async {
                assert_eq!(remaining().unwrap(), Duration::ZERO);
            })
            .await;
        })
        .await;
    }
}
