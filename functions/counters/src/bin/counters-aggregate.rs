//! Lambda on the counter log table's stream: folds each batch of new log entries into the totals. An error
//! fails the invocation, and the stream delivers the batch again; folding is idempotent.

use aws_lambda_events::event::dynamodb::Event;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use strata_dynamo::aggregator::Aggregator;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    strata_http::lambda::init();
    let aggregator: &'static Aggregator = Box::leak(Box::new(Aggregator::from_env().await?));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let entries = strata_counters::stream::entries(&event.payload);
        let folded = aggregator.fold(entries).await?;
        tracing::info!(folded, "folded counter log entries");
        Ok::<(), lambda_runtime::Error>(())
    }))
    .await
}
