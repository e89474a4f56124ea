//! Counters on the embedded store.
//!
//! Keyspaces: `counters` (key → total and refused: increments refused when folded), `counter_log` (sequence
//! number → value and key; eventual mode) and `counter_requests` (request id → marker: this request was
//! counted or logged, until the marker's expiry; see [`crate::retention`]). Every increment is one writer
//! command that checks the request marker, then adds to the total under the room left below 2^63 − 1
//! (strong) or appends to the log (eventual; it reads nothing of the counter, as on DynamoDB, so both stores
//! refuse the same increments), writing the marker in the same batch.
//!
//! In eventual mode a fold thread moves log entries into totals every 50 ms: one writer command per round
//! re-reads each entry, folds it ([`strata_core::counters::fold`]: counted, or refused if it would pass
//! 2^63 − 1) and deletes it, all in one durable batch. A crash before that batch leaves the
//! entries for the next round; after it, they are gone: each entry is counted exactly once. Log keys are
//! sequence numbers in commit order, so the fold loop resumes after the last entry it folded instead of walking
//! the deleted ones again (an LSM tree keeps tombstones until compaction).

use crate::{Space, Store};
use async_trait::async_trait;
use fjall::Readable;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use strata_core::Error;
use strata_core::counters::{
    CounterKey, Counters, Incremented, MAX_TOTAL, Mode, Reading, fold as fold_values, overflow,
};

const FOLD_EVERY: Duration = Duration::from_millis(50);
const FOLD_BATCH: usize = 10_000;

#[derive(Debug)]
pub struct EmbeddedCounters {
    store: Store,
    mode: Mode,
    /// How long a request's marker holds.
    retention: Duration,
    /// The next log sequence number; assigned inside writer commands, so in commit order.
    next_entry: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counter {
    pub(crate) total: u64,
    pub(crate) refused: u64,
}

impl Counter {
    pub(crate) fn decode(bytes: Option<&[u8]>) -> Result<Option<Self>, Error> {
        let Some(bytes) = bytes else { return Ok(None) };
        let corrupt = || Error::internal("corrupt counter record");
        let word = |b: &[u8]| b.try_into().map(u64::from_be_bytes).map_err(|_| corrupt());
        // Format version, then total and refused.
        let rest = crate::format::payload("counter record", bytes)?;
        if rest.len() != 16 {
            return Err(corrupt());
        }
        Ok(Some(Self {
            total: word(&rest[..8])?,
            refused: word(&rest[8..])?,
        }))
    }

    pub(crate) fn encode(self) -> Vec<u8> {
        let mut out = crate::format::versioned(16);
        out.extend_from_slice(&self.total.to_be_bytes());
        out.extend_from_slice(&self.refused.to_be_bytes());
        out
    }

    fn room(self) -> u64 {
        MAX_TOTAL - self.total
    }
}

/// Format version, the value (u64, big-endian), the counter's key.
fn log_entry(key: &CounterKey, value: u64) -> Vec<u8> {
    let mut out = crate::format::versioned(8 + key.as_str().len());
    out.extend_from_slice(&value.to_be_bytes());
    out.extend_from_slice(key.as_str().as_bytes());
    out
}

pub(crate) fn decode_log_entry(bytes: &[u8]) -> Result<(u64, Vec<u8>), Error> {
    let corrupt = || Error::internal("corrupt counter log entry");
    let bytes = crate::format::payload("counter log entry", bytes)?;
    let (value, key) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
    Ok((
        u64::from_be_bytes(value.try_into().map_err(|_| corrupt())?),
        key.to_vec(),
    ))
}

impl EmbeddedCounters {
    pub fn new(store: Store, mode: Mode, retention: Duration) -> Self {
        let next_entry = store.counter_log_sequence();
        // The fold loop runs in strong mode too: a data directory last served in eventual mode may still hold
        // logged increments, and folding is the only way they reach the totals. In strong mode nothing new is
        // logged, so it finds the rest of the log empty.
        if store.claim_fold_loop() {
            let cursor = Arc::new(AtomicU64::new(0));
            store.start_background("strata-fold", FOLD_EVERY, move |store| {
                let cursor = cursor.clone();
                async move {
                    match fold(&store, cursor.load(Ordering::Relaxed)).await {
                        Ok(Some(last)) => cursor.store(last + 1, Ordering::Relaxed),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "folding the counter log failed; will retry")
                        }
                    }
                }
            });
        }
        Self {
            store,
            mode,
            retention,
            next_entry,
        }
    }
}

/// One folding round: the log from sequence number `from` on (up to a batch) into the totals, exactly once.
/// Returns the last sequence number folded, if any.
pub async fn fold(store: &Store, from: u64) -> Result<Option<u64>, Error> {
    // A snapshot, not a plain keyspace scan: that one can see a batch half applied (its items go in one by
    // one, in no particular order), and the cursor would then skip the entries not there yet.
    // The view is let go before the write below: the writer may have to reopen the data directory before it
    // runs that write, and an open view would hold the old database (and its lock) meanwhile.
    let ids: Vec<Vec<u8>> = {
        let view = store.view()?;
        view.snapshot()
            .range(view.space(Space::CounterLog), from.to_be_bytes()..)
            .take(FOLD_BATCH)
            .map(|entry| {
                entry
                    .key()
                    .map(|k| k.to_vec())
                    .map_err(crate::store::fjall_error)
            })
            .collect::<Result<_, _>>()?
    };
    let Some(last) = ids.last().and_then(|k| <[u8; 8]>::try_from(&k[..]).ok()) else {
        return Ok(None);
    };
    let last = u64::from_be_bytes(last);
    store
        .write(move |staging| {
            for id in ids {
                // Re-read inside the command: whatever another round already folded is gone.
                let Some(bytes) = staging.get(Space::CounterLog, &id)? else {
                    continue;
                };
                let (value, key) = decode_log_entry(&bytes)?;
                let mut counter = Counter::decode(staging.get(Space::Counters, &key)?.as_deref())?
                    .unwrap_or_default();
                let folded = fold_values(counter.total, &[value]);
                if folded.refused() > 0 {
                    tracing::warn!(
                        key = %String::from_utf8_lossy(&key),
                        value,
                        "an accepted increment would pass 2^63 - 1: refused, recorded in the counter"
                    );
                }
                counter.total = folded.total;
                counter.refused += folded.refused();
                staging.put(Space::Counters, key, counter.encode());
                staging.remove(Space::CounterLog, id);
            }
            Ok(Some(last))
        })
        .await
}

#[async_trait]
impl Counters for EmbeddedCounters {
    fn mode(&self) -> Mode {
        self.mode
    }

    async fn increment(
        &self,
        key: &CounterKey,
        value: u64,
        request_id: Option<&str>,
    ) -> Result<Incremented, Error> {
        let (key, mode, next_entry) = (key.clone(), self.mode, self.next_entry.clone());
        let retention = self.retention;
        let request = request_id.map(|r| r.as_bytes().to_vec());
        self.store
            .write(move |staging| {
                let stored = Counter::decode(
                    staging
                        .get(Space::Counters, key.as_str().as_bytes())?
                        .as_deref(),
                )?;
                let mut counter = stored.unwrap_or_default();
                // Counted (or logged) before: a retry after a crash lost the first answer. Count nothing more.
                // A marker past its expiry is a request of the past: the key reused counts again.
                if let Some(r) = &request
                    && let Some(marker) = staging.get(Space::CounterRequests, r)?
                    && crate::retention::marker_holds(&marker, strata_core::time::now_millis())?
                {
                    return Ok(match mode {
                        Mode::Strong => Incremented::Total(counter.total),
                        Mode::Eventual => Incremented::Accepted,
                    });
                }
                // Eventual mode refuses here only what no counter can take; the rest is decided when folded.
                let refuse_above = match mode {
                    Mode::Strong => counter.room(),
                    Mode::Eventual => MAX_TOTAL,
                };
                if value > refuse_above {
                    return Err(overflow(&key, counter.room(), value));
                }
                if let Some(r) = request {
                    staging.put(
                        Space::CounterRequests,
                        r,
                        crate::retention::encode_marker(crate::retention::expiry_from_now(
                            retention,
                        )),
                    );
                }
                let answer = match mode {
                    Mode::Strong => {
                        counter.total += value;
                        Incremented::Total(counter.total)
                    }
                    Mode::Eventual => {
                        let seq = next_entry.fetch_add(1, Ordering::Relaxed);
                        staging.put(
                            Space::CounterLog,
                            seq.to_be_bytes().to_vec(),
                            log_entry(&key, value),
                        );
                        // The counter itself is not written: `GET` of a counter whose increments are all
                        // still in the log is `404`, as on DynamoDB.
                        return Ok(Incremented::Accepted);
                    }
                };
                staging.put(
                    Space::Counters,
                    key.as_str().as_bytes().to_vec(),
                    counter.encode(),
                );
                Ok(answer)
            })
            .await
    }

    async fn read(&self, key: &CounterKey) -> Result<Option<Reading>, Error> {
        let bytes = self.store.read(Space::Counters, key.as_str().as_bytes())?;
        Ok(Counter::decode(bytes.as_deref())?.map(|c| Reading {
            total: c.total,
            refused: c.refused,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use strata_core::counters::Counters;

    /// Increments logged in eventual mode but not folded yet reach the totals when the same data directory
    /// is next served in strong mode.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_left_by_eventual_mode_is_folded_in_strong_mode() {
        let dir = tempfile::tempdir().unwrap();
        let key = CounterKey::parse("left over").unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            // Hold the fold loop's claim, so these increments stay in the log.
            assert!(store.claim_fold_loop());
            let eventual = EmbeddedCounters::new(store.clone(), Mode::Eventual, Duration::MAX);
            for _ in 0..5 {
                assert_eq!(
                    eventual.increment(&key, 2, None).await.unwrap(),
                    Incremented::Accepted
                );
            }
            assert_eq!(
                eventual.get(&key).await.unwrap().unwrap_or(0),
                0,
                "nothing folded yet"
            );
        }
        let store = Store::open(dir.path()).unwrap();
        let strong = EmbeddedCounters::new(store.clone(), Mode::Strong, Duration::MAX);
        let deadline = Instant::now() + Duration::from_secs(30);
        while strong.get(&key).await.unwrap() != Some(10) {
            assert!(
                Instant::now() < deadline,
                "the left-over log was never folded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            strong.increment(&key, 1, None).await.unwrap(),
            Incremented::Total(11)
        );
    }
}
