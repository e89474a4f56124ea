//! Lambda on the counter log table's stream and on its re-scan schedule: folds new log entries into the
//! totals. An error fails the invocation, and the stream delivers the batch again; folding is idempotent.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use strata_dynamo::aggregator::Aggregator;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    strata_http::lambda::init();
    let aggregator: &'static Aggregator = Box::leak(Box::new(Aggregator::from_env().await?));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(
            strata_counters::aggregate::handle(aggregator, event.payload).await?,
        )
    }))
    .await
}
