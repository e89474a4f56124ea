//! DynamoDB Local's streams, delivered the way Lambda delivers them: each batch of stream records becomes a
//! real `DynamoDbEvent` payload (JSON, as Lambda sends it), parsed with `aws_lambda_events` and handed to
//! the same code the `counters-aggregate` Lambda runs.

use aws_lambda_events::event::dynamodb::Event;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Reads one table's stream from the start, shard by shard.
pub struct StreamReader {
    client: Client,
    arn: String,
    /// Shard id → the iterator to continue from (`None`: the shard is closed and read to its end).
    iterators: HashMap<String, Option<String>>,
    /// Shard id → the last sequence number read, to resume after an error.
    last: HashMap<String, String>,
}

impl StreamReader {
    pub async fn open(endpoint: &str, table: &str) -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
                "local", "local", None, None, "strata",
            ))
            .load()
            .await;
        let client = Client::new(&config);
        let streams = client
            .list_streams()
            .table_name(table)
            .send()
            .await
            .expect("ListStreams");
        let arn = streams.streams()[0]
            .stream_arn()
            .expect("a stream ARN")
            .to_owned();
        Self {
            client,
            arn,
            iterators: HashMap::new(),
            last: HashMap::new(),
        }
    }

    /// The records that arrived since the last call, as one Lambda event.
    pub async fn next_event(&mut self) -> Event {
        let description = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .expect("DescribeStream");
        let shards: Vec<String> = description
            .stream_description()
            .map(|d| {
                d.shards()
                    .iter()
                    .filter_map(|s| s.shard_id().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut records = Vec::new();
        for shard in shards {
            let iterator = match self.iterators.get(&shard) {
                Some(Some(it)) => it.clone(),
                Some(None) => continue, // closed shard, read to the end
                None => {
                    let request = self
                        .client
                        .get_shard_iterator()
                        .stream_arn(&self.arn)
                        .shard_id(&shard);
                    let request = match self.last.get(&shard) {
                        Some(seq) => request
                            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                            .sequence_number(seq),
                        None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
                    };
                    match request.send().await {
                        Ok(out) => out.shard_iterator().expect("an iterator").to_owned(),
                        Err(e) => {
                            eprintln!("GetShardIterator failed, retrying on the next poll: {e}");
                            continue;
                        }
                    }
                }
            };
            match self
                .client
                .get_records()
                .shard_iterator(iterator)
                .send()
                .await
            {
                Ok(out) => {
                    for record in out.records() {
                        if let Some(seq) = record.dynamodb().and_then(|d| d.sequence_number()) {
                            self.last.insert(shard.clone(), seq.to_owned());
                        }
                        records.push(record_json(record, &self.arn));
                    }
                    self.iterators
                        .insert(shard, out.next_shard_iterator().map(str::to_owned));
                }
                Err(e) => {
                    // Like Lambda's poller: start over from the last record read (iterators expire).
                    eprintln!(
                        "GetRecords failed, resuming on the next poll: {}",
                        aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e)
                    );
                    self.iterators.remove(&shard);
                }
            }
        }
        serde_json::from_value(json!({ "Records": records })).expect("a valid DynamoDbEvent")
    }
}

/// One stream record in the JSON shape Lambda delivers.
fn record_json(record: &Record, arn: &str) -> Value {
    let change = record.dynamodb().expect("a stream record");
    let image = |item: Option<&HashMap<String, AttributeValue>>| {
        Value::Object(
            item.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), attribute_json(v)))
                .collect::<Map<_, _>>(),
        )
    };
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().map(|n| n.as_str()),
        "eventVersion": record.event_version().unwrap_or("1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region().unwrap_or("us-east-1"),
        "eventSourceARN": arn,
        "dynamodb": {
            "ApproximateCreationDateTime": change.approximate_creation_date_time().map(|t| t.secs()).unwrap_or(0),
            "Keys": image(change.keys()),
            "NewImage": image(change.new_image()),
            "SequenceNumber": change.sequence_number(),
            "SizeBytes": change.size_bytes().unwrap_or(0),
            "StreamViewType": change.stream_view_type().map(|v| v.as_str()),
        },
    })
}

fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::M(m) => {
            json!({ "M": m.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect::<Map<_, _>>() })
        }
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        other => panic!("attribute type not used by strata: {other:?}"),
    }
}
