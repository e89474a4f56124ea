//! The HTTP side of `strata serve`: [`app`] puts together what it serves, one layer per file.
//!
//! - [`mod@router`]: the route table mounted on axum; each route calls its handler, plus the local extras
//!   (`GET /kv/ws`, `GET /openapi.json`).
//! - [`api_gateway`]: API Gateway's part: the request as the Lambda gets it, and the refusal of a body
//!   that is not JSON where JSON is read.
//! - [`rate_limit`]: `--rate-limit` ([`RateLimit`], [`rate_limited`]) and the thread that trims it.
//! - [`front`]: the checks before routing, in one service around the router ([`Front`]): what a web page
//!   sends is refused, `--auth-token` on every HTTP request ([`authenticated`]), no `HEAD`.
//! - [`metrics`]: `GET /metrics` ([`with_metrics`], [`prometheus`]) and the count of refusals no handler
//!   counted.
//! - [`observe`]: request ids and request logging around everything ([`observed`]).

pub mod api_gateway;
pub mod front;
pub mod metrics;
pub mod observe;
pub mod rate_limit;
pub mod router;

pub use front::{Checks, Front, authenticated};
pub use metrics::{prometheus, with_metrics};
pub use observe::{App, observed};
pub use rate_limit::{RateLimit, rate_limited};
pub(crate) use router::to_axum;
pub use router::{axum_path, router};

use std::sync::Arc;
use strata_core::Stores;

/// What `strata serve` serves: the API's [`router()`] and `GET /admin/export`, the rate limiter if one is
/// configured, `GET /metrics`,
/// the bearer-token check if a token is configured, and request ids and logging around everything.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub rate_limit: Option<RateLimit>,
    pub auth_token: Option<crate::auth::AuthToken>,
    /// Serves `GET /admin/export` from this store when set.
    pub export: Option<crate::transfer::ExportPort>,
    /// The addresses and names the server answers to; with them, what a web page sends is refused
    /// ([`crate::browser`]). `strata serve` always sets it.
    pub allowed: Option<crate::browser::Allowed>,
    /// The local WebSocket's cap and idle timeout (its messages count against `rate_limit`).
    pub websockets: Option<crate::line::WsLimits>,
}

/// The whole local server. The checks in front of the router ([`Front`]) come before the limiter and
/// `/metrics`, so a request without the token reaches nothing (not even the limiter's budget); request ids
/// and logging are outside everything, so a `401` has an `x-request-id` and a log line like any answer.
pub fn app(stores: Arc<Stores>, options: &Options) -> App {
    let mut router = router(stores);
    let mut websockets = options.websockets.clone();
    // Before the limiter: an export is the heaviest request there is.
    if let Some(export) = &options.export {
        router = crate::transfer::with_export(router, export);
    }
    if let Some(limit) = options.rate_limit {
        let budget;
        (router, budget) = rate_limited(router, limit);
        if let Some(websockets) = &mut websockets {
            websockets.budget = Some(budget);
        }
    }
    router = with_metrics(router);
    let checks = Checks {
        allowed: options.allowed.clone(),
        token: options.auth_token.clone(),
        websockets,
    };
    observed(Front::new(router, checks))
}
