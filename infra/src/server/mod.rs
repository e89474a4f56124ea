//! The HTTP side of `strata serve`: [`app`] puts together what it serves, one layer per file.
//!
//! - [`mod@router`]: the route table mounted on axum; each route calls its handler, plus the local extras
//!   (`GET /kv/ws`, `GET /openapi.json`).
//! - [`api_gateway`]: API Gateway's part: the request as the Lambda gets it, and the refusals it gives
//!   before any function runs ([`as_on_aws`]).
//! - [`rate_limit`]: `--rate-limit` ([`RateLimit`], [`rate_limited`]) and the thread that trims it.
//! - [`token`]: `--auth-token` on every HTTP request ([`authenticated`]).
//! - [`web_pages`]: what a web page sends is refused ([`guarded`]).
//! - [`metrics`]: `GET /metrics` ([`with_metrics`], [`prometheus`]) and the count of refusals no handler
//!   counted.
//! - [`observe`]: request ids and request logging around everything ([`observed`]).

pub mod api_gateway;
pub mod metrics;
pub mod observe;
pub mod rate_limit;
pub mod router;
pub mod token;
pub mod web_pages;

pub use api_gateway::as_on_aws;
pub use metrics::{prometheus, with_metrics};
pub use observe::{App, NextRequestId, RequestSpan, observed};
pub use rate_limit::{RateLimit, rate_limited};
pub(crate) use router::to_axum;
pub use router::{axum_path, router};
pub use token::authenticated;
pub use web_pages::guarded;

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

/// The whole local server. The token check is outside the limiter and around `/metrics` too, so a request
/// without the token reaches nothing (not even the limiter's budget); request ids and logging are outside
/// everything, so a `401` has an `x-request-id` and a log line like any answer.
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
    if let Some(websockets) = websockets {
        router = router.layer(axum::Extension(websockets));
    }
    router = with_metrics(router);
    if options.allowed.is_some() {
        router = as_on_aws(router);
    }
    if let Some(token) = &options.auth_token {
        router = authenticated(router, token.clone());
    }
    if let Some(allowed) = &options.allowed {
        router = guarded(router, allowed.clone());
    }
    observed(router)
}
