//! The eventual-mode fold loop on DynamoDB: folds counter log entries into the totals, exactly once. On AWS the
//! log table's stream delivers them (the `counters-aggregate` Lambda calls [`Aggregator::fold`]) and a
//! schedule re-scans the log for whatever the stream did not fold ([`Aggregator::rescan`]); `strata serve
//! --store dynamodb`, which has no stream Lambda, re-scans when it has logged an entry itself and otherwise
//! every [`LOCAL_RESCAN_IDLE`] in eventual mode ([`Aggregator::spawn_fold_loop`]; once at start in strong
//! mode, which logs nothing).
//!
//! Markers of counted requests (`done#<request key>`, kept for the retention) live in the marker table, not
//! in the log: the log holds only the entries not yet folded, so a re-scan (a `Scan`, billed for every item
//! it reads) costs what is left to fold, not a day of markers. Moving the marker's write adds none: the
//! fold puts it in the marker table instead of the log. Markers written in the log table before they moved
//! (and by strong mode) are still honoured, at no cost: a keyed entry's id is its request's marker id
//! (`done#<key>`, see [`crate::counters`]), so logging a request whose marker is still there fails its
//! `attribute_not_exists`. Entries never have `ttl`, markers always do: that tells them apart.
//!
//! A batch is folded in chunks, each one `TransactWriteItems` of at most 100 actions: delete every entry of
//! the chunk (only if it is still there), put the marker of each entry that carried an idempotency key (only
//! if absent, so a request logged twice across the upgrade, as `r#<key>` and as `done#<key>`, counts once),
//! and one update per counter that adds the chunk's sum for it under the counter's room. One write to a
//! counter's item per chunk, not per increment: a hot counter takes as many increments as the log table
//! takes entries. Either all of a chunk happens or none of it. A batch delivered again, a re-scan that races
//! the stream, or a retry after a crash between chunks finds the folded entries gone: their deletes fail
//! their condition, and the chunk is retried without them. An entry whose marker is there already is
//! deleted without being counted.
//!
//! Overflow: the update adds under `room >= :sum`. When that fails, the counter's room comes back with the
//! cancellation, and the chunk is folded again with [`strata_core::counters::fold`] deciding which of the
//! counter's entries fit; the others are consumed (deleted, marked) without being counted, and the counter's
//! `refused` attribute counts them.

use crate::attr::{Item, ItemExt, n, s};
use crate::counters::{
    AT, ID, KEY, MARKER_ABSENT, REFUSED, ROOM, SINCE, TOTAL, TTL, VALUE, marker_id, marker_ttl,
    n_negative, now_seconds, room_of, token_attr, token_cutoff, token_held,
};
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
use tokio::sync::Notify;

/// DynamoDB's limit of actions in one `TransactWriteItems`.
const MAX_ACTIONS: usize = 100;
const ATTEMPTS: usize = 8;
/// The least time between two re-scans of `strata serve --store dynamodb` while it logs entries: the
/// entries logged meanwhile fold together, well within the contract's "within 1 second".
pub const LOCAL_FOLD_EVERY: Duration = Duration::from_millis(200);
/// How often `strata serve --store dynamodb` re-scans the log when it logged nothing itself: for entries
/// another process logged and left (a `Scan` is billed even when it finds nothing).
pub const LOCAL_RESCAN_IDLE: Duration = Duration::from_secs(5);
/// The age past which the scheduled re-scan folds an entry on AWS: the stream normally folds it within
/// seconds, so anything older was skipped, failed past its retries or expired from the stream.
pub const RESCAN_AGE: Duration = Duration::from_secs(180);

/// One increment from the log, as the log table holds it (decoded from a stream image or a scanned item
/// with `serde_dynamo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    /// `done#<request key>` (`r#<request key>` when logged before markers moved) or `u#<random>`.
    pub id: String,
    pub key: String,
    pub value: u64,
    /// Accepted at (milliseconds since the epoch); 0 for entries logged before it was recorded.
    #[serde(default)]
    pub at: u64,
}

impl Entry {
    /// Whether a log item is an increment: by its id, and, for `done#…`, by having no `ttl` (markers
    /// of counted requests, written there before markers moved or by strong mode, always have one).
    pub fn is_entry(id: &str, has_ttl: bool) -> bool {
        id.starts_with("r#") || id.starts_with("u#") || (id.starts_with("done#") && !has_ttl)
    }

    /// The idempotency key of the request it logged, if any.
    pub fn request(&self) -> Option<&str> {
        self.id
            .strip_prefix("done#")
            .or_else(|| self.id.strip_prefix("r#"))
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
    marker_table: String,
    /// Notified when this process has logged an entry: the fold loop re-scans then.
    logged: Arc<Notify>,
    /// How long the marker of a folded request with an idempotency key is kept.
    retention: Duration,
    /// Fault injection for tests: fail (as a crashed invocation would) after this many chunks.
    #[cfg(feature = "faults")]
    fail_after_chunks: AtomicUsize,
}

impl Aggregator {
    /// On the deployment's counter, log and marker tables.
    pub fn new(client: Client, tables: &crate::Tables) -> Self {
        Self {
            client,
            table: tables.counters.clone(),
            log_table: tables.counter_log.clone(),
            marker_table: tables.counter_markers.clone(),
            logged: Arc::new(Notify::new()),
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

    /// From the environment the template sets (`COUNTER_TABLE`, `COUNTER_LOG_TABLE`,
    /// `COUNTER_MARKER_TABLE`, `RETENTION_SECONDS`).
    pub async fn from_env() -> Result<Self, Error> {
        let config = aws_config::load_from_env().await;
        let tables = crate::Tables::from_env()?;
        let retention = strata_core::Settings::from_env()?.retention;
        Ok(Self::new(crate::config::client(&config), &tables).with_retention(retention))
    }

    /// What the counters of this process notify when they log an entry (see
    /// [`crate::config::stores_waking`]), so the fold loop folds it at once.
    pub fn logged(&self) -> Arc<Notify> {
        self.logged.clone()
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
        let mut index = 0;
        let mut folded = 0;
        // One request logged under both its ids (`r#` before the upgrade, `done#` after): one transaction
        // may not put its marker twice, so the second goes in a later pass, which finds the marker.
        while !entries.is_empty() {
            let mut requests = BTreeSet::new();
            let (now, later): (Vec<Entry>, Vec<Entry>) = entries
                .into_iter()
                .partition(|e| e.request().is_none_or(|r| requests.insert(r.to_owned())));
            for chunk in chunks(now) {
                self.injected_failure(index)?;
                index += 1;
                folded += self.fold_chunk(chunk).await?;
            }
            entries = later;
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
                // Markers (`done#…` with `ttl`, from before they moved) are not increments; an entry without
                // `at` predates it and is old.
                .filter_expression(
                    "(begins_with(#id, :r) OR begins_with(#id, :u) \
                      OR (begins_with(#id, :done) AND attribute_not_exists(#ttl))) \
                     AND (attribute_not_exists(#at) OR #at <= :cutoff)",
                )
                .expression_attribute_names("#id", ID)
                .expression_attribute_names("#at", AT)
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_values(":r", s("r#"))
                .expression_attribute_values(":u", s("u#"))
                .expression_attribute_values(":done", s("done#"))
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

    /// Re-scans the log when this process has logged an entry ([`Self::logged`]), at most once per
    /// [`LOCAL_FOLD_EVERY`], and otherwise every `idle`, until the returned task is aborted: the fold loop
    /// of a process that serves eventual counters on DynamoDB without a stream Lambda.
    pub fn spawn_fold_loop(self: Arc<Self>, idle: Duration) -> tokio::task::JoinHandle<()> {
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
                tokio::time::sleep(LOCAL_FOLD_EVERY).await;
                // An entry logged during the re-scan left its notification: it wakes this at once.
                let _ = tokio::time::timeout(
                    idle.saturating_sub(LOCAL_FOLD_EVERY),
                    self.logged.notified(),
                )
                .await;
            }
        })
    }

    async fn fold_chunk(&self, mut chunk: Vec<Entry>) -> Result<usize, Error> {
        // Counters whose room the chunk found too small, with the room DynamoDB reported.
        let mut rooms: BTreeMap<String, u64> = BTreeMap::new();
        // Entries whose request's marker is there already: deleted, not counted.
        let mut counted: BTreeSet<String> = BTreeSet::new();
        for attempt in 0..ATTEMPTS {
            if chunk.is_empty() {
                return Ok(0);
            }
            let mut actions = Vec::new();
            for entry in &chunk {
                // An entry, never a marker left under the same id (`done#…` with `ttl`).
                let delete = Delete::builder()
                    .table_name(&self.log_table)
                    .key(ID, s(&entry.id))
                    .condition_expression("attribute_exists(#id) AND attribute_not_exists(#ttl)")
                    .expression_attribute_names("#id", ID)
                    .expression_attribute_names("#ttl", TTL)
                    .build()
                    .expect("delete is complete");
                actions.push(TransactWriteItem::builder().delete(delete).build());
            }
            // Action index of each marker put, with its entry's index.
            let mut markers: Vec<(usize, usize)> = Vec::new();
            for (i, entry) in chunk.iter().enumerate() {
                let Some(request) = entry.request() else {
                    continue;
                };
                if counted.contains(&entry.id) {
                    continue;
                }
                // With what it counted: a later request under the key with another counter or value is
                // told so (`422`, see `crate::counters`).
                let marker = Put::builder()
                    .table_name(&self.marker_table)
                    .item(ID, s(&marker_id(request)))
                    .item(KEY, s(&entry.key))
                    .item(VALUE, n(entry.value))
                    .item(TTL, n(marker_ttl(self.retention)))
                    .condition_expression(MARKER_ABSENT)
                    .expression_attribute_names("#id", ID)
                    .expression_attribute_names("#ttl", TTL)
                    .expression_attribute_values(":now", now_seconds())
                    .build()
                    .expect("put is complete");
                markers.push((actions.len(), i));
                actions.push(TransactWriteItem::builder().put(marker).build());
            }
            let mut by_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
            // The tokens of the keyed requests each counter is to count (see `add`).
            let mut tokens: BTreeMap<&str, Vec<(String, usize)>> = BTreeMap::new();
            for (i, entry) in chunk.iter().enumerate() {
                if !counted.contains(&entry.id) {
                    by_key.entry(&entry.key).or_default().push(entry.value);
                    if let Some(request) = entry.request() {
                        tokens
                            .entry(&entry.key)
                            .or_default()
                            .push((token_attr(request), i));
                    }
                }
            }
            let cutoff = token_cutoff(self.retention);
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
                let tokens = tokens.get(*key).map(Vec::as_slice).unwrap_or_default();
                actions.push(
                    TransactWriteItem::builder()
                        .update(self.add(key, sum, refused, tokens, cutoff))
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
            // Requests counted already (their marker is there): consume their entries without counting.
            let mut again = false;
            for (index, entry) in &markers {
                if failed(*index) && !gone.contains(entry) {
                    again = true;
                    counted.insert(chunk[*entry].id.clone());
                }
            }
            // Counters that counted some of these requests in strong mode (their tokens are there): consume
            // those entries without counting. Else, counters without room for their sum: go again
            // deciding entry by entry.
            for (index, key) in &updates {
                if !failed(*index) {
                    continue;
                }
                again = true;
                let item = reasons[*index].item();
                let held: Vec<usize> = tokens
                    .get(*key)
                    .into_iter()
                    .flatten()
                    .filter(|(token, _)| token_held(item, token, cutoff))
                    .map(|(_, i)| *i)
                    .collect();
                if held.is_empty() {
                    rooms.insert((*key).to_owned(), room_of(item));
                }
                for i in held {
                    counted.insert(chunk[i].id.clone());
                }
            }
            if gone.is_empty() && !again {
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

    /// The update that adds `sum` to a counter under its room and counts `refused` increments. With the
    /// `tokens` of the keyed requests it counts: only if strong mode has not counted them (a request
    /// counted by a strong-mode server and retried after a switch to eventual mode holds its token in the
    /// counter, see [`crate::counters`]), and the counter notes when it last counted a keyed request here
    /// (`k`), so that strong mode looks for these requests' markers for a retention.
    fn add(
        &self,
        key: &str,
        sum: u64,
        refused: u64,
        tokens: &[(String, usize)],
        cutoff: u64,
    ) -> Update {
        let mut expression = if refused > 0 {
            "ADD #total :sum, #refused :refused SET #room = if_not_exists(#room, :max) - :sum"
        } else {
            "ADD #total :sum SET #room = if_not_exists(#room, :max) - :sum"
        }
        .to_owned();
        let mut condition = "(attribute_not_exists(#room) OR #room >= :sum)".to_owned();
        let mut update = Update::builder();
        if !tokens.is_empty() {
            expression.push_str(", #since = :since");
            update = update
                .expression_attribute_names("#since", SINCE)
                .expression_attribute_values(":since", n_negative(now_millis()))
                .expression_attribute_values(":cutoff", n(cutoff));
            for (i, (token, _)) in tokens.iter().enumerate() {
                condition.push_str(&format!(
                    " AND (attribute_not_exists(#t{i}) OR #t{i} < :cutoff)"
                ));
                update = update.expression_attribute_names(format!("#t{i}"), token);
            }
        }
        let mut update = update
            .table_name(&self.table)
            .key(KEY, s(key))
            .update_expression(expression)
            .condition_expression(condition)
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
        let marker = usize::from(entry.request().is_some());
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
            let mut actions = chunk.len() + chunk.iter().filter(|e| e.request().is_some()).count();
            actions += chunk.iter().map(|e| &e.key).collect::<BTreeSet<_>>().len();
            assert!(actions <= MAX_ACTIONS, "{actions}");
        }
    }
}
