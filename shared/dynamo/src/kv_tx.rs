//! Key/value transactions on DynamoDB.
//!
//! Everything about an open transaction lives in the transaction table, so any Lambda instance can continue
//! it: a header item (`k = " "`: state, idle deadline, key and byte counts) and one item per key the
//! transaction touched (`k = <key>`: the version read, the buffered write). The key is the sort key as it is,
//! with no prefix, because DynamoDB caps sort keys at 1,024 bytes, the longest key the API accepts; the
//! header's sort key is a single space, which no key can be (keys hold no whitespace) and which sorts first. Every item carries a TTL
//! attribute, so abandoned transactions disappear on their own; the deadline is also checked on every access.
//!
//! Calls per operation: begin 1 (`PutItem`); get 2 (`TransactGetItems` of header, key item and data item,
//! then one write recording the read); put/delete 2 (`TransactGetItems`, then `TransactWriteItems` of header
//! and key item, guarded by the counts it read); commit 2 (`Query` of the transaction's items, then one
//! `TransactWriteItems`: an update per written key, a `ConditionCheck` per key only read, and the header's
//! move from open to committed, guarded by "still open"); rollback 1 (`UpdateItem`).

use crate::attr::{n, now_ms, s};
use crate::error::{cancellation_codes, is_condition_failed, store_error};
use crate::kv::{PK, VALUE, VERSION};
use crate::send::WithinDeadline;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Get, ReturnValuesOnConditionCheckFailure, TransactGetItem,
    TransactWriteItem, Update,
};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use strata_core::Error;
use strata_core::kv::tx::{
    Began, KvTransactions, TxId, TxValue, check_limits, conflict, not_found, write_bytes,
};
use strata_core::kv::{Key, Value};
use strata_core::time::epoch_seconds;

type Item = HashMap<String, AttributeValue>;

const TX: &str = "tx";
const SK: &str = "k";
const HEADER: &str = " ";
const STATE: &str = "st";
const DEADLINE_MS: &str = "exp";
const TTL: &str = crate::attr::TTL;
const KEYS: &str = "nk";
const BYTES: &str = "nb";
const READ_VERSION: &str = "rv";
const WRITE: &str = "w";
const SIZE: &str = "sz";
/// The header's change count, bumped by every read or write recorded in the transaction: the commit is
/// guarded by the count it planned from, so a request that lands between its `Query` and its write fails
/// the commit's guard instead of answering `200` and being left out.
const SEQ: &str = "sq";

const OPEN: &str = "open";
const PUT: &str = "put";
const DELETE: &str = "del";

/// Key items outlive the idle deadline by this much, so a busy transaction never loses a buffered write to
/// TTL; the commit also checks that every key item is still there.
const KEY_ITEM_TTL_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// Attempts when another request on the same transaction (or a concurrent DynamoDB transaction on the same
/// items) got in between.
const ATTEMPTS: u32 = 5;

pub struct DynamoKvTx {
    client: Client,
    data_table: String,
    tx_table: String,
    idle_timeout: Duration,
}

fn num(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

/// The open header's counts, or `404`.
struct Header {
    keys: u64,
    bytes: u64,
    seq: u64,
}

fn open_header(id: &TxId, item: Option<&Item>, now: u64) -> Result<Header, Error> {
    match item {
        Some(h) if text(h, STATE) == Some(OPEN) && num(h, DEADLINE_MS).is_some_and(|d| d > now) => {
            Ok(Header {
                keys: num(h, KEYS).unwrap_or(0),
                bytes: num(h, BYTES).unwrap_or(0),
                seq: num(h, SEQ).unwrap_or(0),
            })
        }
        _ => Err(not_found(id.as_str())),
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

    fn tx_key(&self, id: &TxId, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(TX.to_owned(), s(id.as_str())), (SK.to_owned(), s(sk))])
    }

    fn deadline(&self, now: u64) -> u64 {
        now + self.idle_timeout.as_millis() as u64
    }

    fn key_item_ttl(&self) -> u64 {
        epoch_seconds(SystemTime::now() + self.idle_timeout + KEY_ITEM_TTL_MARGIN)
    }

    /// Reads items atomically (a consistent snapshot): `(table, key)` pairs, results in the same order.
    async fn snapshot(&self, gets: Vec<(&str, Item)>) -> Result<Vec<Option<Item>>, Error> {
        let items = gets
            .into_iter()
            .map(|(table, key)| {
                let get = Get::builder()
                    .table_name(table)
                    .set_key(Some(key))
                    .build()
                    .expect("table and key set");
                TransactGetItem::builder().get(get).build()
            })
            .collect();
        let out = self
            .client
            .transact_get_items()
            .set_transact_items(Some(items))
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("TransactGetItems", e))?;
        Ok(out
            .responses
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.item)
            .collect())
    }

    /// The update that restarts the idle timer of an open header, guarded by "open and not expired" and,
    /// when given, by the counts the caller read (so two requests on one transaction cannot both pass).
    fn touch_header(&self, id: &TxId, now: u64, counts: Option<(&Header, u64, u64)>) -> Update {
        let deadline = self.deadline(now);
        let mut update = Update::builder()
            .table_name(&self.tx_table)
            .set_key(Some(self.tx_key(id, HEADER)))
            .expression_attribute_names("#st", STATE)
            .expression_attribute_names("#exp", DEADLINE_MS)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":open", s(OPEN))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(deadline))
            .expression_attribute_values(":ttl", n(deadline / 1000 + 1));
        match counts {
            None => {
                update = update
                    .update_expression("SET #exp = :exp, #ttl = :ttl")
                    .condition_expression("#st = :open AND #exp > :now");
            }
            Some((seen, keys, bytes)) => {
                update = update
                    .update_expression(
                        "SET #exp = :exp, #ttl = :ttl, #nk = :nk, #nb = :nb ADD #sq :one",
                    )
                    .expression_attribute_names("#sq", SEQ)
                    .expression_attribute_values(":one", n(1))
                    .condition_expression(
                        "#st = :open AND #exp > :now AND #nk = :seen_nk AND #nb = :seen_nb",
                    )
                    .expression_attribute_names("#nk", KEYS)
                    .expression_attribute_names("#nb", BYTES)
                    .expression_attribute_values(":nk", n(keys))
                    .expression_attribute_values(":nb", n(bytes))
                    .expression_attribute_values(":seen_nk", n(seen.keys))
                    .expression_attribute_values(":seen_nb", n(seen.bytes));
            }
        }
        update.build().expect("table, key and expression set")
    }

    /// Writes the updates as one transaction (the header's first). `Ok(false)`: the header's guard failed
    /// (expired, finished, or another request on this transaction got in first).
    async fn write_all(&self, updates: Vec<Update>) -> Result<bool, Error> {
        let items = updates
            .into_iter()
            .map(|u| TransactWriteItem::builder().update(u).build())
            .collect();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if cancellation_codes(&e).is_some() => Ok(false),
            Err(e) => Err(store_error("TransactWriteItems", e)),
        }
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

    /// One commit from a fresh plan: `Ok(None)` when the transaction changed after the plan was read.
    async fn try_commit(&self, id: &TxId, round: u32) -> Result<Option<usize>, Error> {
        let now = now_ms();
        let call = crate::history::token();
        let items = self.query_all(id).await?;
        let header = open_header(id, items.iter().find(|i| text(i, SK) == Some(HEADER)), now)?;
        // Query returns items in sort-key order, so actions (and the conflict reported) follow key order.
        let key_items: Vec<&Item> = items
            .iter()
            .filter(|i| text(i, SK).is_some_and(|k| k != HEADER))
            .collect();
        if key_items.len() as u64 != header.keys {
            // Part of the transaction expired away: it cannot commit what it no longer has.
            return Err(not_found(id.as_str()));
        }
        let mut actions = Vec::with_capacity(key_items.len() + 1);
        let mut keys = Vec::with_capacity(key_items.len());
        let mut writes = 0;
        for item in key_items {
            let key = Key::parse(text(item, SK).unwrap_or_default())?;
            let data_key = HashMap::from([(PK.to_owned(), s(key.as_str()))]);
            // The guard "still at the version this transaction read" (0: the key did not exist yet).
            let mut names = HashMap::from([("#ver".to_owned(), VERSION.to_owned())]);
            let mut values = HashMap::new();
            let condition = num(item, READ_VERSION).map(|expect| {
                if expect == 0 {
                    "attribute_not_exists(#ver)"
                } else {
                    values.insert(":rv".to_owned(), n(expect));
                    "#ver = :rv"
                }
            });
            let action = match text(item, WRITE) {
                Some(write) => {
                    writes += 1;
                    names.insert("#val".to_owned(), VALUE.to_owned());
                    values.insert(":one".to_owned(), n(1));
                    let expression = if write == PUT {
                        values.insert(":val".to_owned(), s(text(item, VALUE).unwrap_or_default()));
                        "SET #val = :val ADD #ver :one"
                    } else {
                        "REMOVE #val ADD #ver :one"
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
            .expression_attribute_values(":sq", n(header.seq))
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
                    let header = self
                        .snapshot(vec![(&self.tx_table, self.tx_key(id, HEADER))])
                        .await?
                        .into_iter()
                        .next()
                        .flatten();
                    return open_header(id, header.as_ref(), now_ms()).map(|_| None);
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
        let deadline = self.deadline(now_ms());
        let result = self
            .client
            .put_item()
            .table_name(&self.tx_table)
            .set_item(Some(self.tx_key(&id, HEADER)))
            .item(STATE, s(OPEN))
            .item(DEADLINE_MS, n(deadline))
            .item(TTL, n(deadline / 1000 + 1))
            .item(KEYS, n(0))
            .item(BYTES, n(0))
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
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let data_key = HashMap::from([(PK.to_owned(), s(key.as_str()))]);
            let mut got = self
                .snapshot(vec![
                    (&self.tx_table, self.tx_key(id, HEADER)),
                    (&self.tx_table, self.tx_key(id, key.as_str())),
                    (&self.data_table, data_key),
                ])
                .await?
                .into_iter();
            let (header, key_item, data) = (
                got.next().flatten(),
                got.next().flatten(),
                got.next().flatten(),
            );
            let header = open_header(id, header.as_ref(), now)?;

            // The transaction's own write wins; reading it records nothing.
            if let Some(item) = key_item.as_ref().filter(|i| text(i, WRITE).is_some()) {
                let own = match text(item, WRITE) {
                    Some(PUT) => Some(TxValue {
                        value: text(item, VALUE).unwrap_or_default().to_owned(),
                        version: None,
                    }),
                    _ => None,
                };
                return if self
                    .write_all(vec![self.touch_header(id, now, None)])
                    .await?
                {
                    Ok(own)
                } else {
                    Err(not_found(id.as_str()))
                };
            }

            let version = data.as_ref().and_then(|d| num(d, VERSION)).unwrap_or(0);
            let value = data.as_ref().and_then(|d| text(d, VALUE)).map(|v| TxValue {
                value: v.to_owned(),
                version: Some(version),
            });
            let new_key = key_item.is_none();
            let keys = header.keys + u64::from(new_key);
            check_limits(keys as usize, header.bytes as usize)?;
            let record = Update::builder()
                .table_name(&self.tx_table)
                .set_key(Some(self.tx_key(id, key.as_str())))
                .update_expression("SET #rv = if_not_exists(#rv, :rv), #ttl = :ttl")
                .expression_attribute_names("#rv", READ_VERSION)
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_values(":rv", n(version))
                .expression_attribute_values(":ttl", n(self.key_item_ttl()))
                .build()
                .expect("table, key and expression set");
            let touch = self.touch_header(id, now, Some((&header, keys, header.bytes)));
            if self.write_all(vec![touch, record]).await? {
                return Ok(value);
            }
        }
        Err(Error::unavailable(
            "the transaction is busy with concurrent requests; retry",
        ))
    }

    async fn stage(&self, id: &TxId, key: &Key, value: Option<Value>) -> Result<(), Error> {
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let mut got = self
                .snapshot(vec![
                    (&self.tx_table, self.tx_key(id, HEADER)),
                    (&self.tx_table, self.tx_key(id, key.as_str())),
                ])
                .await?
                .into_iter();
            let (header, key_item) = (got.next().flatten(), got.next().flatten());
            let header = open_header(id, header.as_ref(), now)?;
            let old_size = key_item
                .as_ref()
                .filter(|i| text(i, WRITE).is_some())
                .and_then(|i| num(i, SIZE))
                .unwrap_or(0);
            let size = write_bytes(key, value.as_ref()) as u64;
            let keys = header.keys + u64::from(key_item.is_none());
            let bytes = header.bytes - old_size.min(header.bytes) + size;
            check_limits(keys as usize, bytes as usize)?;
            let mut record = Update::builder()
                .table_name(&self.tx_table)
                .set_key(Some(self.tx_key(id, key.as_str())))
                .expression_attribute_names("#w", WRITE)
                .expression_attribute_names("#sz", SIZE)
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_names("#val", VALUE)
                .expression_attribute_values(":sz", n(size))
                .expression_attribute_values(":ttl", n(self.key_item_ttl()));
            record = match &value {
                Some(v) => record
                    .update_expression("SET #w = :w, #val = :val, #sz = :sz, #ttl = :ttl")
                    .expression_attribute_values(":w", s(PUT))
                    .expression_attribute_values(":val", s(v.as_str())),
                None => record
                    .update_expression("SET #w = :w, #sz = :sz, #ttl = :ttl REMOVE #val")
                    .expression_attribute_values(":w", s(DELETE)),
            };
            let record = record.build().expect("table, key and expression set");
            let touch = self.touch_header(id, now, Some((&header, keys, bytes)));
            if self.write_all(vec![touch, record]).await? {
                return Ok(());
            }
        }
        Err(Error::unavailable(
            "the transaction is busy with concurrent requests; retry",
        ))
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
            .expression_attribute_values(":now", n(now_ms()))
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
                        .is_some_and(|item| text(item, "by") == Some(token.as_str())),
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
