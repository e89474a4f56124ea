//! The capacity a call consumed, as DynamoDB bills it (see [`Metered`]).

use super::forward::passes;
use super::request::{canonical, is_write};
use super::stats::Metered;
use super::*;

/// An item (`(table, key as JSON)`) and the WRU a call spent on it.
pub type ItemUnits = ((String, String), f64);

/// An item's size as DynamoDB counts it (DynamoDB JSON): attribute names plus values; a number about one
/// byte per two digits plus one, a map or list 3 bytes plus one per element.
pub fn item_size(item: &Value) -> usize {
    pub(super) fn value(v: &Value) -> usize {
        let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
            return 0;
        };
        match kind.as_str() {
            "S" | "B" => inner.as_str().map_or(0, str::len),
            "N" => {
                let digits = inner.as_str().map_or(0, |n| {
                    n.trim_start_matches('-')
                        .trim_start_matches('0')
                        .replace('.', "")
                        .len()
                });
                digits.div_ceil(2) + 1
            }
            "BOOL" | "NULL" => 1,
            "M" => {
                3 + inner
                    .as_object()
                    .map_or(0, |m| m.iter().map(|(k, v)| k.len() + value(v) + 1).sum())
            }
            "L" => {
                3 + inner
                    .as_array()
                    .map_or(0, |l| l.iter().map(|v| value(v) + 1).sum())
            }
            "SS" | "BS" => inner.as_array().map_or(0, |l| {
                l.iter().filter_map(Value::as_str).map(str::len).sum()
            }),
            "NS" => inner.as_array().map_or(0, |l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(|n| n.len().div_ceil(2) + 1)
                    .sum()
            }),
            _ => 0,
        }
    }
    item.as_object()
        .map_or(0, |o| o.iter().map(|(k, v)| k.len() + value(v)).sum())
}

/// Per action of a transaction, the size of its item: as stored now (`answer` `None`: before the call), or
/// after it (`Put`: the item put; `Delete`: none; `TransactGetItems`: the item returned).
pub(super) async fn action_sizes(
    shared: &Shared,
    headers: &HeaderMap,
    request: &Value,
    answer: Option<&Value>,
) -> Vec<usize> {
    let mut sizes = Vec::new();
    let actions = request["TransactItems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, action) in actions.iter().enumerate() {
        let Some((kind, inner)) = action.as_object().and_then(|a| a.iter().next()) else {
            sizes.push(0);
            continue;
        };
        let table = inner["TableName"].as_str().unwrap_or_default();
        let size = match (kind.as_str(), answer) {
            ("Get", Some(answer)) => item_size(&answer["Responses"][i]["Item"]),
            ("Put", Some(_)) => item_size(&inner["Item"]),
            ("Delete", Some(_)) => 0,
            _ => {
                let key = match inner.get("Key") {
                    Some(key) => key.clone(),
                    None => key_of(shared, headers, table, &inner["Item"]).await,
                };
                let got = upstream_call(
                    shared,
                    headers,
                    "GetItem",
                    serde_json::json!({"TableName": table, "Key": key, "ConsistentRead": true}),
                )
                .await;
                item_size(&got["Item"])
            }
        };
        sizes.push(size);
    }
    sizes
}

/// The key of `item` in `table` (its key attributes from `DescribeTable`, asked once per table).
pub(super) async fn key_of(
    shared: &Shared,
    headers: &HeaderMap,
    table: &str,
    item: &Value,
) -> Value {
    let known = shared.key_schemas.lock().unwrap().get(table).cloned();
    let names = match known {
        Some(names) => names,
        None => {
            let described = upstream_call(
                shared,
                headers,
                "DescribeTable",
                serde_json::json!({"TableName": table}),
            )
            .await;
            let names: Vec<String> = described["Table"]["KeySchema"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k["AttributeName"].as_str().map(str::to_owned))
                .collect();
            shared
                .key_schemas
                .lock()
                .unwrap()
                .insert(table.to_owned(), names.clone());
            names
        }
    };
    Value::Object(
        names
            .into_iter()
            .filter_map(|n| Some((n.clone(), item.get(&n)?.clone())))
            .collect(),
    )
}

/// A call of the meter's own, straight to DynamoDB (not counted), with the caller's credentials headers.
pub(super) async fn upstream_call(
    shared: &Shared,
    headers: &HeaderMap,
    operation: &str,
    body: Value,
) -> Value {
    let mut call = shared.client.post(format!("{}/", shared.upstream));
    for (name, value) in headers {
        if passes(name) && name.as_str() != "x-amz-target" {
            call = call.header(name, value);
        }
    }
    let answer = call
        .header("x-amz-target", format!("DynamoDB_20120810.{operation}"))
        .body(body.to_string())
        .send()
        .await;
    match answer {
        Ok(answer) => answer.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// A transaction's units per action, as DynamoDB bills it: twice the units of one item, a write by the
/// larger of its sizes before and after per started KB (at least 1), a read per started 4 KB.
pub(super) fn transaction_units(operation: &str, before: &[usize], after: &[usize]) -> Vec<f64> {
    let per = if operation == "TransactGetItems" {
        4096
    } else {
        1024
    };
    before
        .iter()
        .zip(after)
        .map(|(b, a)| 2.0 * (*b.max(a)).div_ceil(per).max(1) as f64)
        .collect()
}

/// What one call consumed (see [`Metered`]), and the WRU per item written by key. `transaction`: a
/// transaction's units per action, computed by the meter (DynamoDB Local's own figure is wrong).
pub fn metered_of(
    operation: &str,
    request: &Value,
    answer: &Value,
    succeeded: bool,
    transaction: Option<&[f64]>,
) -> (Metered, Vec<ItemUnits>) {
    let write = is_write(operation);
    // (table, key) of each item the call writes; key `None` for a `PutItem` (not known here).
    let mut targets: Vec<(String, Option<String>)> = Vec::new();
    let mut floor = 0.0;
    match operation {
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            if let Some(table) = request["TableName"].as_str() {
                targets.push((table.to_owned(), request.get("Key").map(canonical)));
            }
            floor = 1.0;
        }
        "TransactWriteItems" => {
            for action in request["TransactItems"].as_array().into_iter().flatten() {
                if let Some(inner) = action.as_object().and_then(|a| a.values().next())
                    && let Some(table) = inner["TableName"].as_str()
                {
                    targets.push((table.to_owned(), inner.get("Key").map(canonical)));
                    floor += 2.0;
                }
            }
        }
        "BatchWriteItem" => {
            for (table, writes) in request["RequestItems"].as_object().into_iter().flatten() {
                for _ in writes.as_array().into_iter().flatten() {
                    targets.push((table.clone(), None));
                    floor += 1.0;
                }
            }
        }
        _ => {}
    }
    let mut metered = Metered {
        calls: 1,
        items: targets.len() as u64,
        ..Metered::default()
    };
    let mut items = Vec::new();
    if let Some(units) = transaction {
        // The meter's own figures, one per action.
        let total: f64 = units.iter().sum();
        if write {
            metered.wru = total;
            for ((table, key), units) in targets.iter().zip(units) {
                if let Some(key) = key {
                    items.push(((table.clone(), key.clone()), *units));
                }
            }
        } else {
            metered.rru = total;
        }
        return (metered, items);
    }
    // Units per table, from DynamoDB's answer: one object, or a list (batches).
    let mut by_table: BTreeMap<String, f64> = BTreeMap::new();
    let consumed = match &answer["ConsumedCapacity"] {
        Value::Array(list) => list.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    };
    for c in &consumed {
        let units = |name: &str| c[name].as_f64();
        let total = units("CapacityUnits").unwrap_or(0.0);
        let (w, r) = match (units("WriteCapacityUnits"), units("ReadCapacityUnits")) {
            (None, None) if write => (total, 0.0),
            (None, None) => (0.0, total),
            (w, r) => (w.unwrap_or(0.0), r.unwrap_or(0.0)),
        };
        metered.wru += w;
        metered.rru += r;
        // The table's own share (indexes apart) is what its items cost.
        let table_w = c["Table"]["WriteCapacityUnits"]
            .as_f64()
            .or_else(|| c["Table"]["CapacityUnits"].as_f64().filter(|_| write))
            .unwrap_or(w);
        if let Some(table) = c["TableName"].as_str() {
            *by_table.entry(table.to_owned()).or_default() += table_w;
        }
    }
    let refused = answer["__type"].as_str().is_some_and(|t| {
        t.ends_with("ConditionalCheckFailedException")
            || t.ends_with("TransactionCanceledException")
    });
    if write && !succeeded && refused && consumed.is_empty() {
        metered.refused = 1;
        metered.wru += floor;
        let per = if operation == "TransactWriteItems" {
            2.0
        } else {
            1.0
        };
        for (table, key) in &targets {
            if let Some(key) = key {
                items.push(((table.clone(), key.clone()), per));
            }
        }
        return (metered, items);
    }
    for (table, key) in &targets {
        let on_table = targets.iter().filter(|(t, _)| t == table).count() as f64;
        if let Some(key) = key {
            let units = by_table.get(table).copied().unwrap_or(0.0) / on_table;
            items.push(((table.clone(), key.clone()), units));
        }
    }
    (metered, items)
}
