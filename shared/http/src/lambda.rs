//! The Lambda entry point: what every `src/bin/<operation>.rs` calls.

use crate::Request;
use crate::route::Handler;
use lambda_http::service_fn;
use strata_core::Stores;

/// Logging for Lambda: JSON when the function's log format is JSON (the template sets it), with the
/// request id on every line; level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init() {
    lambda_http::tracing::init_default_subscriber();
}

/// Serves one operation until the runtime stops the instance. `stores` is built once per instance, before
/// the first request, and shared by every invocation.
pub async fn run(stores: Stores, handler: Handler) -> Result<(), lambda_http::Error> {
    // Lives as long as the process; the runtime never returns while it serves.
    let stores: &'static Stores = Box::leak(Box::new(stores));
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, lambda_http::Error>(handler(stores, req).await)
    }))
    .await
}
