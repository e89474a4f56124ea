//! From a DynamoDB stream event of the counter log table to the entries the aggregator folds.

use aws_lambda_events::event::dynamodb::Event;
use serde_json::Value;
use strata_dynamo::aggregator::Entry;

/// The increments a stream event carries: new log entries only. Markers (`done#…`) and the deletes the
/// aggregator itself makes (`REMOVE`) are not increments.
pub fn entries(event: &Event) -> Vec<Entry> {
    event
        .records
        .iter()
        .filter(|record| record.event_name == "INSERT")
        .filter_map(|record| {
            let image = serde_json::to_value(&record.change.new_image).ok()?;
            let attribute = |name: &str, kind: &str| {
                image
                    .get(name)?
                    .get(kind)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let id = attribute("id", "S")?;
            if !(id.starts_with("r#") || id.starts_with("u#")) {
                return None;
            }
            Some(Entry {
                id,
                key: attribute("key", "S")?,
                value: attribute("value", "N")?.parse().ok()?,
            })
        })
        .collect()
}
