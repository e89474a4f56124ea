//! The Lambda entry point shared by every function.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use strata_dynamo::aggregator::Aggregator;

/// The variable the Lambda runtime sets to the function's `Handler` (AWS documents it for custom runtimes).
pub const HANDLER_VAR: &str = "_HANDLER";

/// Serves the function `name` until the runtime stops: builds the DynamoDB stores (or the aggregator) once,
/// then answers each invocation with the function's declared handler.
pub async fn run(name: &str) -> Result<(), lambda_http::Error> {
    let function = crate::function(name).ok_or_else(|| {
        format!("{HANDLER_VAR}={name:?} names no function of the API (see template.yaml)")
    })?;
    strata_http::lambda::init();
    match function.handler() {
        Some(handler) => {
            let stores = strata_dynamo::stores_from_env().await?;
            strata_http::lambda::run(stores, handler).await
        }
        // The aggregator: a stream batch or the re-scan schedule's event. An error fails the invocation,
        // and the stream delivers the batch again; folding is idempotent.
        None => {
            let aggregator: &'static Aggregator =
                Box::leak(Box::new(Aggregator::from_env().await?));
            lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
                Ok::<Value, lambda_runtime::Error>(
                    strata_counters::aggregate::handle(aggregator, event.payload).await?,
                )
            }))
            .await
        }
    }
}
