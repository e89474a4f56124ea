//! Key/value transactions on the embedded store.
//!
//! Open transactions live in memory: they hold nothing durable until commit, and a restart of the local
//! server ends them (clients see `404` and start over, as after an expiry). The commit is one command to the
//! writer, which validates the reads and applies the writes in the same batch, durable before the reply.
//! Expired transactions are swept out at most once a second, when a new one begins.
//!
//! A transaction stays in the open set while its commit runs. The writer settles the outcome on its own
//! thread once the batch is durable or refused, before anyone is answered and whether or not the caller is
//! still waiting: a conflict ends the transaction, a refused batch (`503`) leaves it open to be committed
//! again, and a durable commit marks it committed. A commit whose answer went missing after it became
//! durable is reported committed, and a retry of it answers as it did without writing anything again.

use crate::kv::Record;
use crate::{Space, Store};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use strata_core::kv::tx::{
    Began, KvTransactions, Step, TxBuffer, TxId, TxValue, conflict, not_found,
};
use strata_core::kv::{Key, Value};
use strata_core::{Error, Kind};

const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct EmbeddedKvTx {
    store: Store,
    idle_timeout: Duration,
    // A std Mutex, not a tokio one: nothing awaits while it is held. Shared with the writer thread, which
    // settles commits.
    open: Arc<Mutex<Open>>,
}

struct Open {
    txs: HashMap<TxId, OpenTx>,
    last_sweep: Instant,
}

struct OpenTx {
    buffer: TxBuffer,
    deadline: Instant,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Its commit is with the writer.
    Committing,
    /// Durably committed with this many writes; kept only until the answer reaches the caller (or, if the
    /// caller went away, until the idle deadline), so a retry answers the same.
    Committed(usize),
}

impl EmbeddedKvTx {
    pub fn new(store: Store, idle_timeout: Duration) -> Self {
        Self {
            store,
            idle_timeout,
            open: Arc::new(Mutex::new(Open {
                txs: HashMap::new(),
                last_sweep: Instant::now(),
            })),
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
            Some(tx) if tx.state == State::Committing => Err(committing()),
            Some(tx) if tx.deadline > now && tx.state == State::Open => {
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

    /// Hands the transaction to a commit: its plan, or the answer of the commit that already made it
    /// durable.
    fn start_commit(&self, id: &TxId) -> Result<Result<Vec<Step>, usize>, Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        let now = Instant::now();
        match open.txs.get_mut(id) {
            Some(tx) if tx.state == State::Committing => Err(committing()),
            Some(tx) if tx.deadline <= now => {
                open.txs.remove(id);
                Err(not_found(id.as_str()))
            }
            Some(tx) => match tx.state {
                State::Committed(writes) => {
                    open.txs.remove(id);
                    Ok(Err(writes))
                }
                _ => {
                    tx.state = State::Committing;
                    Ok(Ok(tx.buffer.clone().into_plan()))
                }
            },
            None => Err(not_found(id.as_str())),
        }
    }

    /// What a commit whose answer went missing did: the writer settled it before answering.
    fn settled(&self, id: &TxId) -> Option<usize> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        match open.txs.get(id).map(|tx| tx.state) {
            Some(State::Committed(writes)) => {
                open.txs.remove(id);
                Some(writes)
            }
            _ => None,
        }
    }

    /// Forgets a committed transaction whose answer reached its caller.
    fn forget_committed(&self, id: &TxId) {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        if open
            .txs
            .get(id)
            .is_some_and(|tx| matches!(tx.state, State::Committed(_)))
        {
            open.txs.remove(id);
        }
    }
}

/// Settles a commit on the writer thread, once its outcome is final.
fn settle(open: &Mutex<Open>, id: &TxId, outcome: &Result<usize, Error>, idle_timeout: Duration) {
    let mut open = open
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(tx) = open.txs.get_mut(id) else {
        return;
    };
    match outcome {
        Ok(writes) => {
            tx.state = State::Committed(*writes);
            tx.buffer = TxBuffer::default();
            tx.deadline = Instant::now() + idle_timeout;
        }
        // The store could not take it: nothing was written, and the transaction can commit again.
        Err(e) if matches!(e.kind, Kind::Unavailable | Kind::Throttled) => {
            tx.state = State::Open;
            tx.deadline = Instant::now() + idle_timeout;
        }
        // A conflict, or anything else: the transaction is over.
        Err(_) => {
            open.txs.remove(id);
        }
    }
}

/// Another request is committing this transaction right now.
fn committing() -> Error {
    Error::unavailable("a commit of this transaction is running; retry to learn its outcome")
}

#[async_trait]
impl KvTransactions for EmbeddedKvTx {
    async fn begin(&self) -> Result<Began, Error> {
        let id = TxId::generate();
        let mut open = self.open.lock().expect("no panics while holding the lock");
        let now = Instant::now();
        if now.duration_since(open.last_sweep) >= SWEEP_EVERY {
            // A transaction whose commit is with the writer stays until the writer settles it.
            open.txs
                .retain(|_, tx| tx.deadline > now || tx.state == State::Committing);
            open.last_sweep = now;
        }
        open.txs.insert(
            id.clone(),
            OpenTx {
                buffer: TxBuffer::default(),
                deadline: now + self.idle_timeout,
                state: State::Open,
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
        let plan = match self.start_commit(id)? {
            Ok(plan) => plan,
            // A retry of a commit that became durable while its answer went missing.
            Err(writes) => return Ok(writes),
        };
        let settle = {
            let (open, id, idle_timeout) = (self.open.clone(), id.clone(), self.idle_timeout);
            move |outcome: &Result<usize, Error>| settle(&open, &id, outcome, idle_timeout)
        };
        let outcome = self
            .store
            .write_settled(
                move |staging| {
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
                },
                settle,
            )
            .await;
        match outcome {
            Ok(writes) => {
                self.forget_committed(id);
                Ok(writes)
            }
            // The answer went missing (the writer settled the commit before answering): what it settled.
            Err(e) => self.settled(id).ok_or(e),
        }
    }

    async fn rollback(&self, id: &TxId) -> Result<(), Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        match open.txs.get(id).map(|tx| (tx.state, tx.deadline)) {
            Some((State::Committing, _)) => Err(committing()),
            Some((State::Open, deadline)) if deadline > Instant::now() => {
                open.txs.remove(id);
                Ok(())
            }
            Some(_) => {
                open.txs.remove(id);
                Err(not_found(id.as_str()))
            }
            None => Err(not_found(id.as_str())),
        }
    }
}
