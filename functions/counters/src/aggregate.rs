//! The `counters-aggregate` Lambda's one handler, for both of its triggers: a batch from the counter log's
//! stream (folded, malformed records reported as batch failures) and the scheduled re-scan (an EventBridge
//! event: every entry older than [`RESCAN_AGE`] is folded, whatever happened to its stream record).

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::event::dynamodb::Event;
use serde_json::Value;
use strata_core::Error;
use strata_dynamo::aggregator::{Aggregator, RESCAN_AGE};

/// What invoked the function.
#[derive(Debug)]
pub enum Invocation {
    Stream(Event),
    Schedule(Box<CloudWatchEvent>),
}

impl Invocation {
    /// Tells the two payloads apart by their shape: a stream batch has `Records`, an EventBridge event a
    /// `detail-type`. Anything else is refused (the invocation fails, and shows in the error alarm).
    pub fn parse(payload: Value) -> Result<Self, Error> {
        let malformed = |e: serde_json::Error| {
            Error::internal(format!("the aggregator's payload does not decode: {e}"))
        };
        if payload.get("Records").is_some() {
            return serde_json::from_value(payload)
                .map(Self::Stream)
                .map_err(malformed);
        }
        if payload.get("detail-type").is_some() {
            return serde_json::from_value(payload)
                .map(|e| Self::Schedule(Box::new(e)))
                .map_err(malformed);
        }
        Err(Error::internal(
            "the aggregator is invoked by the counter log's stream or its schedule only",
        ))
    }
}

/// Handles one invocation; the answer is the stream's partial batch response (empty for the schedule).
pub async fn handle(aggregator: &Aggregator, payload: Value) -> Result<Value, Error> {
    match Invocation::parse(payload)? {
        Invocation::Stream(event) => {
            let decoded = crate::stream::decode(&event);
            let folded = aggregator.fold(decoded.entries.clone()).await?;
            tracing::info!(
                folded,
                malformed = decoded.malformed.len(),
                "folded counter log entries"
            );
            serde_json::to_value(decoded.response())
                .map_err(|e| Error::internal(format!("the batch response: {e}")))
        }
        Invocation::Schedule(_) => {
            let found = aggregator.rescan(RESCAN_AGE).await?;
            tracing::info!(
                folded = found.folded,
                malformed = found.malformed,
                "re-scanned the counter log"
            );
            Ok(Value::Object(Default::default()))
        }
    }
}
