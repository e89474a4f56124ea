//! Counters on DynamoDB.
//!
//! `CounterTable` (key `key`): `total`, `room` (what is left below 2^63 − 1) and `refused` (eventual
//! increments refused when folded, see [`strata_core::counters`]). DynamoDB conditions cannot add, so the
//! room is kept as its own attribute: every write that adds takes its value out of `room` under
//! `room >= :value`, so an overflow is refused before anything is counted and never touches another
//! counter. (Items written before eventual increments stopped reserving room may also hold `pending`.)
//!
//! Strong: one `UpdateItem` (`ADD total`) per increment, which records its token in the counter's
//! [`history`](crate::history) and is never retried blindly, so a lost answer cannot count it twice; with
//! an idempotency key, one `TransactWriteItems`
//! that also puts the request's marker (`done#<key>` in the log table), so a retry counts nothing more.
//!
//! Eventual: one `TransactWriteItems` per increment that writes the log entry only (`done#<key>` or
//! `u#<random>`, only if absent; with a key, plus a check in `CounterMarkerTable` that the request was not
//! folded already): the counter's own item is neither read nor written, so a hot counter is not held to one
//! item's write rate. A keyed entry's id is the id its request's marker had in the log table before markers
//! moved to their own table (entries logged before that are `r#<key>`): a marker still there, or one strong
//! mode wrote, fails the entry's `attribute_not_exists` as an entry logged already does, so it is honoured
//! without another action (see [`crate::aggregator`]).
//! The log's partition key is the entry id, a request key or a random id, so one counter's entries spread
//! over all of the log table's partitions. A transaction even for one put, because its
//! `ClientRequestToken` makes the SDK's retries apply it once: a plain put retried after its entry was
//! folded and deleted would log it again. The log table's stream feeds [`crate::aggregator`], which folds
//! batches into totals, one write per counter per batch.

use crate::attr::{Item, ItemExt, n, s};
use crate::error::store_error;
use crate::history;
use crate::send::WithinDeadline;
use crate::send::{Sent, no_retries, unrepeatable};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strata_core::Error;
use strata_core::counters::{
    CounterKey, Counters, Incremented, MAX_TOTAL, Mode, Reading, overflow,
};
use strata_core::retention::{holds_until, ttl_seconds};
use strata_core::time::now_millis;
use tokio::sync::Notify;

pub(crate) const KEY: &str = "key";
pub(crate) const TOTAL: &str = "total";
pub(crate) const ROOM: &str = "room";
pub(crate) const REFUSED: &str = "refused";
/// Log table attributes.
pub(crate) const ID: &str = "id";
pub(crate) const VALUE: &str = "value";
/// When the entry was accepted (milliseconds since the epoch): the order of folding, and the age the
/// re-scan goes by.
pub(crate) const AT: &str = "at";
pub(crate) const TTL: &str = crate::attr::TTL;
/// A request's marker (`done#<key>`) counts only until its `ttl`: past it the key is free and the request
/// counts again, whether DynamoDB has deleted the marker yet or not (it deletes lazily). Log entries have
/// no `ttl`: for them it is `attribute_not_exists(#id)`.
pub(crate) const MARKER_ABSENT: &str = "attribute_not_exists(#id) OR #ttl < :now";

#[derive(Debug)]
pub struct DynamoCounters {
    client: Client,
    table: String,
    log_table: String,
    /// `CounterMarkerTable`: the markers of requests eventual mode has folded.
    marker_table: String,
    mode: Mode,
    /// Notified when an entry is logged (the local fold loop's wake-up), if any.
    logged: Option<Arc<Notify>>,
    /// How long a counted request's marker is kept.
    retention: Duration,
}

pub(crate) fn marker_id(request_id: &str) -> String {
    format!("done#{request_id}")
}

/// The `ttl` of a marker written now: the retention and the clock-skew margin (see
/// [`strata_core::retention`]).
pub(crate) fn marker_ttl(retention: Duration) -> u64 {
    ttl_seconds(holds_until(SystemTime::now(), retention))
}

/// `:now` for [`MARKER_ABSENT`]: whole seconds, rounded down, as the `ttl` values it is compared with.
pub(crate) fn now_seconds() -> AttributeValue {
    n(strata_core::time::epoch_seconds(SystemTime::now()))
}

pub(crate) fn room_of(item: Option<&Item>) -> u64 {
    item.and_then(|i| i.num_opt(ROOM)).unwrap_or(MAX_TOTAL)
}

impl DynamoCounters {
    pub fn new(
        client: Client,
        table: String,
        log_table: String,
        marker_table: String,
        mode: Mode,
        retention: Duration,
    ) -> Self {
        Self {
            client,
            table,
            log_table,
            marker_table,
            mode,
            logged: None,
            retention,
        }
    }

    /// Notifies `logged` after each entry it logs.
    pub fn waking(mut self, logged: Arc<Notify>) -> Self {
        self.logged = Some(logged);
        self
    }

    /// The update that adds `value` to a counter's total under its room.
    fn reserve(&self, key: &CounterKey, value: u64) -> Update {
        Update::builder()
            .table_name(&self.table)
            .key(KEY, s(key.as_str()))
            .update_expression("ADD #total :v SET #room = if_not_exists(#room, :max) - :v")
            .condition_expression("attribute_not_exists(#room) OR #room >= :v")
            .expression_attribute_names("#total", TOTAL)
            .expression_attribute_names("#room", ROOM)
            .expression_attribute_values(":v", n(value))
            .expression_attribute_values(":max", n(MAX_TOTAL))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("update is complete")
    }

    /// A strong increment without an idempotency key: one `UpdateItem` that adds under the room guard and
    /// records its token in the counter's [`history`], never retried blindly (see [`crate::send`]): after a
    /// lost answer, one read tells whether it was counted, or the answer is "outcome unknown".
    async fn add_once(&self, key: &CounterKey, value: u64) -> Result<Incremented, Error> {
        let token = history::token();
        let expression = format!(
            "ADD #total :v SET #room = if_not_exists(#room, :max) - :v, {}",
            history::push("if_not_exists(#total, :hzero) + :v")
        );
        let mut names = history::names();
        names.insert("#total".to_owned(), TOTAL.to_owned());
        names.insert("#room".to_owned(), ROOM.to_owned());
        let mut values = history::values(&token);
        values.insert(":v".to_owned(), n(value));
        values.insert(":max".to_owned(), n(MAX_TOTAL));
        let sent = unrepeatable(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .key(KEY, s(key.as_str()))
                .update_expression(&expression)
                .condition_expression("attribute_not_exists(#room) OR #room >= :v")
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .return_values(ReturnValue::UpdatedNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .customize()
                .config_override(no_retries())
                .send()
        })
        .await;
        match sent {
            Sent::Answered(Ok(out)) => {
                let total = out.attributes.as_ref().and_then(|a| a.num_opt(TOTAL));
                Ok(Incremented::Total(total.unwrap_or(value)))
            }
            Sent::Answered(Err(e)) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    Err(overflow(key, room_of(c.item.as_ref()), value))
                }
                _ => Err(store_error("UpdateItem", e)),
            },
            Sent::Unknown(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "UpdateItem may have applied");
                let total =
                    history::read_back(&self.client, &self.table, (KEY, key.as_str()), &token)
                        .await?;
                Ok(Incremented::Total(total))
            }
        }
    }

    async fn reading(&self, key: &CounterKey) -> Result<Option<Reading>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, s(key.as_str()))
            .consistent_read(true)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item.map(|item| Reading {
            total: item.num_opt(TOTAL).unwrap_or(0),
            refused: item.num_opt(REFUSED).unwrap_or(0),
        }))
    }

    async fn total(&self, key: &CounterKey) -> Result<Option<u64>, Error> {
        Ok(self.reading(key).await?.map(|r| r.total))
    }

    /// Runs a transaction; with `reservation` (the index of the action that adds under the room), a failed
    /// condition there is an overflow. `Ok(false)`: another action's condition failed (the request was
    /// already counted or logged).
    async fn transact(
        &self,
        key: &CounterKey,
        value: u64,
        actions: Vec<TransactWriteItem>,
        reservation: Option<usize>,
    ) -> Result<bool, Error> {
        let count = actions.len();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .within_deadline()
            .await;
        let e = match result {
            Ok(_) => return Ok(true),
            Err(e) => e,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error()
        {
            let reasons = c.cancellation_reasons();
            let failed =
                |i: usize| reasons.get(i).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
            if let Some(r) = reservation
                && failed(r)
            {
                return Err(overflow(key, room_of(reasons[r].item()), value));
            }
            if (0..count).any(failed) {
                return Ok(false);
            }
            return Err(Error::unavailable("the counter is busy; retry"));
        }
        Err(store_error("TransactWriteItems", e))
    }
}

#[async_trait]
impl Counters for DynamoCounters {
    fn mode(&self) -> Mode {
        self.mode
    }

    async fn increment(
        &self,
        key: &CounterKey,
        value: u64,
        request_id: Option<&str>,
    ) -> Result<Incremented, Error> {
        if value > MAX_TOTAL {
            // No counter can take it; the room guard cannot say so for a counter that does not exist yet.
            let room = MAX_TOTAL - self.total(key).await?.unwrap_or(0);
            return Err(overflow(key, room, value));
        }
        match (self.mode, request_id) {
            (Mode::Strong, None) => self.add_once(key, value).await,
            (Mode::Strong, Some(request)) => {
                let marker = Put::builder()
                    .table_name(&self.log_table)
                    .item(ID, s(&marker_id(request)))
                    .item(TTL, n(marker_ttl(self.retention)))
                    .condition_expression(MARKER_ABSENT)
                    .expression_attribute_names("#id", ID)
                    .expression_attribute_names("#ttl", TTL)
                    .expression_attribute_values(":now", now_seconds())
                    .build()
                    .expect("put is complete");
                let actions = vec![
                    TransactWriteItem::builder().put(marker).build(),
                    TransactWriteItem::builder()
                        .update(self.reserve(key, value))
                        .build(),
                ];
                self.transact(key, value, actions, Some(1)).await?;
                Ok(Incremented::Total(self.total(key).await?.unwrap_or(0)))
            }
            (Mode::Eventual, request) => {
                let id = match request {
                    Some(r) => marker_id(r),
                    None => format!("u#{}", strata_core::kv::tx::TxId::generate().as_str()),
                };
                // Absent, or an expired marker left in the log (its key is free again).
                let entry = Put::builder()
                    .table_name(&self.log_table)
                    .item(ID, s(&id))
                    .item(KEY, s(key.as_str()))
                    .item(VALUE, n(value))
                    .item(AT, n(now_millis()))
                    .condition_expression(MARKER_ABSENT)
                    .expression_attribute_names("#id", ID)
                    .expression_attribute_names("#ttl", TTL)
                    .expression_attribute_values(":now", now_seconds())
                    .build()
                    .expect("put is complete");
                let mut actions = vec![TransactWriteItem::builder().put(entry).build()];
                if let Some(r) = request {
                    let folded = ConditionCheck::builder()
                        .table_name(&self.marker_table)
                        .key(ID, s(&marker_id(r)))
                        .condition_expression(MARKER_ABSENT)
                        .expression_attribute_names("#id", ID)
                        .expression_attribute_names("#ttl", TTL)
                        .expression_attribute_values(":now", now_seconds())
                        .build()
                        .expect("check is complete");
                    actions.push(TransactWriteItem::builder().condition_check(folded).build());
                }
                // Logged now, or by an earlier attempt of this request, or counted already: accepted.
                if self.transact(key, value, actions, None).await?
                    && let Some(logged) = &self.logged
                {
                    logged.notify_one();
                }
                Ok(Incremented::Accepted)
            }
        }
    }

    async fn read(&self, key: &CounterKey) -> Result<Option<Reading>, Error> {
        self.reading(key).await
    }
}
