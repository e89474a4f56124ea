//! Counters on DynamoDB.
//!
//! `CounterTable` (key `key`): `total`, `room` (what is left below 2^63 − 1) and `refused` (eventual
//! increments refused when folded, see [`strata_core::counters`]). DynamoDB conditions cannot add, so the
//! room is kept as its own attribute: every write that adds takes its value out of `room` under
//! `room >= :value`, so an overflow is refused before anything is counted and never touches another
//! counter. (Items written before eventual increments stopped reserving room may also hold `pending`.)
//!
//! Strong: one `UpdateItem` (`ADD total`) per increment, which records its token in the counter's
//! [`history`](crate::history) and is never retried blindly, so a lost answer cannot count it twice. With
//! an idempotency key, one `UpdateItem` too, that also sets the request's token (`t` and 22 base64url
//! characters of its key's SHA-256; the value: when, in ms) only if absent: a retry (the SDK's, or the
//! client's after a crash or a `5xx`) fails that condition, counts nothing and answers the total the item
//! holds. The token stays until the HTTP layer has recorded the answer ([`Counters::settled`]); its
//! removal then rides on this process's next write of the counter, or goes alone after
//! [`REMOVAL_DELAY`] (on Lambda, whose instance may be frozen or reaped, at once). The token of a request
//! that died is removed by a later write that sees it past the retention. Keyed increments of an older
//! version left a marker (`done#<key>`) in the log table instead, and eventual mode leaves one in the
//! marker table: a counter that predates tokens, or that the eventual fold counted a keyed request into
//! less than a retention ago, checks both (see [`SINCE`]).
//!
//! Eventual: one `TransactWriteItems` per increment that writes the log entry only (`done#<key>` or
//! `u#<random>`, only if absent): the counter's own item is neither read nor written, so a hot counter is
//! not held to one item's write rate. With a key the log keeps the key itself ([`Counters::keeps_keys`]):
//! the entry, then the fold's marker, which holds the counter and value it counted, are the key's record,
//! and the HTTP layer writes none (it only looks for one an earlier request wrote, e.g. in strong mode).
//! A keyed entry's id is the id its request's marker had in the log table before markers moved to their
//! own table (entries logged before that are `r#<key>`): a marker still there fails the entry's
//! `attribute_not_exists` as an entry logged already does, so it is honoured without another action. A
//! request logged again after its fold, or counted by strong mode first (its token is in the counter), is
//! consumed by the fold without being counted (see [`crate::aggregator`]).
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
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use strata_core::Error;
use strata_core::counters::{
    CounterKey, Counters, Incremented, MAX_TOTAL, Mode, Reading, overflow,
};
use strata_core::retention::{CLOCK_SKEW_MARGIN, holds_until, ttl_seconds};
use strata_core::time::now_millis;
use tokio::sync::Notify;

mod tokens;

use tokens::{Cleanup, Queue, Removal, carried, keep_unless, mismatched};
pub(crate) use tokens::{token_attr, token_held};

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
/// When the counter's keyed increments began to keep tokens, negated (`-ms` since the epoch; `-1` for a
/// counter created by a version that keeps them), so that it is never taken for the copy of `room` an
/// unkeyed increment leaves on a counter without it (DynamoDB can tell "the item is new" only as
/// `if_not_exists(room, …)`). Until one retention (and the clock-skew margin, and [`OLD_VERSION_DRAIN`])
/// has passed since, or if the counter has no such time, a keyed increment looks for the request's marker
/// (`done#<key>`) that an older version, the eventual mode's fold or an import may have left, and counts
/// nothing if it is there.
pub(crate) const SINCE: &str = "k";
/// How long instances of an older version may still write after this one first ran (a deployment's
/// traffic shift).
pub const OLD_VERSION_DRAIN: Duration = Duration::from_secs(3600);
/// How long a settled request's token waits for a write of its counter to carry its removal, before it
/// is sent alone.
pub const REMOVAL_DELAY: Duration = Duration::from_secs(1);
/// Most removals one write carries (each adds a few bytes to the expressions, never to the item).
const MAX_CARRIED: usize = 16;
/// Lone removals tried this often before the token is left for a later write to drop (past the retention).
const REMOVAL_ATTEMPTS: u32 = 3;
/// Requests waiting for `settled` are forgotten after this long (a request that never reaches the HTTP
/// layer's end, e.g. the store called directly).
const SETTLE_WAIT: Duration = Duration::from_secs(600);

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
    /// Tokens waiting to be removed.
    cleanup: Arc<Cleanup>,
    /// On Lambda a settled request's token is removed before its answer returns.
    on_lambda: bool,
}

/// Whether what an earlier attempt of a keyed eventual increment left under its id (its entry, or its
/// marker) is this request: the same counter and value. A marker an older version wrote says neither, and
/// counts as this request.
fn same_request(item: &Item, key: &CounterKey, value: u64) -> bool {
    match (item.text_opt(KEY), item.num_opt(VALUE)) {
        (Some(k), Some(v)) => k == key.as_str() && v == value,
        _ => true,
    }
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Tokens written before this (ms, now) are past `retention` and the clock-skew margin: their keys are
/// free, whoever looks (a keyed write, the eventual fold).
pub(crate) fn token_cutoff(retention: Duration) -> u64 {
    now_millis().saturating_sub(millis(retention + CLOCK_SKEW_MARGIN))
}

/// `-ms` as a number attribute (see [`SINCE`]).
pub(crate) fn n_negative(ms: u64) -> AttributeValue {
    AttributeValue::N(format!("-{ms}"))
}

/// When the counter's tokens began (ms), if its [`SINCE`] says.
fn began(item: &Item) -> Option<u64> {
    item.get(SINCE)?
        .as_n()
        .ok()?
        .strip_prefix('-')?
        .parse()
        .ok()
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
            cleanup: Arc::new(Cleanup {
                client: client.clone(),
                table: table.clone(),
                queue: Mutex::new(Queue::default()),
                changed: Notify::new(),
                delay: REMOVAL_DELAY,
            }),
            client,
            table,
            log_table,
            marker_table,
            mode,
            logged: None,
            retention,
            // The Lambda runtime's own variable: set in every Lambda execution environment.
            on_lambda: std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some(),
        }
    }

    /// Notifies `logged` after each entry it logs.
    pub fn waking(mut self, logged: Arc<Notify>) -> Self {
        self.logged = Some(logged);
        self
    }

    /// Whether a settled request's token is removed before its answer returns, as on Lambda (the default
    /// there: `AWS_LAMBDA_RUNTIME_API` is set), whose instance may be frozen or reaped before a later
    /// write or a delayed removal comes.
    pub fn removing_before_the_answer(mut self, at_once: bool) -> Self {
        self.on_lambda = at_once;
        self
    }

    /// How long a settled request's token waits for a write of its counter before it is removed alone
    /// ([`REMOVAL_DELAY`] unless set here).
    pub fn with_removal_delay(mut self, delay: Duration) -> Self {
        if let Some(cleanup) = Arc::get_mut(&mut self.cleanup) {
            cleanup.delay = delay;
        }
        self
    }

    /// Tokens written before this (ms) are past the retention and the clock-skew margin: their keys are free.
    fn token_cutoff(&self) -> u64 {
        token_cutoff(self.retention)
    }

    /// Waits until no removal is queued or being sent (see [`Counters::idle`]).
    pub async fn idle(&self) {
        loop {
            let changed = self.cleanup.changed.notified();
            if self.cleanup.is_idle() {
                return;
            }
            changed.await;
        }
    }

    /// A strong increment without an idempotency key: one `UpdateItem` that adds under the room guard and
    /// records its token in the counter's [`history`], never retried blindly (see [`crate::send`]): after a
    /// lost answer, one read tells whether it was counted, or the answer is "outcome unknown". It carries
    /// the counter's queued token removals.
    async fn add_once(&self, key: &CounterKey, value: u64) -> Result<Incremented, Error> {
        let token = history::token();
        let mut removals = self.cleanup.take(key.as_str(), None);
        loop {
            let c = carried(&removals);
            // `#since` (see [`SINCE`]): -1 when this write creates the counter; on an older counter a copy
            // of its room, never negative, so the first keyed increment takes it as "tokens begin now".
            let expression = format!(
                "ADD #total :v SET #room = if_not_exists(#room, :max) - :v, \
                 #since = if_not_exists(#since, if_not_exists(#room, :created)), {}{}",
                history::push("if_not_exists(#total, :hzero) + :v"),
                c.remove
            );
            let mut names = history::names();
            names.insert("#total".to_owned(), TOTAL.to_owned());
            names.insert("#room".to_owned(), ROOM.to_owned());
            names.insert("#since".to_owned(), SINCE.to_owned());
            names.extend(c.names);
            let mut values = history::values(&token);
            values.insert(":v".to_owned(), n(value));
            values.insert(":max".to_owned(), n(MAX_TOTAL));
            values.insert(":created".to_owned(), n_negative(1));
            values.extend(c.values);
            let condition = format!(
                "(attribute_not_exists(#room) OR #room >= :v){}",
                c.condition
            );
            let sent = unrepeatable(|| {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key(KEY, s(key.as_str()))
                    .update_expression(&expression)
                    .condition_expression(&condition)
                    .set_expression_attribute_names(Some(names.clone()))
                    .set_expression_attribute_values(Some(values.clone()))
                    .return_values(ReturnValue::AllNew)
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
                    let item = out.attributes.unwrap_or_default();
                    self.cleanup
                        .drop_expired(key.as_str(), &item, self.token_cutoff());
                    return Ok(Incremented::Total(item.num_opt(TOTAL).unwrap_or(value)));
                }
                Sent::Answered(Err(e)) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        let old = c.item.as_ref();
                        let stale = mismatched(&removals, old);
                        if !stale.is_empty() {
                            // Not applied: go again without the tokens a later request rewrote.
                            removals = keep_unless(removals, &stale);
                            continue;
                        }
                        self.cleanup.put_back(key.as_str(), removals, old);
                        return Err(overflow(key, room_of(old), value));
                    }
                    _ => {
                        self.cleanup.put_back(key.as_str(), removals, None);
                        return Err(store_error("UpdateItem", e));
                    }
                },
                Sent::Unknown(e) => {
                    self.cleanup.put_back(key.as_str(), removals, None);
                    tracing::warn!(error = %DisplayErrorContext(&e), "UpdateItem may have applied");
                    let total =
                        history::read_back(&self.client, &self.table, (KEY, key.as_str()), &token)
                            .await?;
                    return Ok(Incremented::Total(total));
                }
            }
        }
    }

    /// A strong increment with an idempotency key: one `UpdateItem` that adds under the room guard and
    /// sets the request's token only if absent (or past the retention), so the SDK may retry it. A failed
    /// condition whose item holds the token means an earlier attempt of the request counted: its answer is
    /// the total that item holds. On a counter that predates tokens (see [`SINCE`]) the write is refused
    /// once, the request's old marker is read, and the write goes again without that condition.
    async fn add_keyed(
        &self,
        key: &CounterKey,
        value: u64,
        request: &str,
    ) -> Result<Incremented, Error> {
        let token = token_attr(request);
        let written = now_millis();
        let cutoff = self.token_cutoff();
        let since_cutoff = cutoff.saturating_sub(millis(OLD_VERSION_DRAIN));
        // Once the counter is known to predate tokens: when its tokens begin (the item's, or now).
        let mut predates: Option<u64> = None;
        let mut removals = self.cleanup.take(key.as_str(), Some(&token));
        loop {
            let c = carried(&removals);
            let since = match predates {
                // A counter this write creates never had markers.
                None => "if_not_exists(#since, :since)",
                Some(_) => ":since",
            };
            // Tokens began long enough ago: `-began > -cutoff`.
            let began_before =
                " AND (attribute_not_exists(#key) OR (#since < :zero AND #since > :sincecut))";
            let expression = format!(
                "ADD #total :v SET #room = if_not_exists(#room, :max) - :v, #tok = :now, \
                 #since = {since}{}",
                c.remove
            );
            let mut condition = "(attribute_not_exists(#room) OR #room >= :v) \
                 AND (attribute_not_exists(#tok) OR #tok < :cutoff)"
                .to_owned();
            if predates.is_none() {
                condition.push_str(began_before);
            }
            condition.push_str(&c.condition);
            let mut names = HashMap::from([
                ("#total".to_owned(), TOTAL.to_owned()),
                ("#room".to_owned(), ROOM.to_owned()),
                ("#tok".to_owned(), token.clone()),
                ("#since".to_owned(), SINCE.to_owned()),
            ]);
            let mut values = HashMap::from([
                (":v".to_owned(), n(value)),
                (":max".to_owned(), n(MAX_TOTAL)),
                (":now".to_owned(), n(written)),
                (":cutoff".to_owned(), n(cutoff)),
                (":since".to_owned(), n_negative(predates.unwrap_or(1))),
            ]);
            if predates.is_none() {
                names.insert("#key".to_owned(), KEY.to_owned());
                values.insert(":zero".to_owned(), n(0));
                values.insert(":sincecut".to_owned(), n_negative(since_cutoff));
            }
            names.extend(c.names);
            values.extend(c.values);
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY, s(key.as_str()))
                .update_expression(&expression)
                .condition_expression(&condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .within_deadline()
                .await;
            let e = match result {
                Ok(out) => {
                    let item = out.attributes.unwrap_or_default();
                    self.cleanup.drop_expired(key.as_str(), &item, cutoff);
                    self.ran(request, key, Removal::new(token, written.to_string()));
                    return Ok(Incremented::Total(item.num_opt(TOTAL).unwrap_or(value)));
                }
                Err(e) => e,
            };
            let old = match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    c.item.clone().unwrap_or_default()
                }
                _ => {
                    self.cleanup.put_back(key.as_str(), removals, None);
                    return Err(store_error("UpdateItem", e));
                }
            };
            let stale = mismatched(&removals, Some(&old));
            if !stale.is_empty() {
                // Not applied: go again without the tokens a later request rewrote.
                removals = keep_unless(removals, &stale);
                continue;
            }
            if let Some(at) = old.get(&token).and_then(|v| v.as_n().ok())
                && at.parse::<u64>().is_ok_and(|at| at >= cutoff)
            {
                // An earlier attempt of this request counted (the SDK's retry after a lost answer, or a
                // retry after a crash or a `5xx`).
                let at = at.clone();
                self.cleanup.put_back(key.as_str(), removals, Some(&old));
                self.cleanup.drop_expired(key.as_str(), &old, cutoff);
                self.ran(request, key, Removal::new(token, at));
                return Ok(Incremented::Total(old.num_opt(TOTAL).unwrap_or(0)));
            }
            if room_of(Some(&old)) < value {
                self.cleanup.put_back(key.as_str(), removals, Some(&old));
                return Err(overflow(key, room_of(Some(&old)), value));
            }
            if predates.is_some() {
                self.cleanup.put_back(key.as_str(), removals, Some(&old));
                return Err(Error::internal(
                    "a counter's keyed increment was refused for no reason its item shows",
                ));
            }
            // The counter predates tokens (or its tokens began less than a retention ago): an older
            // version, the eventual fold or an import may have counted this request under its marker.
            if self.old_marker_holds(request).await? {
                self.cleanup.put_back(key.as_str(), removals, Some(&old));
                return Ok(Incremented::Total(old.num_opt(TOTAL).unwrap_or(0)));
            }
            // Tokens begin now, or when the item says they began (an unkeyed write leaves a copy of the
            // room, never negative, on an item it did not create: see `add_once`).
            predates = Some(began(&old).map_or(written, |at| at.min(written)));
        }
    }

    /// Whether the request was counted or logged under its marker id (`done#<key>`) within its retention:
    /// its entry or an older version's marker in the log table, or the eventual fold's marker in the
    /// marker table (a request logged or counted before a switch from eventual mode).
    async fn old_marker_holds(&self, request: &str) -> Result<bool, Error> {
        let id = marker_id(request);
        for table in [&self.log_table, &self.marker_table] {
            if self.live(table, &id).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The item `id` of the log or marker table, read consistently, unless it is a marker past its `ttl`
    /// (its key is free again; DynamoDB deletes it lazily). Entries have no `ttl`.
    async fn live(&self, table: &str, id: &str) -> Result<Option<Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(ID, s(id))
            .consistent_read(true)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        let now = strata_core::time::epoch_seconds(SystemTime::now());
        Ok(out
            .item
            .filter(|m| m.num_opt(TTL).is_none_or(|ttl| ttl >= now)))
    }

    /// Notes the token a keyed request wrote or found, for [`Counters::settled`].
    fn ran(&self, request: &str, key: &CounterKey, removal: Removal) {
        let mut q = self.cleanup.lock();
        if q.settling.len() >= 256 {
            q.settling
                .retain(|_, (_, r)| r.queued.elapsed() < SETTLE_WAIT);
        }
        q.settling
            .insert(request.to_owned(), (key.as_str().to_owned(), removal));
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

    /// The put of an eventual increment's log entry: only if absent, or an expired marker left in the log
    /// (its key is free again).
    fn entry(&self, id: &str, key: &CounterKey, value: u64) -> Put {
        Put::builder()
            .table_name(&self.log_table)
            .item(ID, s(id))
            .item(KEY, s(key.as_str()))
            .item(VALUE, n(value))
            .item(AT, n(now_millis()))
            .condition_expression(MARKER_ABSENT)
            .expression_attribute_names("#id", ID)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":now", now_seconds())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("put is complete")
    }

    fn wake(&self) {
        if let Some(logged) = &self.logged {
            logged.notify_one();
        }
    }

    /// An eventual increment with an idempotency key, which the log keeps itself (see
    /// [`Counters::keeps_keys`]): the entry's id is the request's (`done#<key>`), and the fold leaves a
    /// marker of that id, with the counter and value it counted, for the retention. One transaction puts
    /// the entry (its `ClientRequestToken` makes the SDK's retries apply it once). Then, unless the id
    /// holds this request's entry (a replay), one consistent read of the marker: a request counted before
    /// (a retry after its entry was folded) is a replay too, and the fold consumes the entry just logged
    /// without counting it; another counter or value under the key is `422`.
    async fn log_keyed(
        &self,
        key: &CounterKey,
        value: u64,
        request: &str,
    ) -> Result<Incremented, Error> {
        let id = marker_id(request);
        let put = TransactWriteItem::builder()
            .put(self.entry(&id, key, value))
            .build();
        let result = self
            .client
            .transact_write_items()
            .transact_items(put)
            .send()
            .within_deadline()
            .await;
        // `None`: logged now. Else what holds the id: this request's entry, or an older version's marker
        // (a replay), or the entry of another request under the key.
        let found = match result {
            Ok(_) => {
                self.wake();
                None
            }
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c))
                    if c.cancellation_reasons().first().and_then(|r| r.code())
                        == Some("ConditionalCheckFailed") =>
                {
                    let item = c.cancellation_reasons()[0].item().cloned();
                    Some(item.ok_or_else(|| Error::unavailable("the counter log is busy; retry"))?)
                }
                _ => return Err(store_error("TransactWriteItems", e)),
            },
        };
        if let Some(item) = &found
            && same_request(item, key, value)
        {
            return Ok(Incremented::AcceptedBefore);
        }
        // The request that counted under the key, if one was folded, says what the key is: its marker
        // outranks an entry logged since (which the fold will consume without counting).
        let marker = self.live(&self.marker_table, &id).await?;
        match (marker, found) {
            (Some(marker), _) if same_request(&marker, key, value) => {
                Ok(Incremented::AcceptedBefore)
            }
            (None, None) => Ok(Incremented::Accepted),
            _ => Err(strata_core::idempotency::mismatch()),
        }
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

    /// Eventual mode keeps the key in the log entry and the fold's marker: the HTTP layer's record would
    /// be two more writes for what they hold already.
    fn keeps_keys(&self) -> bool {
        self.mode == Mode::Eventual
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
            (Mode::Strong, Some(request)) => self.add_keyed(key, value, request).await,
            (Mode::Eventual, None) => {
                let id = format!("u#{}", strata_core::kv::tx::TxId::generate().as_str());
                let actions = vec![
                    TransactWriteItem::builder()
                        .put(self.entry(&id, key, value))
                        .build(),
                ];
                if self.transact(key, value, actions, None).await? {
                    self.wake();
                }
                Ok(Incremented::Accepted)
            }
            (Mode::Eventual, Some(request)) => self.log_keyed(key, value, request).await,
        }
    }

    async fn read(&self, key: &CounterKey) -> Result<Option<Reading>, Error> {
        self.reading(key).await
    }

    /// A recorded request's token may go: queued for the counter's next write (or sent alone after
    /// [`REMOVAL_DELAY`]); on Lambda sent now. Not recorded: the token stays, so a retry counts nothing.
    async fn settled(&self, request_id: &str, recorded: bool) {
        let Some((key, removal)) = self.cleanup.lock().settling.remove(request_id) else {
            return;
        };
        if !recorded {
            return;
        }
        let removal = Removal::new(removal.attr, removal.value);
        if self.on_lambda {
            let mut removals = self.cleanup.take(&key, Some(&removal.attr));
            removals.push(removal);
            self.cleanup.send_alone(&key, removals).await;
        } else {
            self.cleanup.queue(&key, removal);
        }
    }

    async fn idle(&self) {
        DynamoCounters::idle(self).await
    }
}
