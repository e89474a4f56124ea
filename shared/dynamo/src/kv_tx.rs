//! Key/value transactions on DynamoDB.
//!
//! Everything about an open transaction lives in the transaction table, so any Lambda instance can continue
//! it. One item holds it while it is small: the header (`k = " "`: state, idle deadline, change count, and
//! two maps: `r`, every key it holds with the version it read, and `w`, its buffered writes). A write that
//! would take the header's writes past [`INLINE_MAX`] goes to an item of its own (`k = <key>`: the
//! operation and the value), and the header's entry marks it so. The key is the sort key as it is, with no
//! prefix, because DynamoDB caps sort keys at 1,024 bytes, the longest key the API accepts; the header's sort
//! key is a single space, which no key can be (keys hold no whitespace) and which sorts first. Every item
//! carries a TTL attribute, so abandoned transactions disappear on their own; the deadline is also checked
//! on every access.
//!
//! Why one item: DynamoDB bills every item a call touches, transactions twice, and a strong read of up to
//! 4 KB as one unit. A header that stays about 1 KB costs 1 WRU per write and 1 RRU per strong read, and
//! the commit reads the whole transaction in one `Query` of 1 RRU. Only the commit needs atomicity across
//! items, so it alone is a `TransactWriteItems` (and a write too large for the header, whose item and
//! header entry must agree).
//!
//! Why these writes are safe to repeat (the SDK retries an attempt whose answer was lost): a read is
//! recorded with `if_not_exists`, so the first version read stays the one validated; a write held in the
//! header sets its entry and only adds to upper bounds (`nb`, `ni`); a write decided on the header's exact
//! contents is guarded by the change count it read, so a repeat is refused and decided again on the header
//! as it now is (which holds the write); a `TransactWriteItems` carries one token for all its attempts. The
//! key count is the size of `r`, which a repeat does not change.
//!
//! The data item is read strongly consistent: an eventually consistent read may return a version already
//! replaced, and the commit would then fail with a conflict on a key that had not changed since the read.
//!
//! Calls per operation: begin 1 (`PutItem`); get 2 (strongly consistent `GetItem` of the data item, then an
//! `UpdateItem` of the header recording the version read, which returns the header to answer the
//! transaction's own write); put/delete 1 (`UpdateItem` of the header, its condition holding the limits
//! against upper bounds; refused, it returns the header and the write is decided on exact counts: an
//! `UpdateItem` guarded by the change count, or for a write past [`INLINE_MAX`] a `TransactWriteItems` of
//! header and key item), 2 for a write too large for the header by itself (`GetItem` of the header, then
//! that `TransactWriteItems`); commit 2 (`Query` of the transaction's items, then one `TransactWriteItems`: an
//! update per written key, a `ConditionCheck` per key only read, and the header's move from open to
//! committed, guarded by "still open" and the change count); rollback 1 (`UpdateItem`). Metered
//! (`infra/bench/cost`): begin, 1 read, 2 writes of 100 B and commit take 7 calls, 12 WRU and 2 RRU, one
//! after the other and with 20 clients at once (they were 9 calls, 21 WRU and 15 RRU with an item per key
//! and `TransactGetItems` reads).

use crate::attr::{Item, ItemExt, n, s};
use crate::error::{cancellation_codes, is_condition_failed, store_error};
use crate::kv::{PK, VALUE, VERSION};
use crate::send::WithinDeadline;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};
use strata_core::Error;
use strata_core::kv::tx::{
    Began, KvTransactions, MAX_TX_KEYS, TxId, TxValue, check_limits, conflict, not_found,
    write_bytes,
};
use strata_core::kv::{Key, Value};
use strata_core::time::{epoch_seconds, now_millis};

const TX: &str = "tx";
const SK: &str = "k";
const HEADER: &str = " ";
const STATE: &str = "st";
const DEADLINE_MS: &str = "exp";
const TTL: &str = crate::attr::TTL;
/// Every key the transaction holds: the version read (0: the key did not exist), or NULL for a key only
/// written. Its size is the transaction's key count.
const READS: &str = "r";
/// The buffered writes, key to `{o, z, v}` (`v`: the value of an inline put) or `{o, z, x}` (`x`: the
/// write is in the key's own item).
const WRITES: &str = "w";
const OP: &str = "o";
const SIZE: &str = "z";
const INLINE_VALUE: &str = "v";
const SPILLED: &str = "x";
/// At least the bytes written (`z` summed); exact after a write that read the item first.
const BYTES: &str = "nb";
/// At least the bytes of the writes held in the header (each charged [`inline_charge`]); exact likewise.
const INLINE_BYTES: &str = "ni";
/// The header's change count, bumped by every read or write recorded in the transaction: the commit is
/// guarded by the count it planned from, so a request that lands between its `Query` and its write fails
/// the commit's guard instead of answering `200` and being left out.
const SEQ: &str = "sq";
/// A spilled write's item: the operation, and `val` for a put.
const WRITE: &str = "w";

const OPEN: &str = "open";
const PUT: &str = "put";
const DELETE: &str = "del";

/// Writes held in the header, at most: with the reads and the header's own attributes the header stays
/// about 1 KB, so every write of it costs 1 WRU and every strong read of it 1 RRU.
const INLINE_MAX: u64 = 512;
/// Spilled write items outlive the idle deadline by this much, so a busy transaction never loses a buffered
/// write to TTL; the commit also checks that every spilled item is still there.
const KEY_ITEM_TTL_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// Attempts when another request on the same transaction (or a concurrent DynamoDB transaction on the same
/// items) got in between.
const ATTEMPTS: u32 = 5;

#[derive(Debug)]
pub struct DynamoKvTx {
    client: Client,
    data_table: String,
    tx_table: String,
    idle_timeout: Duration,
}

/// What a header's write entry counts against [`INLINE_MAX`]: its key and value, and its attribute names
/// and numbers.
fn inline_charge(size: u64) -> u64 {
    size + 16
}

/// A buffered write as the header holds it.
enum Stored {
    Put(String),
    Delete,
    /// In the key's own item.
    Spilled,
}

struct Write {
    stored: Stored,
    size: u64,
}

/// An open transaction, read from its header.
struct Open {
    seq: u64,
    reads: BTreeMap<String, Option<u64>>,
    writes: BTreeMap<String, Write>,
}

impl Open {
    /// Keys, bytes written and bytes held inline, without `key`'s write.
    fn counts_without(&self, key: &str) -> (usize, u64, u64) {
        let others = self.writes.iter().filter(|(k, _)| k.as_str() != key);
        let (bytes, inline) = others.fold((0, 0), |(b, i), (_, w)| match w.stored {
            Stored::Spilled => (b + w.size, i),
            _ => (b + w.size, i + inline_charge(w.size)),
        });
        (self.reads.len(), bytes, inline)
    }
}

fn parse_write(v: &AttributeValue) -> Option<Write> {
    let m = v.as_m().ok()?;
    let size = m.num_opt(SIZE)?;
    let stored = if m.contains_key(SPILLED) {
        Stored::Spilled
    } else if m.text_opt(OP) == Some(PUT) {
        Stored::Put(m.text_opt(INLINE_VALUE)?.to_owned())
    } else {
        Stored::Delete
    };
    Some(Write { stored, size })
}

/// The open header's contents, or `404`.
fn open_header(id: &TxId, item: Option<&Item>, now: u64) -> Result<Open, Error> {
    // A header without `r` was opened before transactions kept their keys in it: it ends as if expired.
    let Some(h) = item.filter(|h| {
        h.text_opt(STATE) == Some(OPEN)
            && h.num_opt(DEADLINE_MS).is_some_and(|d| d > now)
            && h.contains_key(READS)
    }) else {
        return Err(not_found(id.as_str()));
    };
    let reads = h
        .get(READS)
        .and_then(|r| r.as_m().ok())
        .map(|r| {
            r.iter()
                .map(|(k, v)| (k.clone(), v.as_n().ok().and_then(|n| n.parse().ok())))
                .collect()
        })
        .unwrap_or_default();
    let writes = h
        .get(WRITES)
        .and_then(|w| w.as_m().ok())
        .map(|w| {
            w.iter()
                .filter_map(|(k, v)| Some((k.clone(), parse_write(v)?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Open {
        seq: h.num_opt(SEQ).unwrap_or(0),
        reads,
        writes,
    })
}

/// The header's entry for a write (`None`: a delete).
fn write_entry(value: Option<&Value>, size: u64, spilled: bool) -> AttributeValue {
    let mut m = HashMap::from([
        (OP.to_owned(), s(if value.is_some() { PUT } else { DELETE })),
        (SIZE.to_owned(), n(size)),
    ]);
    match value {
        _ if spilled => {
            m.insert(SPILLED.to_owned(), AttributeValue::Bool(true));
        }
        Some(v) => {
            m.insert(INLINE_VALUE.to_owned(), s(v.as_str()));
        }
        None => {}
    }
    AttributeValue::M(m)
}

/// The item a refused conditional `UpdateItem` returned (`ALL_OLD`; `None`: there was none); any other
/// failure as the store's error.
fn refused_item(e: SdkError<UpdateItemError, HttpResponse>) -> Result<Option<Item>, Error> {
    match e.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(c)) => Ok(c.item.clone()),
        _ => Err(store_error("UpdateItem", e)),
    }
}

impl DynamoKvTx {
    pub fn new(
        client: Client,
        data_table: String,
        tx_table: String,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            client,
            data_table,
            tx_table,
            idle_timeout,
        }
    }

    fn tx_key(&self, id: &TxId, sk: &str) -> Item {
        HashMap::from([(TX.to_owned(), s(id.as_str())), (SK.to_owned(), s(sk))])
    }

    fn deadline(&self, now: u64) -> u64 {
        now + self.idle_timeout.as_millis() as u64
    }

    fn key_item_ttl(&self) -> u64 {
        epoch_seconds(SystemTime::now() + self.idle_timeout + KEY_ITEM_TTL_MARGIN)
    }

    /// A strongly consistent `GetItem`.
    async fn read(&self, table: &str, key: Item) -> Result<Option<Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item)
    }

    async fn header(&self, id: &TxId) -> Result<Option<Item>, Error> {
        self.read(&self.tx_table, self.tx_key(id, HEADER)).await
    }

    async fn query_all(&self, id: &TxId) -> Result<Vec<Item>, Error> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tx_table)
                .key_condition_expression("#tx = :tx")
                .expression_attribute_names("#tx", TX)
                .expression_attribute_values(":tx", s(id.as_str()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .within_deadline()
                .await
                .map_err(|e| store_error("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// A write held in the header, without reading it first: one `UpdateItem` whose condition holds the
    /// limits against the header's counts (upper bounds, see [`BYTES`]). `Ok(Err(item))`: refused, with the
    /// header as it was (`None`: no header), for [`Self::stage_counted`] to decide on exact counts.
    async fn stage_inline(
        &self,
        id: &TxId,
        key: &Key,
        value: Option<&Value>,
        size: u64,
    ) -> Result<Result<(), Option<Item>>, Error> {
        let now = now_millis();
        let deadline = self.deadline(now);
        let charge = inline_charge(size);
        let result = self
            .client
            .update_item()
            .table_name(&self.tx_table)
            .set_key(Some(self.tx_key(id, HEADER)))
            .update_expression(
                "SET #r.#k = if_not_exists(#r.#k, :null), #w.#k = :entry, #exp = :exp, #ttl = :ttl \
                 ADD #nb :z, #ni :charge, #sq :one",
            )
            .condition_expression(
                "#st = :open AND #exp > :now AND attribute_exists(#r) \
                 AND (attribute_exists(#r.#k) OR size(#r) < :max_keys) \
                 AND #nb <= :room AND #ni <= :inline_room",
            )
            .expression_attribute_names("#r", READS)
            .expression_attribute_names("#w", WRITES)
            .expression_attribute_names("#k", key.as_str())
            .expression_attribute_names("#st", STATE)
            .expression_attribute_names("#exp", DEADLINE_MS)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#nb", BYTES)
            .expression_attribute_names("#ni", INLINE_BYTES)
            .expression_attribute_names("#sq", SEQ)
            .expression_attribute_values(":null", AttributeValue::Null(true))
            .expression_attribute_values(":entry", write_entry(value, size, false))
            .expression_attribute_values(":exp", n(deadline))
            .expression_attribute_values(":ttl", n(deadline / 1000 + 1))
            .expression_attribute_values(":z", n(size))
            .expression_attribute_values(":charge", n(charge))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":open", s(OPEN))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":max_keys", n(MAX_TX_KEYS as u64))
            .expression_attribute_values(
                ":room",
                n((strata_core::kv::tx::MAX_TX_BYTES as u64).saturating_sub(size)),
            )
            .expression_attribute_values(":inline_room", n(INLINE_MAX.saturating_sub(charge)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(e) => Ok(Err(refused_item(e)?)),
        }
    }

    /// A write decided on the header's exact contents (`header`, as last read): refused past a limit, held
    /// in the header while it stays small, else in the key's own item. Guarded by the change count read.
    async fn stage_counted(
        &self,
        id: &TxId,
        key: &Key,
        value: Option<&Value>,
        size: u64,
        mut header: Option<Item>,
    ) -> Result<(), Error> {
        for attempt in 0..ATTEMPTS {
            let now = now_millis();
            let open = open_header(id, header.as_ref(), now)?;
            let known = open.reads.contains_key(key.as_str());
            let (keys, bytes, inline) = open.counts_without(key.as_str());
            let keys = keys + usize::from(!known);
            let bytes = bytes + size;
            check_limits(keys, bytes as usize)?;
            let spill = inline + inline_charge(size) > INLINE_MAX;
            let inline = if spill {
                inline
            } else {
                inline + inline_charge(size)
            };
            let deadline = self.deadline(now);
            let read = if known { "" } else { "#r.#k = :null, " };
            let mut update = Update::builder()
                .table_name(&self.tx_table)
                .set_key(Some(self.tx_key(id, HEADER)))
                .update_expression(format!(
                    "SET {read}#w.#k = :entry, #nb = :nb, #ni = :ni, #exp = :exp, #ttl = :ttl ADD #sq :one"
                ))
                .condition_expression("#st = :open AND #exp > :now AND #sq = :seen")
                .expression_attribute_names("#w", WRITES)
                .expression_attribute_names("#k", key.as_str())
                .expression_attribute_names("#st", STATE)
                .expression_attribute_names("#exp", DEADLINE_MS)
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_names("#nb", BYTES)
                .expression_attribute_names("#ni", INLINE_BYTES)
                .expression_attribute_names("#sq", SEQ)
                .expression_attribute_values(":entry", write_entry(value, size, spill))
                .expression_attribute_values(":nb", n(bytes))
                .expression_attribute_values(":ni", n(inline))
                .expression_attribute_values(":exp", n(deadline))
                .expression_attribute_values(":ttl", n(deadline / 1000 + 1))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":open", s(OPEN))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":seen", n(open.seq));
            if !known {
                update = update
                    .expression_attribute_names("#r", READS)
                    .expression_attribute_values(":null", AttributeValue::Null(true));
            }
            let update = update.build().expect("table, key and expression set");
            let written = if spill {
                self.write_spilled(id, key, value, update).await?
            } else {
                let result = self
                    .client
                    .update_item()
                    .table_name(update.table_name())
                    .set_key(Some(update.key().clone()))
                    .update_expression(update.update_expression())
                    .set_condition_expression(update.condition_expression().map(str::to_owned))
                    .set_expression_attribute_names(update.expression_attribute_names().cloned())
                    .set_expression_attribute_values(update.expression_attribute_values().cloned())
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .send()
                    .within_deadline()
                    .await;
                match result {
                    Ok(_) => None,
                    Err(e) => Some(refused_item(e)?),
                }
            };
            match written {
                None => return Ok(()),
                // Another request on this transaction got in first (or this write's own retry after
                // it applied): decide again on the header as it is now.
                Some(now_header) => {
                    tracing::debug!(
                        tx = id.as_str(),
                        attempt,
                        "transaction changed while writing"
                    );
                    header = now_header;
                }
            }
        }
        Err(Error::unavailable(
            "the transaction is busy with concurrent requests; retry",
        ))
    }

    /// A write too large for the header: the header's entry and the key's item in one `TransactWriteItems`
    /// (the header's guard covers both). `Some(header)`: the guard failed; the header as it is now.
    async fn write_spilled(
        &self,
        id: &TxId,
        key: &Key,
        value: Option<&Value>,
        header_update: Update,
    ) -> Result<Option<Option<Item>>, Error> {
        let mut item = Update::builder()
            .table_name(&self.tx_table)
            .set_key(Some(self.tx_key(id, key.as_str())))
            .expression_attribute_names("#w", WRITE)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#val", VALUE)
            .expression_attribute_values(":ttl", n(self.key_item_ttl()));
        item = match value {
            Some(v) => item
                .update_expression("SET #w = :w, #val = :val, #ttl = :ttl")
                .expression_attribute_values(":w", s(PUT))
                .expression_attribute_values(":val", s(v.as_str())),
            None => item
                .update_expression("SET #w = :w, #ttl = :ttl REMOVE #val")
                .expression_attribute_values(":w", s(DELETE)),
        };
        let item = item.build().expect("table, key and expression set");
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(header_update).build())
            .transact_items(TransactWriteItem::builder().update(item).build())
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(e) if cancellation_codes(&e).is_some() => Ok(Some(self.header(id).await?)),
            Err(e) => Err(store_error("TransactWriteItems", e)),
        }
    }

    /// One commit from a fresh plan: `Ok(None)` when the transaction changed after the plan was read.
    async fn try_commit(&self, id: &TxId, round: u32) -> Result<Option<usize>, Error> {
        let now = now_millis();
        let call = crate::history::token();
        let items = self.query_all(id).await?;
        let open = open_header(
            id,
            items.iter().find(|i| i.text_opt(SK) == Some(HEADER)),
            now,
        )?;
        let spilled: HashMap<&str, &Item> = items
            .iter()
            .filter_map(|i| Some((i.text_opt(SK).filter(|k| *k != HEADER)?, i)))
            .collect();
        // Every key, in key order, so actions (and the conflict reported) follow key order.
        let mut all: BTreeMap<&str, (Option<u64>, Option<&Write>)> = BTreeMap::new();
        for (key, version) in &open.reads {
            all.entry(key).or_default().0 = *version;
        }
        for (key, write) in &open.writes {
            all.entry(key).or_default().1 = Some(write);
        }
        let mut actions = Vec::with_capacity(all.len() + 1);
        let mut keys = Vec::with_capacity(all.len());
        let mut writes = 0;
        for (key, (read_version, write)) in all {
            let key = Key::parse(key)?;
            let data_key = HashMap::from([(PK.to_owned(), s(key.as_str()))]);
            // The guard "still at the version this transaction read" (0: the key did not exist yet).
            let mut names = HashMap::from([("#ver".to_owned(), VERSION.to_owned())]);
            let mut values = HashMap::new();
            let condition = read_version.map(|expect| {
                if expect == 0 {
                    "attribute_not_exists(#ver)"
                } else {
                    values.insert(":rv".to_owned(), n(expect));
                    "#ver = :rv"
                }
            });
            let put = match write.map(|w| &w.stored) {
                None => None,
                Some(Stored::Put(v)) => Some(Some(v.as_str())),
                Some(Stored::Delete) => Some(None),
                Some(Stored::Spilled) => {
                    // Gone only if it outlived its TTL: the transaction cannot commit what it lost.
                    let item = spilled
                        .get(key.as_str())
                        .ok_or_else(|| not_found(id.as_str()))?;
                    Some(match item.text_opt(WRITE) {
                        Some(PUT) => Some(item.text_opt(VALUE).unwrap_or_default()),
                        _ => None,
                    })
                }
            };
            let action = match put {
                Some(put) => {
                    writes += 1;
                    names.insert("#val".to_owned(), VALUE.to_owned());
                    values.insert(":one".to_owned(), n(1));
                    let expression = match put {
                        Some(v) => {
                            values.insert(":val".to_owned(), s(v));
                            "SET #val = :val ADD #ver :one"
                        }
                        None => "REMOVE #val ADD #ver :one",
                    };
                    let update = Update::builder()
                        .table_name(&self.data_table)
                        .set_key(Some(data_key))
                        .update_expression(expression)
                        .set_condition_expression(condition.map(str::to_owned))
                        .set_expression_attribute_names(Some(names))
                        .set_expression_attribute_values(Some(values))
                        .build()
                        .expect("update is complete");
                    TransactWriteItem::builder().update(update).build()
                }
                None => {
                    let Some(condition) = condition else { continue };
                    let check = ConditionCheck::builder()
                        .table_name(&self.data_table)
                        .set_key(Some(data_key))
                        .condition_expression(condition)
                        .set_expression_attribute_names(Some(names))
                        .set_expression_attribute_values(Some(values).filter(|v| !v.is_empty()))
                        .build()
                        .expect("check is complete");
                    TransactWriteItem::builder().condition_check(check).build()
                }
            };
            actions.push(action);
            keys.push(key);
        }
        let close = Update::builder()
            .table_name(&self.tx_table)
            .set_key(Some(self.tx_key(id, HEADER)))
            .update_expression("SET #st = :committed")
            .condition_expression("#st = :open AND #exp > :now AND #sq = :sq")
            .expression_attribute_names("#st", STATE)
            .expression_attribute_names("#exp", DEADLINE_MS)
            .expression_attribute_names("#sq", SEQ)
            .expression_attribute_values(":sq", n(open.seq))
            .expression_attribute_values(":committed", s("committed"))
            .expression_attribute_values(":open", s(OPEN))
            .expression_attribute_values(":now", n(now))
            .build()
            .expect("update is complete");
        actions.push(TransactWriteItem::builder().update(close).build());

        for attempt in 0..ATTEMPTS {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                // Lets the SDK's own retries of this very request (timeouts) be idempotent.
                // Fresh for every call: two commits of one transaction racing each other must not share
                // a token (DynamoDB refuses a token reused with other parameters).
                .client_request_token(format!("{call}-{}", round * ATTEMPTS + attempt))
                .send()
                .within_deadline()
                .await;
            let e = match result {
                Ok(_) => return Ok(Some(writes)),
                Err(e) => e,
            };
            let Some(codes) = cancellation_codes(&e) else {
                return Err(store_error("TransactWriteItems", e));
            };
            if let Some(index) = codes.iter().position(|c| c == "ConditionalCheckFailed") {
                if index == keys.len() {
                    // Expired, ended, or changed since the plan: only the last is worth another round.
                    let header = self.header(id).await?;
                    return open_header(id, header.as_ref(), now_millis()).map(|_| None);
                }
                self.mark_failed(id).await;
                return Err(conflict(&keys[index]));
            }
            // Only "TransactionConflict" (another transaction on the same items right now) is left: retry.
            tracing::debug!(
                tx = id.as_str(),
                ?codes,
                attempt,
                "commit cancelled by a concurrent transaction"
            );
            tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
        }
        Err(Error::unavailable(
            "the commit kept colliding with concurrent transactions; retry",
        ))
    }

    /// Ends a transaction whose commit failed validation (best effort: it is also unusable once expired).
    async fn mark_failed(&self, id: &TxId) {
        let result = self
            .client
            .update_item()
            .table_name(&self.tx_table)
            .set_key(Some(self.tx_key(id, HEADER)))
            .update_expression("SET #st = :failed")
            .condition_expression("#st = :open")
            .expression_attribute_names("#st", STATE)
            .expression_attribute_values(":failed", s("failed"))
            .expression_attribute_values(":open", s(OPEN))
            .send()
            .within_deadline()
            .await;
        if let Err(e) = result
            && !is_condition_failed(&e)
        {
            tracing::warn!(tx = id.as_str(), error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "cannot mark transaction failed");
        }
    }
}

#[async_trait]
impl KvTransactions for DynamoKvTx {
    async fn begin(&self, id: TxId) -> Result<Began, Error> {
        let deadline = self.deadline(now_millis());
        let result = self
            .client
            .put_item()
            .table_name(&self.tx_table)
            .set_item(Some(self.tx_key(&id, HEADER)))
            .item(STATE, s(OPEN))
            .item(DEADLINE_MS, n(deadline))
            .item(TTL, n(deadline / 1000 + 1))
            .item(READS, AttributeValue::M(HashMap::new()))
            .item(WRITES, AttributeValue::M(HashMap::new()))
            .item(BYTES, n(0))
            .item(INLINE_BYTES, n(0))
            .item(SEQ, n(0))
            .condition_expression("attribute_not_exists(#tx)")
            .expression_attribute_names("#tx", TX)
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => {}
            // The id is new and random (or a digest of a new random one): a header already there is this
            // very put, applied by an attempt whose answer was lost and retried by the SDK.
            Err(e) if is_condition_failed(&e) => {}
            Err(e) => return Err(store_error("PutItem", e)),
        }
        Ok(Began {
            id,
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_millis(deadline),
        })
    }

    async fn get(&self, id: &TxId, key: &Key) -> Result<Option<TxValue>, Error> {
        // The data item first, strongly consistent: its version is what the commit validates.
        let data = self
            .read(
                &self.data_table,
                HashMap::from([(PK.to_owned(), s(key.as_str()))]),
            )
            .await?;
        let version = data.as_ref().and_then(|d| d.num_opt(VERSION)).unwrap_or(0);
        let value = data
            .as_ref()
            .and_then(|d| d.text_opt(VALUE))
            .map(|v| TxValue {
                value: v.to_owned(),
                version: Some(version),
            });
        // Then one write records it: the first read of a key is the one validated, a key the transaction
        // wrote already is not validated (its entry is NULL), and the idle timer restarts. Repeating the
        // write changes nothing more, so the SDK may retry it.
        let now = now_millis();
        let deadline = self.deadline(now);
        let result = self
            .client
            .update_item()
            .table_name(&self.tx_table)
            .set_key(Some(self.tx_key(id, HEADER)))
            .update_expression(
                "SET #r.#k = if_not_exists(#r.#k, :rv), #exp = :exp, #ttl = :ttl ADD #sq :one",
            )
            .condition_expression(
                "#st = :open AND #exp > :now AND attribute_exists(#r) \
                 AND (attribute_exists(#r.#k) OR size(#r) < :max_keys)",
            )
            .expression_attribute_names("#r", READS)
            .expression_attribute_names("#k", key.as_str())
            .expression_attribute_names("#st", STATE)
            .expression_attribute_names("#exp", DEADLINE_MS)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#sq", SEQ)
            .expression_attribute_values(":rv", n(version))
            .expression_attribute_values(":exp", n(deadline))
            .expression_attribute_values(":ttl", n(deadline / 1000 + 1))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":open", s(OPEN))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":max_keys", n(MAX_TX_KEYS as u64))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .within_deadline()
            .await;
        let header = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) => {
                let old = refused_item(e)?;
                let open = open_header(id, old.as_ref(), now)?;
                let (keys, bytes, _) = open.counts_without(key.as_str());
                check_limits(keys + 1, bytes as usize)?;
                return Err(Error::unavailable(
                    "the transaction is busy with concurrent requests; retry",
                ));
            }
        };
        // The transaction's own write wins.
        let own = header
            .get(WRITES)
            .and_then(|w| w.as_m().ok())
            .and_then(|w| w.get(key.as_str()))
            .and_then(parse_write);
        match own.map(|w| w.stored) {
            None => Ok(value),
            Some(Stored::Put(value)) => Ok(Some(TxValue {
                value,
                version: None,
            })),
            Some(Stored::Delete) => Ok(None),
            Some(Stored::Spilled) => {
                let item = self
                    .read(&self.tx_table, self.tx_key(id, key.as_str()))
                    .await?
                    .ok_or_else(|| not_found(id.as_str()))?;
                Ok(match item.text_opt(WRITE) {
                    Some(PUT) => Some(TxValue {
                        value: item.text_opt(VALUE).unwrap_or_default().to_owned(),
                        version: None,
                    }),
                    _ => None,
                })
            }
        }
    }

    async fn stage(&self, id: &TxId, key: &Key, value: Option<Value>) -> Result<(), Error> {
        let size = write_bytes(key, value.as_ref()) as u64;
        let header = if inline_charge(size) <= INLINE_MAX {
            match self.stage_inline(id, key, value.as_ref(), size).await? {
                Ok(()) => return Ok(()),
                Err(header) => header,
            }
        } else {
            self.header(id).await?
        };
        self.stage_counted(id, key, value.as_ref(), size, header)
            .await
    }

    async fn commit(&self, id: &TxId) -> Result<usize, Error> {
        for round in 0..ATTEMPTS {
            match self.try_commit(id, round).await? {
                Some(writes) => return Ok(writes),
                // A read or write of this transaction landed after the plan was made: plan again.
                None => {
                    tracing::debug!(tx = id.as_str(), round, "transaction changed during commit")
                }
            }
        }
        Err(Error::unavailable(
            "the transaction kept changing while committing; retry",
        ))
    }

    async fn rollback(&self, id: &TxId) -> Result<(), Error> {
        // The rollback's token tells the SDK's retry of an attempt that applied from a second rollback.
        let token = crate::history::token();
        let result = self
            .client
            .update_item()
            .table_name(&self.tx_table)
            .set_key(Some(self.tx_key(id, HEADER)))
            .update_expression("SET #st = :rolled_back, #by = :by")
            .condition_expression("#st = :open AND #exp > :now")
            .expression_attribute_names("#st", STATE)
            .expression_attribute_names("#exp", DEADLINE_MS)
            .expression_attribute_names("#by", "by")
            .expression_attribute_values(":rolled_back", s("rolled_back"))
            .expression_attribute_values(":open", s(OPEN))
            .expression_attribute_values(":now", n(now_millis()))
            .expression_attribute_values(":by", s(&token))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => {
                let ours = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => c
                        .item
                        .as_ref()
                        .is_some_and(|item| item.text_opt("by") == Some(token.as_str())),
                    _ => false,
                };
                if ours {
                    Ok(())
                } else {
                    Err(not_found(id.as_str()))
                }
            }
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }
}
