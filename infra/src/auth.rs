//! `strata serve --auth-token TOKEN` (or `STRATA_AUTH_TOKEN`): one shared secret for the local server.
//!
//! With a token, every HTTP request (every route of the API, the fallback, `GET /metrics`,
//! `GET /openapi.json`, and the WebSocket upgrade of `GET /kv/ws`) must carry `Authorization: Bearer TOKEN`;
//! anything else is answered `401 unauthorized` in the contract's error JSON with `www-authenticate: Bearer`,
//! before any handler runs. A line-protocol connection over TCP must send `AUTH TOKEN` before any other
//! command (see [`crate::line`]).
//!
//! Guessing is slowed ([`Guesses`]): a client address that sends wrong tokens in quick succession has its
//! next attempts checked one at a time, on both listeners together, whatever the number of connections.
//! Tokens are compared as SHA-256 digests in constant time, so neither the bytes nor the length of the
//! token show in the time taken.

use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's, which is the system's own outside tests that pause time.
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Shortest token accepted, in bytes: 16 random visible characters are about 100 bits.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The error code of every refusal.
pub const CODE: &str = "unauthorized";

/// The error code of an attempt refused unchecked: its address is sending wrong tokens too fast.
pub const THROTTLED_CODE: &str = "too_many_auth_failures";

/// The shared secret (as its digest), and the record of wrong guesses shared by every listener that
/// checks it. Its `Debug` shows neither.
#[derive(Clone)]
pub struct AuthToken {
    digest: [u8; 32],
    guesses: Arc<Guesses>,
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(…)")
    }
}

/// What an attempt to authenticate comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Wrong,
    /// Refused without looking at it: the address has more attempts waiting than [`Guesses`] lets
    /// queue. Retry after this many seconds.
    Throttled(u64),
}

impl AuthToken {
    /// A token is 16 to 4096 visible ASCII characters (no spaces or control characters: it is one word of
    /// an `AUTH` line and the rest of an `Authorization` header).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&raw.len()) {
            return Err(format!(
                "the token must be {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} characters, not {} (a short \
                 one is easy to guess; e.g. head -c 24 /dev/urandom | base64)",
                raw.len()
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the token must be visible ASCII characters, without spaces or control characters"
                    .to_owned(),
            );
        }
        Ok(Self {
            digest: Sha256::digest(raw.as_bytes()).into(),
            guesses: Arc::default(),
        })
    }

    /// Whether `candidate` is the token: digests of equal length compared in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        bool::from(self.digest.ct_eq(&digest))
    }

    /// Checks an attempt from `client` on `listener` (`http`, `line`): waits its turn first if the address
    /// is being slowed, and records a wrong one. `None` is an attempt that cannot be right (a malformed
    /// `Authorization` header): it counts as a wrong one.
    pub async fn verify(
        &self,
        client: Option<IpAddr>,
        listener: &'static str,
        candidate: Option<&[u8]>,
    ) -> Verdict {
        let turn = match client.map(|ip| self.guesses.admit(ip)) {
            Some(Err(retry_after)) => {
                metrics::counter!(FAILURES, "listener" => listener, "outcome" => "refused")
                    .increment(1);
                return Verdict::Throttled(retry_after);
            }
            Some(Ok(turn)) => turn,
            None => Turn::default(),
        };
        if !turn.wait.is_zero() {
            tokio::time::sleep(turn.wait).await;
        }
        if candidate.is_some_and(|c| self.matches(c)) {
            return Verdict::Valid;
        }
        metrics::counter!(FAILURES, "listener" => listener, "outcome" => "wrong").increment(1);
        if let Some(ip) = client {
            self.guesses.failed(ip, listener, turn);
        }
        Verdict::Wrong
    }

    /// The bearer credentials of a request's `Authorization` header: `None` without the header, `Some(None)`
    /// if it is not exactly one `Bearer <credentials>` (the scheme in any case, as RFC 9110 has it).
    pub fn bearer(headers: &http::HeaderMap) -> Option<Option<&[u8]>> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return Some(None);
        }
        let value = first.as_bytes();
        let Some(space) = value.iter().position(|b| *b == b' ') else {
            return Some(None);
        };
        let (scheme, credentials) = value.split_at(space);
        Some(
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| credentials.trim_ascii()),
        )
    }
}

/// The refusal, unchecked, of an attempt from an address that sends wrong tokens too fast.
pub fn throttled(retry_after: u64) -> strata_core::Error {
    strata_core::Error::new(
        strata_core::Kind::Throttled,
        THROTTLED_CODE,
        "too many wrong tokens from this address; its attempts are slowed, retry later",
    )
    .retry_after(retry_after)
}

/// Wrong tokens counted at `GET /metrics`, by listener and outcome (`wrong`, or `refused` unchecked).
pub const FAILURES: &str = "strata_auth_failures_total";

/// Wrong tokens an address may send in quick succession before it is slowed.
pub const GUESS_BURST: u32 = 10;
/// Once slowed, an address's attempts are checked one per this long (both listeners together).
pub const GUESS_INTERVAL: Duration = Duration::from_millis(200);
/// The longest an attempt waits its turn; one that would wait longer is refused unchecked.
pub const GUESS_MAX_WAIT: Duration = Duration::from_secs(2);
/// Addresses tracked at once; past it, a new address is not slowed until old ones are forgotten.
const TRACKED_MAX: usize = 65_536;

/// Wrong tokens per client address (an IPv6 address by its /64, which one client usually holds whole), as
/// a GCRA schedule: a wrong token moves the address's theoretical arrival time on by [`GUESS_INTERVAL`].
/// While that time is ahead of the clock, every attempt from the address (right or wrong: which it is
/// shows only once checked) takes its interval before it is checked, and once the time is more than
/// [`GUESS_BURST`] intervals ahead, waits until it conforms: attempts on many connections at once are
/// checked one after another. An address that stops guessing is free again once its schedule has caught
/// up with the clock.
#[derive(Debug, Default)]
pub struct Guesses {
    by_address: Mutex<HashMap<IpAddr, Schedule>>,
}

#[derive(Debug)]
struct Schedule {
    /// The theoretical arrival time of the address's next attempt.
    tat: Instant,
    /// Whether this burst has been logged (one line per burst).
    logged: bool,
}

/// An attempt's turn: how long it waits, and whether it has taken its interval already.
#[derive(Debug, Default, Clone, Copy)]
pub struct Turn {
    wait: Duration,
    charged: bool,
}

fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
        v4 => v4,
    }
}

impl Guesses {
    const TOLERANCE: Duration = GUESS_INTERVAL.saturating_mul(GUESS_BURST);

    /// The attempt's turn, or the seconds to retry after if it would wait over [`GUESS_MAX_WAIT`].
    pub fn admit(&self, ip: IpAddr) -> Result<Turn, u64> {
        let now = Instant::now();
        let mut by_address = self
            .by_address
            .lock()
            .expect("no panics while holding the lock");
        let Some(schedule) = by_address.get_mut(&address_key(ip)).filter(|s| s.tat > now) else {
            // Not guessing lately: nothing to wait for, and only a wrong token is charged.
            return Ok(Turn::default());
        };
        // Guessing lately: every attempt takes its interval before it is checked, so that attempts at
        // once cannot all pass as one.
        let next = schedule.tat + GUESS_INTERVAL;
        let wait = next
            .checked_sub(Self::TOLERANCE)
            .map_or(Duration::ZERO, |conforms_at| {
                conforms_at.saturating_duration_since(now)
            });
        if wait > GUESS_MAX_WAIT {
            return Err(wait.as_secs().max(1));
        }
        schedule.tat = next;
        Ok(Turn {
            wait,
            charged: true,
        })
    }

    /// Records a wrong token from `ip` (whose turn was `turn`), and logs the first one of a burst that
    /// slows the address.
    pub fn failed(&self, ip: IpAddr, listener: &str, turn: Turn) {
        let now = Instant::now();
        let key = address_key(ip);
        let mut by_address = self
            .by_address
            .lock()
            .expect("no panics while holding the lock");
        if !by_address.contains_key(&key) && by_address.len() >= TRACKED_MAX {
            by_address.retain(|_, s| s.tat > now);
            if by_address.len() >= TRACKED_MAX {
                return;
            }
        }
        let schedule = by_address.entry(key).or_insert(Schedule {
            tat: now,
            logged: false,
        });
        if schedule.tat <= now {
            // Caught up with the clock: a new burst.
            *schedule = Schedule {
                tat: now,
                logged: false,
            };
        }
        if !turn.charged {
            schedule.tat += GUESS_INTERVAL;
        }
        if !schedule.logged && schedule.tat > now + Self::TOLERANCE {
            schedule.logged = true;
            tracing::warn!(
                client = %key,
                listener,
                "{GUESS_BURST} wrong tokens in quick succession from {key}: its attempts are now checked \
                 one per {} ms until it stops (counted in {FAILURES})",
                GUESS_INTERVAL.as_millis()
            );
        }
    }
}

/// The `401`: the contract's error JSON, `www-authenticate: Bearer`, and the error code for the metrics.
pub fn unauthorized(message: &str) -> axum::response::Response {
    let body = serde_json::json!({"error": {"code": CODE, "message": message}});
    let mut response = http::Response::builder()
        .status(http::StatusCode::UNAUTHORIZED)
        .header(CONTENT_TYPE, "application/json")
        .header(WWW_AUTHENTICATE, "Bearer realm=\"strata\"")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a valid status and headers");
    response
        .extensions_mut()
        .insert(strata_http::metrics::ErrorCode(CODE.into()));
    response
}

/// Why a request is refused, as its message says.
pub fn refusal(headers: &http::HeaderMap) -> &'static str {
    if headers.contains_key(AUTHORIZATION) {
        "the bearer token is not the server's (Authorization: Bearer TOKEN, the token of --auth-token)"
    } else {
        "this server requires Authorization: Bearer TOKEN (the token of --auth-token)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-secret-of-24-characters";

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn tokens_are_visible_ascii_words() {
        assert!(AuthToken::parse("s3cr3t-t0ken_~!+").is_ok());
        for bad in [
            "",
            "fifteen-chars-x",
            "has space",
            "tab\there",
            "é",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(AuthToken::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", AuthToken::parse(SECRET).unwrap()),
            "AuthToken(…)"
        );
    }

    /// What the HTTP check lets through: exactly one `Bearer` header whose credentials match.
    fn authorizes(token: &AuthToken, headers: &http::HeaderMap) -> bool {
        AuthToken::bearer(headers)
            .flatten()
            .is_some_and(|c| token.matches(c))
    }

    #[test]
    fn only_the_bearer_token_itself_authorizes() {
        let token = AuthToken::parse(SECRET).unwrap();
        assert!(authorizes(&token, &headers(&format!("Bearer {SECRET}"))));
        assert!(authorizes(&token, &headers(&format!("bearer {SECRET}"))));
        assert!(authorizes(&token, &headers(&format!("BEARER  {SECRET} "))));
        for bad in [
            format!("Bearer {}", &SECRET[1..]),
            format!("Bearer {SECRET}s"),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            SECRET.to_owned(),
            format!("Basic {SECRET}"),
            format!("Bearer {}", SECRET.to_uppercase()),
        ] {
            assert!(!authorizes(&token, &headers(&bad)), "{bad:?}");
        }
        assert!(!authorizes(&token, &http::HeaderMap::new()));
        let mut twice = headers(&format!("Bearer {SECRET}"));
        twice.append(AUTHORIZATION, format!("Bearer {SECRET}").parse().unwrap());
        assert!(!authorizes(&token, &twice), "two Authorization headers");
    }

    /// A burst of wrong tokens, then every attempt from the address waits its turn, one per interval,
    /// however many arrive at once; past the longest wait they are refused unchecked. Other addresses are
    /// not slowed.
    #[tokio::test(start_paused = true)]
    async fn wrong_tokens_slow_their_address_down() {
        let token = AuthToken::parse(SECRET).unwrap();
        let guesser = Some(IpAddr::from([10, 0, 0, 1]));
        let started = tokio::time::Instant::now();
        for _ in 0..GUESS_BURST {
            assert_eq!(
                token.verify(guesser, "http", Some(b"nope")).await,
                Verdict::Wrong
            );
        }
        assert!(
            started.elapsed() < GUESS_INTERVAL,
            "the burst is not slowed"
        );
        // Concurrent attempts are checked one after another.
        let verdicts = all(&token, guesser, 5).await;
        assert!(
            verdicts.iter().all(|v| *v == Verdict::Wrong),
            "{verdicts:?}"
        );
        assert!(
            started.elapsed() >= GUESS_INTERVAL * 5,
            "{:?}",
            started.elapsed()
        );
        // The right token from the slowed address waits its turn too, then passes.
        let before = tokio::time::Instant::now();
        assert_eq!(
            token.verify(guesser, "http", Some(SECRET.as_bytes())).await,
            Verdict::Valid
        );
        assert!(before.elapsed() >= GUESS_INTERVAL);
        // Too many waiting: refused unchecked.
        let verdicts = all(&token, guesser, 20).await;
        assert!(
            verdicts.iter().any(|v| matches!(v, Verdict::Throttled(_))),
            "{verdicts:?}"
        );
        // Another address is not slowed; the guesser is forgiven once it stops.
        let other = Some(IpAddr::from([10, 0, 0, 2]));
        let before = tokio::time::Instant::now();
        assert_eq!(
            token.verify(other, "http", Some(SECRET.as_bytes())).await,
            Verdict::Valid
        );
        assert!(before.elapsed().is_zero());
        tokio::time::sleep(GUESS_MAX_WAIT + GUESS_INTERVAL * (GUESS_BURST + 30)).await;
        let before = tokio::time::Instant::now();
        assert_eq!(
            token.verify(guesser, "http", Some(b"nope")).await,
            Verdict::Wrong
        );
        assert!(before.elapsed().is_zero());
    }

    /// `n` wrong attempts from `client` at once.
    async fn all(token: &AuthToken, client: Option<IpAddr>, n: usize) -> Vec<Verdict> {
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..n {
            let token = token.clone();
            attempts.spawn(async move { token.verify(client, "line", Some(b"nope")).await });
        }
        attempts.join_all().await
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), IpAddr::from([127, 0, 0, 1]));
    }
}
