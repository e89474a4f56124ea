//! `--rate-limit`: requests per client address and route, and the thread that trims the limiter's map.

use super::metrics::{Operations, count_refusal};
use super::router::to_axum;
use http::Method;
use std::sync::Arc;
use strata_core::Error;
use strata_http::response::error;

/// `--rate-limit N/SECONDS`: at most N requests per SECONDS per client address and route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: std::time::Duration,
}

impl RateLimit {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = || format!("expected REQUESTS/SECONDS such as 1000/5, not {raw:?}");
        let (requests, seconds) = raw.split_once('/').ok_or_else(bad)?;
        let requests: u32 = requests.trim().parse().map_err(|_| bad())?;
        let seconds: f64 = seconds.trim().parse().map_err(|_| bad())?;
        if requests == 0 || !(seconds > 0.0 && seconds.is_finite()) {
            return Err(bad());
        }
        Ok(Self {
            requests,
            per: std::time::Duration::from_secs_f64(seconds),
        })
    }
}

/// Rate limiting by client address and route (tower_governor's GCRA): a burst of N, refilled evenly over
/// SECONDS. Over the limit: `429` in the API's error JSON with `retry-after`, and the request never reaches
/// its handler, so nothing is counted or changed. Also returns the budget that each message of a local
/// WebSocket takes from, as a request to `GET /kv/ws` does.
pub fn rate_limited(
    router: axum::Router,
    limit: RateLimit,
) -> (axum::Router, crate::line::MessageBudget) {
    use tower_governor::GovernorLayer;
    use tower_governor::governor::GovernorConfigBuilder;
    let config = GovernorConfigBuilder::default()
        .key_extractor(ClientAndRoute)
        .period(limit.per / limit.requests)
        .burst_size(limit.requests)
        .finish()
        .expect("a positive period and burst");
    trim_every(
        config.limiter(),
        limit.per.clamp(TRIM_EVERY_MIN, TRIM_EVERY_MAX),
        // `retain_recent`, as tower_governor advises, then the memory back.
        |limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        },
    );
    let limiter = config.limiter().clone();
    let budget: crate::line::MessageBudget = Arc::new(move |client| {
        limiter
            .check_key(&(client, Method::GET, "/kv/ws".to_owned()))
            .map_err(|not_until| {
                use governor::clock::{Clock, DefaultClock};
                not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs()
                    .max(1)
            })
    });
    let layer = GovernorLayer::new(Arc::new(config)).error_handler(|e| {
        let retry_after = match e {
            tower_governor::GovernorError::TooManyRequests { wait_time, .. } => wait_time.max(1),
            _ => 1,
        };
        to_axum(error(
            &Error::new(
                strata_core::Kind::Throttled,
                "rate_limited",
                "too many requests; slow down",
            )
            .retry_after(retry_after),
        ))
    });
    // Outside the limiter, so it sees the 429s the limiter answers without calling a handler (which
    // records its own answers).
    let operations = Arc::new(Operations::new());
    let router = router
        .route_layer(layer)
        .route_layer(axum::middleware::from_fn(move |req, next| {
            count_throttled(operations.clone(), req, next)
        }));
    (router, budget)
}

/// The limiter keeps a state per client address and route it has seen; a client quiet for one period of
/// the limit is back to a full burst, and its state says nothing a fresh one would not. Those are dropped
/// every period (within these bounds), so the map holds the clients of about the last period, not every
/// address that ever called.
const TRIM_EVERY_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const TRIM_EVERY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `trim` on `limiter` every `every` on a thread of its own, until the limiter is dropped with its
/// router.
fn trim_every<T: Send + Sync + 'static>(
    limiter: &Arc<T>,
    every: std::time::Duration,
    trim: fn(&T),
) {
    let limiter = Arc::downgrade(limiter);
    let spawned = std::thread::Builder::new()
        .name("strata-rate-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                trim(&limiter);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the rate limiter's trimmer");
    }
}

async fn count_throttled(
    operations: Arc<Operations>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let operation = operations.of(&req);
    let response = next.run(req).await;
    if response
        .extensions()
        .get::<strata_http::metrics::ErrorCode>()
        .is_some_and(|code| code.0 == "rate_limited")
    {
        count_refusal(operation, started, &response);
    }
    response
}

/// The rate-limiting key: the client's address and the route (method and path template) it called.
#[derive(Debug, Clone, Copy)]
struct ClientAndRoute;

impl tower_governor::key_extractor::KeyExtractor for ClientAndRoute {
    type Key = (std::net::IpAddr, Method, String);

    fn extract<T>(
        &self,
        req: &http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        let client = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip())
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)?;
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
        Ok((client, req.method().clone(), route))
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    /// The limiter's map holds the clients of about the last period, not every address that ever called.
    #[test]
    fn the_rate_limiters_map_is_trimmed_of_quiet_clients() {
        use tower_governor::governor::GovernorConfigBuilder;
        let config = GovernorConfigBuilder::default()
            .key_extractor(super::ClientAndRoute)
            .period(std::time::Duration::from_millis(10))
            .burst_size(1)
            .finish()
            .unwrap();
        let limiter = config.limiter();
        for n in 0..1000u32 {
            let client = std::net::IpAddr::from(n.to_be_bytes());
            assert!(
                limiter
                    .check_key(&(client, http::Method::GET, "/kv/keys/{key}".into()))
                    .is_ok()
            );
        }
        assert_eq!(limiter.len(), 1000);
        super::trim_every(limiter, std::time::Duration::from_millis(50), |limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !limiter.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the map was never trimmed: {} left",
                limiter.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn rate_limits_parse() {
        let limit = RateLimit::parse("50/5").unwrap();
        assert_eq!((limit.requests, limit.per.as_secs()), (50, 5));
        for bad in ["", "50", "0/5", "50/0", "x/5", "50/-1"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }
}
