//! From a DynamoDB stream event of the counter log table to the entries the aggregator folds, decoded with
//! `serde_dynamo` into [`Entry`].

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use strata_dynamo::aggregator::Entry;

/// What one stream event carries.
#[derive(Debug, Default)]
pub struct Decoded {
    /// New increments, to fold.
    pub entries: Vec<Entry>,
    /// Sequence numbers of new increments that do not decode (a log item without its key or value, or with
    /// a value that is not a number): never dropped, but reported as the batch's failures, so that Lambda
    /// retries from there and, once the retries are spent, sends the batch to the mapping's `OnFailure`
    /// queue (which alarms). The well-formed entries are folded meanwhile, and a re-folded entry counts
    /// nothing more.
    pub malformed: Vec<String>,
}

impl Decoded {
    /// The answer of the Lambda (`ReportBatchItemFailures`): the malformed records, if any.
    pub fn response(&self) -> DynamoDbEventResponse {
        let mut response = DynamoDbEventResponse::default();
        response.batch_item_failures = self
            .malformed
            .iter()
            .map(|sequence| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(sequence.clone());
                failure
            })
            .collect();
        response
    }
}

/// The increments a stream event carries: new log entries only. Markers (`done#…` with a `ttl`, from
/// before markers moved to their own table, or from strong mode), the deletes the aggregator itself makes
/// and TTL's (`REMOVE`) and rewrites of markers are not increments. An entry that took the place of an
/// expired marker not yet deleted is a `MODIFY`.
pub fn decode(event: &Event) -> Decoded {
    let mut decoded = Decoded::default();
    for record in &event.records {
        let written = record.event_name == "INSERT" || record.event_name == "MODIFY";
        if !written || !is_increment(record) {
            continue;
        }
        match serde_dynamo::from_item::<_, Entry>(record.change.new_image.clone()) {
            Ok(entry) => decoded.entries.push(entry),
            Err(e) => {
                let sequence = record.change.sequence_number.clone().unwrap_or_default();
                tracing::error!(
                    sequence,
                    error = %e,
                    "a counter log record does not decode; reported as a batch failure"
                );
                decoded.malformed.push(sequence);
            }
        }
    }
    decoded
}

/// The entries of an event (the malformed ones left out): what tests and the local folder fold.
pub fn entries(event: &Event) -> Vec<Entry> {
    decode(event).entries
}

/// An increment by its id (in the keys, which every view type carries) and its new image (markers have a
/// `ttl`, entries never).
fn is_increment(record: &EventRecord) -> bool {
    let id = record
        .change
        .keys
        .get("id")
        .or_else(|| record.change.new_image.get("id"));
    let has_ttl = record.change.new_image.contains_key(strata_dynamo::TTL);
    matches!(id, Some(serde_dynamo::AttributeValue::S(id)) if Entry::is_entry(id, has_ttl))
}
