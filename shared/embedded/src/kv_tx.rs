//! Key/value transactions on the embedded store.
//!
//! Open transactions live in memory: they hold nothing durable until commit, and a restart of the local
//! server ends them (clients see `404` and start over, as after an expiry). The commit is one command to the
//! writer, which validates the reads and applies the writes in the same batch, durable before the reply.
//! Expired transactions are swept out at most once a second, when a new one begins.

use crate::kv::Record;
use crate::{Space, Store};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use strata_core::Error;
use strata_core::kv::tx::{Began, KvTransactions, TxBuffer, TxId, TxValue, conflict, not_found};
use strata_core::kv::{Key, Value};

const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct EmbeddedKvTx {
    store: Store,
    idle_timeout: Duration,
    // A std Mutex, not a tokio one: nothing awaits while it is held.
    open: Mutex<Open>,
}

struct Open {
    txs: HashMap<TxId, OpenTx>,
    last_sweep: Instant,
}

struct OpenTx {
    buffer: TxBuffer,
    deadline: Instant,
}

impl EmbeddedKvTx {
    pub fn new(store: Store, idle_timeout: Duration) -> Self {
        Self {
            store,
            idle_timeout,
            open: Mutex::new(Open {
                txs: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Runs `f` on the open transaction `id`, restarting its idle timer; `404` if it is unknown or expired.
    fn with_open<T>(
        &self,
        id: &TxId,
        f: impl FnOnce(&mut OpenTx) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        let now = Instant::now();
        match open.txs.get_mut(id) {
            Some(tx) if tx.deadline > now => {
                tx.deadline = now + self.idle_timeout;
                f(tx)
            }
            Some(_) => {
                open.txs.remove(id);
                Err(not_found(id.as_str()))
            }
            None => Err(not_found(id.as_str())),
        }
    }

    /// Ends the transaction and hands back its buffer.
    fn take(&self, id: &TxId) -> Result<TxBuffer, Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        match open.txs.remove(id) {
            Some(tx) if tx.deadline > Instant::now() => Ok(tx.buffer),
            _ => Err(not_found(id.as_str())),
        }
    }
}

#[async_trait]
impl KvTransactions for EmbeddedKvTx {
    async fn begin(&self) -> Result<Began, Error> {
        let id = TxId::generate();
        let mut open = self.open.lock().expect("no panics while holding the lock");
        let now = Instant::now();
        if now.duration_since(open.last_sweep) >= SWEEP_EVERY {
            open.txs.retain(|_, tx| tx.deadline > now);
            open.last_sweep = now;
        }
        open.txs.insert(
            id.clone(),
            OpenTx {
                buffer: TxBuffer::default(),
                deadline: now + self.idle_timeout,
            },
        );
        Ok(Began {
            id,
            expires_at: SystemTime::now() + self.idle_timeout,
        })
    }

    async fn get(&self, id: &TxId, key: &Key) -> Result<Option<TxValue>, Error> {
        let own = self.with_open(id, |tx| {
            Ok(tx
                .buffer
                .own_write(key)
                .map(|v| v.map(|v| v.as_str().to_owned())))
        })?;
        if let Some(own) = own {
            return Ok(own.map(|value| TxValue {
                value,
                version: None,
            }));
        }
        let record = Record::decode_opt(
            self.store
                .read(Space::Kv, key.as_str().as_bytes())?
                .as_deref(),
        )?;
        self.with_open(id, |tx| tx.buffer.record_read(key, record.version))?;
        Ok(record.value.map(|value| TxValue {
            value,
            version: Some(record.version),
        }))
    }

    async fn stage(&self, id: &TxId, key: &Key, value: Option<Value>) -> Result<(), Error> {
        self.with_open(id, |tx| tx.buffer.stage(key, value))
    }

    async fn commit(&self, id: &TxId) -> Result<usize, Error> {
        let plan = self.take(id)?.into_plan();
        self.store
            .write(move |staging| {
                // Validate every read first: a conflict must leave the batch untouched.
                let mut current = Vec::with_capacity(plan.len());
                for step in &plan {
                    let bytes = staging.get(Space::Kv, step.key.as_str().as_bytes())?;
                    let record = Record::decode_opt(bytes.as_deref())?;
                    if step
                        .expect
                        .is_some_and(|expected| expected != record.version)
                    {
                        return Err(conflict(&step.key));
                    }
                    current.push(record.version);
                }
                let mut writes = 0;
                for (step, version) in plan.into_iter().zip(current) {
                    if let Some(value) = step.write {
                        let record = Record {
                            version: version + 1,
                            value: value.map(Value::into_string),
                        };
                        staging.put(
                            Space::Kv,
                            step.key.as_str().as_bytes().to_vec(),
                            record.encode(),
                        );
                        writes += 1;
                    }
                }
                Ok(writes)
            })
            .await
    }

    async fn rollback(&self, id: &TxId) -> Result<(), Error> {
        self.take(id).map(drop)
    }
}
