//! The layer that refuses what a web page sends: a foreign `Host` or `Origin` ([`crate::browser`]).

use super::metrics::{count_refusal, operation_of, operations};
use super::router::to_axum;
use std::sync::Arc;
use strata_http::response::error;

/// Refuses a request a web page sent ([`crate::browser`]): a foreign `Host` or `Origin`. Outside the
/// token check: a page is refused whether or not the server has a token. Apply it after every route is
/// added.
pub fn guarded(router: axum::Router, allowed: crate::browser::Allowed) -> axum::Router {
    let allowed = Arc::new(allowed);
    let operations = Arc::new(operations());
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let (allowed, operations) = (allowed.clone(), operations.clone());
            async move {
                let started = std::time::Instant::now();
                let headers = req.headers();
                if let Err(e) = allowed
                    .check_host(headers)
                    .and_then(|()| allowed.check_origin(headers))
                {
                    tracing::warn!(code = %e.code, "refused a request a web page sent: {}", e.message);
                    let response = to_axum(error(&e));
                    count_refusal(operation_of(&operations, &req), started, &response);
                    return response;
                }
                next.run(req).await
            }
        },
    ))
}
