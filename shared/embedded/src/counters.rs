//! Counters on the embedded store.
//!
//! Keyspaces: `counters` (key → total, pending: accepted but not yet folded), `counter_log` (entry id →
//! value and key; eventual mode) and `counter_requests` (request id → marker: this request already counted).
//! Every increment is one writer command that checks the request marker and the room left below 2^63 − 1
//! (total + pending), then adds to the total (strong) or appends to the log (eventual).
//!
//! In eventual mode a folder thread moves log entries into totals every 50 ms: one writer command per round
//! re-reads each entry, adds it, deletes it and (for requests with a key) writes the marker, all in one
//! durable batch. A crash before that batch leaves the entries for the next round; after it, they are gone:
//! each entry is counted exactly once.

use crate::{Space, Store};
use async_trait::async_trait;
use std::time::Duration;
use strata_core::Error;
use strata_core::counters::{CounterKey, Counters, Incremented, MAX_TOTAL, Mode, overflow};

const FOLD_EVERY: Duration = Duration::from_millis(50);
const FOLD_BATCH: usize = 10_000;

pub struct EmbeddedCounters {
    store: Store,
    mode: Mode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counter {
    total: u64,
    pending: u64,
}

impl Counter {
    fn decode(bytes: Option<&[u8]>) -> Result<Option<Self>, Error> {
        let Some(bytes) = bytes else { return Ok(None) };
        let corrupt = || Error::internal("corrupt counter record");
        let (total, pending) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
        Ok(Some(Self {
            total: u64::from_be_bytes(total.try_into().map_err(|_| corrupt())?),
            pending: u64::from_be_bytes(pending.try_into().map_err(|_| corrupt())?),
        }))
    }

    fn encode(self) -> Vec<u8> {
        [self.total.to_be_bytes(), self.pending.to_be_bytes()].concat()
    }

    fn room(self) -> u64 {
        MAX_TOTAL - self.total - self.pending
    }
}

fn log_entry(key: &CounterKey, value: u64) -> Vec<u8> {
    [&value.to_be_bytes()[..], key.as_str().as_bytes()].concat()
}

fn decode_log_entry(bytes: &[u8]) -> Result<(u64, Vec<u8>), Error> {
    let corrupt = || Error::internal("corrupt counter log entry");
    let (value, key) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
    Ok((
        u64::from_be_bytes(value.try_into().map_err(|_| corrupt())?),
        key.to_vec(),
    ))
}

/// Log entry ids: `r<request id>` for increments with a key (a retry finds it), `u<random>` otherwise.
fn entry_id(request_id: Option<&str>) -> Vec<u8> {
    match request_id {
        Some(id) => format!("r{id}").into_bytes(),
        None => format!("u{}", strata_core::kv::tx::TxId::generate().as_str()).into_bytes(),
    }
}

impl EmbeddedCounters {
    pub fn new(store: Store, mode: Mode) -> Self {
        if mode == Mode::Eventual {
            store.start_background("strata-folder", FOLD_EVERY, |store| async move {
                if let Err(e) = fold(&store).await {
                    tracing::warn!(error = %e, "folding the counter log failed; will retry");
                }
            });
        }
        Self { store, mode }
    }
}

/// One folding round: everything in the log (up to a batch) into the totals, exactly once.
pub async fn fold(store: &Store) -> Result<usize, Error> {
    let ids: Vec<Vec<u8>> = store
        .space(Space::CounterLog)
        .iter()
        .take(FOLD_BATCH)
        .map(|entry| {
            entry
                .key()
                .map(|k| k.to_vec())
                .map_err(crate::store::fjall_error)
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    store
        .write(move |staging| {
            let mut folded = 0;
            for id in ids {
                // Re-read inside the command: whatever another round already folded is gone.
                let Some(bytes) = staging.get(Space::CounterLog, &id)? else {
                    continue;
                };
                let (value, key) = decode_log_entry(&bytes)?;
                let mut counter = Counter::decode(staging.get(Space::Counters, &key)?.as_deref())?
                    .unwrap_or_default();
                counter.total += value;
                counter.pending -= value;
                staging.put(Space::Counters, key, counter.encode());
                staging.remove(Space::CounterLog, id.clone());
                if let Some(request) = id.strip_prefix(b"r") {
                    staging.put(Space::CounterRequests, request.to_vec(), Vec::new());
                }
                folded += 1;
            }
            Ok(folded)
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
        let (key, mode) = (key.clone(), self.mode);
        let request = request_id.map(|r| r.as_bytes().to_vec());
        let entry = entry_id(request_id);
        self.store
            .write(move |staging| {
                let stored = Counter::decode(
                    staging
                        .get(Space::Counters, key.as_str().as_bytes())?
                        .as_deref(),
                )?;
                let mut counter = stored.unwrap_or_default();
                // Counted before (a retry after a crash lost the first answer): count nothing more.
                let counted = match &request {
                    Some(r) => {
                        staging.get(Space::CounterRequests, r)?.is_some()
                            || (mode == Mode::Eventual
                                && staging.get(Space::CounterLog, &entry)?.is_some())
                    }
                    None => false,
                };
                if counted {
                    return Ok(match mode {
                        Mode::Strong => Incremented::Total(counter.total),
                        Mode::Eventual => Incremented::Accepted,
                    });
                }
                if value > counter.room() {
                    return Err(overflow(&key, counter.room(), value));
                }
                let answer = match mode {
                    Mode::Strong => {
                        counter.total += value;
                        if let Some(r) = request {
                            staging.put(Space::CounterRequests, r, Vec::new());
                        }
                        Incremented::Total(counter.total)
                    }
                    Mode::Eventual => {
                        counter.pending += value;
                        staging.put(Space::CounterLog, entry, log_entry(&key, value));
                        Incremented::Accepted
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

    async fn get(&self, key: &CounterKey) -> Result<Option<u64>, Error> {
        let bytes = self.store.read(Space::Counters, key.as_str().as_bytes())?;
        Ok(Counter::decode(bytes.as_deref())?.map(|c| c.total))
    }
}
