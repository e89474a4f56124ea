//! The eventual-mode fold loop on DynamoDB: folds counter log entries into the totals, exactly once. On AWS the
//! log table's stream delivers them (the `counters-aggregate` Lambda calls [`Aggregator::fold`]) and a
//! schedule re-scans the log for whatever the stream did not fold ([`Aggregator::rescan`]); `strata serve
//! --store dynamodb`, which has no stream Lambda, re-scans every 200 ms in eventual mode
//! ([`Aggregator::spawn_fold_loop`]; once at start in strong mode, which logs nothing).
//!
//! A batch is folded in chunks, each one `TransactWriteItems` of at most 100 actions: delete every entry of
//! the chunk (only if it is still there), put the marker of each entry that carried an idempotency key (so a
//! late retry of that request is recognised), and one update per counter that adds the chunk's sum for it
//! under the counter's room. One write to a counter's item per chunk, not per increment: a hot counter takes
//! as many increments as the log table takes entries. Either all of a chunk happens or none of it. A batch
//! delivered again, a re-scan that races the stream, or a retry after a crash between chunks finds the
//! folded entries gone: their deletes fail their condition, and the chunk is retried without them.
//!
//! Overflow: the update adds under `room >= :sum`. When that fails, the counter's room comes back with the
//! cancellation, and the chunk is folded again with [`strata_core::counters::fold`] deciding which of the
//! counter's entries fit; the others are consumed (deleted, marked) without being counted, and the counter's
//! `refused` attribute counts them.

use crate::attr::{Item, ItemExt, n, s};
use crate::counters::{AT, ID, KEY, REFUSED, ROOM, TOTAL, TTL, marker_id, marker_ttl, room_of};
use crate::error::store_error;
use crate::send::WithinDeadline;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem, Update};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
#[cfg(feature = "faults")]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use strata_core::Error;
use strata_core::counters::{MAX_TOTAL, fold as fold_values};
use strata_core::time::now_millis;

/// DynamoDB's limit of actions in one `TransactWriteItems`.
const MAX_ACTIONS: usize = 100;
const ATTEMPTS: usize = 8;
/// How often `strata serve --store dynamodb` folds the log: well within the contract's "within 1 second".
pub const LOCAL_FOLD_EVERY: Duration = Duration::from_millis(200);
/// The age past which the scheduled re-scan folds an entry on AWS: the stream normally folds it within
/// seconds, so anything older was skipped, failed past its retries or expired from the stream.
pub const RESCAN_AGE: Duration = Duration::from_secs(180);

/// One increment from the log, as the log table holds it (decoded from a stream image or a scanned item
/// with `serde_dynamo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    /// `r#<request key>` or `u#<random>`.
    pub id: String,
    pub key: String,
    pub value: u64,
    /// Accepted at (milliseconds since the epoch); 0 for entries logged before it was recorded.
    #[serde(default)]
    pub at: u64,
}

impl Entry {
    /// Whether a log item with this id is an increment (the others are markers of counted requests).
    pub fn is_increment_id(id: &str) -> bool {
        id.starts_with("r#") || id.starts_with("u#")
    }
}

/// What a re-scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rescanned {
    /// Entries folded by this re-scan (not those something else folded first).
    pub folded: usize,
    /// Increment items that do not decode as an [`Entry`]: left in the log, never dropped, and logged.
    pub malformed: usize,
}

#[derive(Debug)]
pub struct Aggregator {
    client: Client,
    table: String,
    log_table: String,
    /// How long the marker of a folded request with an idempotency key is kept.
    retention: Duration,
    /// Fault injection for tests: fail (as a crashed invocation would) after this many chunks.
    #[cfg(feature = "faults")]
    fail_after_chunks: AtomicUsize,
}

impl Aggregator {
    pub fn new(client: Client, table: String, log_table: String) -> Self {
        Self {
            client,
            table,
            log_table,
            retention: strata_core::defaults::RETENTION,
            #[cfg(feature = "faults")]
            fail_after_chunks: AtomicUsize::new(usize::MAX),
        }
    }

    /// The markers it writes are kept for `retention` (the deployment's `RETENTION_SECONDS`).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// From the environment the template sets (`COUNTER_TABLE`, `COUNTER_LOG_TABLE`, `RETENTION_SECONDS`).
    pub async fn from_env() -> Result<Self, Error> {
        let config = aws_config::load_from_env().await;
        let tables = crate::Tables::from_env()?;
        let retention = strata_core::Settings::from_env()?.retention;
        Ok(Self::new(
            crate::config::client(&config),
            tables.counters,
            tables.counter_log,
        )
        .with_retention(retention))
    }

    /// Test hook: the next fold stops with an error after `chunks` chunks.
    #[cfg(feature = "faults")]
    pub fn inject_failure_after_chunks(&self, chunks: usize) {
        self.fail_after_chunks.store(chunks, Ordering::SeqCst);
    }

    /// The failure a test injected before chunk `index` ([`Self::inject_failure_after_chunks`]), once.
    #[cfg(feature = "faults")]
    fn injected_failure(&self, index: usize) -> Result<(), Error> {
        if index >= self.fail_after_chunks.load(Ordering::SeqCst) {
            self.fail_after_chunks.store(usize::MAX, Ordering::SeqCst);
            return Err(Error::internal("injected failure between chunks of a fold"));
        }
        Ok(())
    }

    /// Without the `faults` feature nothing is injected.
    #[cfg(not(feature = "faults"))]
    fn injected_failure(&self, _: usize) -> Result<(), Error> {
        Ok(())
    }

    /// Folds the entries into the totals; returns how many were folded now (not before).
    pub async fn fold(&self, entries: Vec<Entry>) -> Result<usize, Error> {
        let mut unique = BTreeMap::new();
        for entry in entries {
            unique.insert(entry.id.clone(), entry);
        }
        // By counter, then in the order accepted: a counter's entries share chunks (one write per counter
        // per chunk), and a full counter refuses the later ones.
        let mut entries: Vec<Entry> = unique.into_values().collect();
        entries.sort_by(|a, b| (&a.key, a.at, &a.id).cmp(&(&b.key, b.at, &b.id)));
        let mut folded = 0;
        for (index, chunk) in chunks(entries).into_iter().enumerate() {
            self.injected_failure(index)?;
            folded += self.fold_chunk(chunk).await?;
        }
        Ok(folded)
    }

    /// Folds every increment in the log accepted more than `older_than` ago, page by page of a consistent
    /// scan. Entries the stream folds meanwhile are skipped by the fold's conditions, so racing it counts
    /// each entry once.
    pub async fn rescan(&self, older_than: Duration) -> Result<Rescanned, Error> {
        let cutoff = now_millis().saturating_sub(older_than.as_millis() as u64);
        let mut found = Rescanned::default();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.log_table)
                .consistent_read(true)
                // Markers (`done#…`) are not increments; an entry without `at` predates it and is old.
                .filter_expression(
                    "(begins_with(#id, :r) OR begins_with(#id, :u)) \
                     AND (attribute_not_exists(#at) OR #at <= :cutoff)",
                )
                .expression_attribute_names("#id", ID)
                .expression_attribute_names("#at", AT)
                .expression_attribute_values(":r", s("r#"))
                .expression_attribute_values(":u", s("u#"))
                .expression_attribute_values(":cutoff", n(cutoff))
                .set_exclusive_start_key(start.take())
                .send()
                .within_deadline()
                .await
                .map_err(|e| store_error("Scan", e))?;
            let mut entries = Vec::new();
            for item in page.items.unwrap_or_default() {
                let id = item.text_opt(ID).map(str::to_owned);
                match serde_dynamo::from_item::<_, Entry>(item) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => {
                        found.malformed += 1;
                        tracing::error!(?id, error = %e, "a counter log entry does not decode; left in the log");
                    }
                }
            }
            found.folded += self.fold(entries).await?;
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(found),
            }
        }
    }

    /// Re-scans the whole log every `every`, until the returned task is aborted: the fold loop of a process
    /// that serves eventual counters on DynamoDB without a stream Lambda.
    pub fn spawn_fold_loop(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.rescan(Duration::ZERO).await {
                    Ok(found) if found.folded > 0 => {
                        tracing::debug!(folded = found.folded, "folded counter log entries")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "folding the counter log failed; will retry")
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    async fn fold_chunk(&self, mut chunk: Vec<Entry>) -> Result<usize, Error> {
        // Counters whose room the chunk found too small, with the room DynamoDB reported.
        let mut rooms: BTreeMap<String, u64> = BTreeMap::new();
        for attempt in 0..ATTEMPTS {
            if chunk.is_empty() {
                return Ok(0);
            }
            let mut actions = Vec::new();
            for entry in &chunk {
                let delete = Delete::builder()
                    .table_name(&self.log_table)
                    .key(ID, s(&entry.id))
                    .condition_expression("attribute_exists(#id)")
                    .expression_attribute_names("#id", ID)
                    .build()
                    .expect("delete is complete");
                actions.push(TransactWriteItem::builder().delete(delete).build());
            }
            for entry in &chunk {
                if let Some(request) = entry.id.strip_prefix("r#") {
                    let marker = Put::builder()
                        .table_name(&self.log_table)
                        .item(ID, s(&marker_id(request)))
                        .item(TTL, n(marker_ttl(self.retention)))
                        .build()
                        .expect("put is complete");
                    actions.push(TransactWriteItem::builder().put(marker).build());
                }
            }
            let mut by_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
            for entry in &chunk {
                by_key.entry(&entry.key).or_default().push(entry.value);
            }
            // Action index of each counter's update, to read its cancellation reason.
            let mut updates: Vec<(usize, &str)> = Vec::new();
            for (key, values) in &by_key {
                let (sum, refused) = match rooms.get(*key) {
                    None => (values.iter().sum::<u64>(), 0),
                    Some(room) => {
                        let folded = fold_values(MAX_TOTAL - room, values);
                        (folded.added(values), folded.refused())
                    }
                };
                if refused > 0 {
                    tracing::warn!(
                        key,
                        refused,
                        "accepted increments would pass 2^63 - 1: refused, recorded in the counter"
                    );
                }
                updates.push((actions.len(), key));
                actions.push(
                    TransactWriteItem::builder()
                        .update(self.add(key, sum, refused))
                        .build(),
                );
            }
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions))
                .send()
                .within_deadline()
                .await;
            let e = match result {
                Ok(_) => return Ok(chunk.len()),
                Err(e) => e,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                e.as_service_error()
            else {
                return Err(store_error("TransactWriteItems", e));
            };
            let reasons = c.cancellation_reasons();
            let failed =
                |i: usize| reasons.get(i).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
            // Entries whose delete failed were folded already (a redelivery, or the stream and a re-scan
            // at once): drop them.
            let gone: BTreeSet<usize> = (0..chunk.len()).filter(|&i| failed(i)).collect();
            // Counters without room for their sum: go again deciding entry by entry.
            let mut full = false;
            for (index, key) in &updates {
                if failed(*index) {
                    full = true;
                    rooms.insert((*key).to_owned(), room_of(reasons[*index].item()));
                }
            }
            if gone.is_empty() && !full {
                // A concurrent transaction on the same items: back off and retry.
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
            }
            chunk = chunk
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !gone.contains(i))
                .map(|(_, e)| e)
                .collect();
        }
        Err(Error::unavailable(
            "folding kept colliding with concurrent transactions",
        ))
    }

    /// The update that adds `sum` to a counter under its room and counts `refused` increments.
    fn add(&self, key: &str, sum: u64, refused: u64) -> Update {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(KEY, s(key))
            .update_expression(if refused > 0 {
                "ADD #total :sum, #refused :refused SET #room = if_not_exists(#room, :max) - :sum"
            } else {
                "ADD #total :sum SET #room = if_not_exists(#room, :max) - :sum"
            })
            .condition_expression("attribute_not_exists(#room) OR #room >= :sum")
            .expression_attribute_names("#total", TOTAL)
            .expression_attribute_names("#room", ROOM)
            .expression_attribute_values(":sum", n(sum))
            .expression_attribute_values(":max", n(MAX_TOTAL))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            );
        if refused > 0 {
            update = update
                .expression_attribute_names("#refused", REFUSED)
                .expression_attribute_values(":refused", n(refused));
        }
        update.build().expect("update is complete")
    }
}

/// Splits entries (sorted by counter) into chunks of at most [`MAX_ACTIONS`] actions: one delete per entry,
/// one marker per keyed entry, one update per counter in the chunk.
fn chunks(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<Entry> = Vec::new();
    let mut actions = 0;
    for entry in entries {
        let marker = usize::from(entry.id.starts_with("r#"));
        let same_counter = chunk.last().is_some_and(|last| last.key == entry.key);
        let needs = 1 + marker + usize::from(!same_counter);
        if actions + needs > MAX_ACTIONS {
            chunks.push(std::mem::take(&mut chunk));
            // The first entry of a chunk brings its counter's update.
            actions = 2 + marker;
        } else {
            actions += needs;
        }
        chunk.push(entry);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, key: &str) -> Entry {
        Entry {
            id: id.to_owned(),
            key: key.to_owned(),
            value: 1,
            at: 0,
        }
    }

    #[test]
    fn chunks_stay_within_100_actions_and_take_one_update_per_counter() {
        let hot: Vec<Entry> = (0..1000)
            .map(|i| entry(&format!("u#{i:04}"), "hot"))
            .collect();
        let split = chunks(hot);
        // 99 entries and one update per chunk.
        assert_eq!(split.len(), 11);
        assert!(split[..10].iter().all(|c| c.len() == 99));
        let mut mixed: Vec<Entry> = (0..60).map(|i| entry(&format!("r#{i:02}"), "a")).collect();
        mixed.extend((0..60).map(|i| entry(&format!("u#{i:02}"), &format!("k{i:02}"))));
        for chunk in chunks(mixed) {
            let mut actions = chunk.len() + chunk.iter().filter(|e| e.id.starts_with("r#")).count();
            actions += chunk.iter().map(|e| &e.key).collect::<BTreeSet<_>>().len();
            assert!(actions <= MAX_ACTIONS, "{actions}");
        }
    }
}
