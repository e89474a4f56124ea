//! What a request names: its operation, its tables, the items it writes.

use super::config::WRITE_OPERATIONS;
use super::*;

pub(super) fn contains(body: &[u8], text: &str) -> bool {
    text.is_empty() || body.windows(text.len()).any(|w| w == text.as_bytes())
}

/// `DynamoDB_20120810.PutItem` → `PutItem`.
pub fn operation_of(headers: &HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
        .unwrap_or_default()
}

/// The tables a request body names, each once.
pub fn tables_of(body: &[u8]) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return tables;
    };
    if let Some(t) = v["TableName"].as_str() {
        tables.insert(t.to_owned());
    }
    for item in v["TransactItems"].as_array().into_iter().flatten() {
        if let Some(action) = item.as_object() {
            for inner in action.values() {
                if let Some(t) = inner["TableName"].as_str() {
                    tables.insert(t.to_owned());
                }
            }
        }
    }
    if let Some(items) = v["RequestItems"].as_object() {
        tables.extend(items.keys().cloned());
    }
    tables
}

/// The items a write request addresses by key (`UpdateItem`, `DeleteItem`, and the `Update` and `Delete`
/// actions of `TransactWriteItems`), as `(table, key as JSON)`, and the write units it costs.
pub fn writes_of(operation: &str, body: &[u8]) -> (Vec<(String, String)>, u64) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (Vec::new(), 0);
    };
    let keyed = |request: &Value| {
        Some((
            request["TableName"].as_str()?.to_owned(),
            request.get("Key")?.to_string(),
        ))
    };
    match operation {
        "UpdateItem" | "DeleteItem" => (keyed(&v).into_iter().collect(), 1),
        "PutItem" => (Vec::new(), 1),
        "BatchWriteItem" => {
            let units = v["RequestItems"]
                .as_object()
                .map(|tables| {
                    tables
                        .values()
                        .filter_map(Value::as_array)
                        .map(Vec::len)
                        .sum()
                })
                .unwrap_or(0);
            (Vec::new(), units as u64)
        }
        "TransactWriteItems" => {
            let actions = v["TransactItems"].as_array().cloned().unwrap_or_default();
            let items = actions
                .iter()
                .filter_map(|a| keyed(a.get("Update").or_else(|| a.get("Delete"))?))
                .collect();
            (items, 2 * actions.len() as u64)
        }
        _ => (Vec::new(), 0),
    }
}

/// Write operations, whose `CapacityUnits` are write units.
pub(super) fn is_write(operation: &str) -> bool {
    WRITE_OPERATIONS.contains(&operation)
}

/// A key as JSON with its attributes in name order, whatever order the request gave them in.
pub fn canonical(key: &Value) -> String {
    match key.as_object() {
        Some(fields) => {
            let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
            serde_json::to_string(&sorted).unwrap_or_default()
        }
        None => key.to_string(),
    }
}
