//! The eventual-mode folder on AWS: folds counter log entries (delivered by the log table's stream) into the
//! totals, exactly once.
//!
//! A batch is folded in chunks, each one `TransactWriteItems`: delete every entry of the chunk (only if it
//! is still there), put the marker of each entry that carried an idempotency key (so a late retry of that
//! request is recognised), and add each counter's sum to `total` and take it off `pending`. Either all of a
//! chunk happens or none of it. A batch delivered again, or retried after a crash between chunks, finds the
//! folded entries gone: their deletes fail their condition, and the chunk is retried without them.

use crate::attr::{n, s};
use crate::counters::{ID, KEY, PENDING, TOTAL, TTL, marker_id, marker_ttl};
use crate::error::store_error;
use crate::send::WithinDeadline;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use strata_core::Error;

/// Entries per transaction: each takes up to two actions (delete, marker) plus one per counter, within
/// DynamoDB's 100 actions.
const CHUNK: usize = 30;
const ATTEMPTS: usize = 8;

/// One increment from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `r#<request key>` or `u#<random>`.
    pub id: String,
    pub key: String,
    pub value: u64,
}

pub struct Aggregator {
    client: Client,
    table: String,
    log_table: String,
    /// How long the marker of a folded request with an idempotency key is kept.
    retention: Duration,
    /// Fault injection for tests: fail (as a crashed invocation would) after this many chunks.
    fail_after_chunks: AtomicUsize,
}

impl Aggregator {
    pub fn new(client: Client, table: String, log_table: String) -> Self {
        Self {
            client,
            table,
            log_table,
            retention: strata_core::idempotency::DEFAULT_RETENTION,
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
    #[doc(hidden)]
    pub fn inject_failure_after_chunks(&self, chunks: usize) {
        self.fail_after_chunks.store(chunks, Ordering::SeqCst);
    }

    /// Folds the entries into the totals; returns how many were folded now (not before).
    pub async fn fold(&self, entries: Vec<Entry>) -> Result<usize, Error> {
        let mut unique = BTreeMap::new();
        for entry in entries {
            unique.insert(entry.id.clone(), entry);
        }
        let entries: Vec<Entry> = unique.into_values().collect();
        let mut folded = 0;
        for (index, chunk) in entries.chunks(CHUNK).enumerate() {
            if index >= self.fail_after_chunks.load(Ordering::SeqCst) {
                self.fail_after_chunks.store(usize::MAX, Ordering::SeqCst);
                return Err(Error::internal("injected failure between chunks of a fold"));
            }
            folded += self.fold_chunk(chunk.to_vec()).await?;
        }
        Ok(folded)
    }

    async fn fold_chunk(&self, mut chunk: Vec<Entry>) -> Result<usize, Error> {
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
            let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
            for entry in &chunk {
                *sums.entry(&entry.key).or_default() += entry.value;
            }
            for (key, sum) in sums {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key(KEY, s(key))
                    .update_expression("ADD #total :sum, #pending :minus")
                    .expression_attribute_names("#total", TOTAL)
                    .expression_attribute_names("#pending", PENDING)
                    .expression_attribute_values(":sum", n(sum))
                    .expression_attribute_values(":minus", AttributeValue::N(format!("-{sum}")))
                    .build()
                    .expect("update is complete");
                actions.push(TransactWriteItem::builder().update(update).build());
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
            // Entries whose delete failed were folded already (a redelivery): drop them and go again.
            let gone: BTreeSet<usize> = c
                .cancellation_reasons()
                .iter()
                .take(chunk.len())
                .enumerate()
                .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                .map(|(i, _)| i)
                .collect();
            if gone.is_empty() {
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
}
