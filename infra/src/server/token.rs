//! `--auth-token` on HTTP: the layer that checks `Authorization: Bearer` on every request
//! ([`crate::auth`] compares the token).

use super::metrics::{Operations, operation_of, operations};
use super::router::to_axum;
use std::sync::Arc;
use strata_http::response::error;

/// `--auth-token`: every request, on every route (the fallback too), needs `Authorization: Bearer TOKEN`;
/// without it `401 unauthorized` and nothing runs. Apply it after every route is added (a route added
/// later is not covered). Refusals are counted in the metrics under the operation the request was for,
/// or the fallback's; the local extras (`/metrics`, `/openapi.json`, `/kv/ws`) are not operations and
/// are not counted, as their answers never are.
pub fn authenticated(router: axum::Router, token: crate::auth::AuthToken) -> axum::Router {
    let operations = Arc::new(operations());
    router.layer(axum::middleware::from_fn(move |req, next| {
        check_token(token.clone(), operations.clone(), req, next)
    }))
}

async fn check_token(
    token: crate::auth::AuthToken,
    operations: Arc<Operations>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    // A request without the header is no guess: refused at once, nothing recorded.
    let verdict = match crate::auth::AuthToken::bearer(req.headers()) {
        None => crate::auth::Verdict::Wrong,
        Some(candidate) => {
            let client = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip());
            token.verify(client, "http", candidate).await
        }
    };
    if verdict == crate::auth::Verdict::Valid {
        // For `/kv/ws`, whose `AUTH` command checks the same token.
        req.extensions_mut().insert(token);
        return next.run(req).await;
    }
    let response = match verdict {
        crate::auth::Verdict::Throttled(retry_after) => {
            to_axum(error(&crate::auth::throttled(retry_after)))
        }
        _ => crate::auth::unauthorized(crate::auth::refusal(req.headers())),
    };
    let code = match verdict {
        crate::auth::Verdict::Throttled(_) => crate::auth::THROTTLED_CODE,
        _ => crate::auth::CODE,
    };
    if let Some(operation) = operation_of(&operations, &req) {
        strata_http::metrics::record(operation, started, response.status().as_u16(), code.into());
    }
    response
}
