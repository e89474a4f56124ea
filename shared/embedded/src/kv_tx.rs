//! Key/value transactions on the embedded store.
//!
//! Open transactions live in memory: they hold nothing durable until commit, and a restart of the local
//! server ends them (clients see `404` and start over, as after an expiry). The commit is one command to the
//! writer, which validates the reads and applies the writes in the same batch, durable before the reply.
//!
//! Open transactions are bounded together: at most `max_open_transactions` of them (`POST /kv/transactions`
//! past it: `503 too_many_transactions`, nothing created) and at most `max_transaction_memory` bytes
//! buffered by all of them, as [`TxBuffer::memory`] counts them plus [`TX_OVERHEAD_BYTES`] each (the read
//! or write that would pass it: `503 transaction_memory_full`, the transaction unchanged and still open).
//! Every transaction's charge is released when it leaves the open set: committed, rolled back, failed or
//! expired. Expired transactions are swept every second by a thread of their own, whether or not anyone
//! begins another, so the capacity they held comes back by the time a refused client retries
//! (`retry-after: 1`).
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
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};
use strata_core::kv::tx::{
    Began, KvTransactions, MemoryBudget, TX_OVERHEAD_BYTES, TxBuffer, TxId, TxValue, conflict,
    not_found, too_many,
};
use strata_core::kv::{Key, Value};
use strata_core::{Error, Kind};

/// How often expired transactions are swept: no longer than the `retry-after` a refused client gets.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct EmbeddedKvTx {
    store: Store,
    idle_timeout: Duration,
    max_open: usize,
    // A std Mutex, not a tokio one: nothing awaits while it is held. Shared with the writer thread, which
    // settles commits, and with the sweeper.
    open: Arc<Mutex<Open>>,
}

// Without the open transactions: their buffers hold clients' values, and reading them takes the lock.
impl std::fmt::Debug for EmbeddedKvTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKvTx")
            .field("store", &self.store)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_open", &self.max_open)
            .finish_non_exhaustive()
    }
}

/// The open transactions and what they hold. Every insertion and removal goes through its methods, so
/// the budget always equals the sum of the charges of the transactions in `txs`.
struct Open {
    txs: HashMap<TxId, OpenTx>,
    budget: MemoryBudget,
}

struct OpenTx {
    /// Shared with a running commit, which reads the writes from it instead of copying them: committing
    /// never holds a transaction's bytes twice.
    buffer: Arc<TxBuffer>,
    deadline: Instant,
    state: State,
}

impl OpenTx {
    /// What it is charged against the budget.
    fn charge(&self) -> u64 {
        TX_OVERHEAD_BYTES + self.buffer.memory()
    }
}

impl Open {
    fn remove(&mut self, id: &TxId) {
        if let Some(tx) = self.txs.remove(id) {
            self.budget.release(tx.charge());
        }
    }

    /// Drops every expired transaction but those whose commit is with the writer (it settles them).
    fn sweep(&mut self, now: Instant) {
        let budget = &mut self.budget;
        self.txs.retain(|_, tx| {
            let keep = tx.deadline > now || tx.state == State::Committing;
            if !keep {
                budget.release(tx.charge());
            }
            keep
        });
    }

    /// Runs `f` on the buffer of transaction `id` with the budget; what `f` adds or frees is charged to it.
    fn buffer<T>(
        &mut self,
        id: &TxId,
        f: impl FnOnce(&mut TxBuffer, &mut MemoryBudget) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let Self { txs, budget } = self;
        let tx = txs.get_mut(id).ok_or_else(|| not_found(id.as_str()))?;
        // Alone with it unless a commit that ended a moment ago has not let go yet: then this copies.
        f(Arc::make_mut(&mut tx.buffer), budget)
    }
}

/// Sweeps expired transactions every [`SWEEP_EVERY`] until the port is dropped.
fn start_sweeper(open: Weak<Mutex<Open>>) {
    let spawned = std::thread::Builder::new()
        .name("strata-tx-sweeper".into())
        .spawn(move || {
            loop {
                std::thread::sleep(SWEEP_EVERY);
                let Some(open) = open.upgrade() else { return };
                open.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .sweep(Instant::now());
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the transaction sweeper");
    }
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
    /// `max_open` transactions at most, buffering `max_memory` bytes at most together.
    pub fn new(store: Store, idle_timeout: Duration, max_open: usize, max_memory: u64) -> Self {
        let open = Arc::new(Mutex::new(Open {
            txs: HashMap::new(),
            budget: MemoryBudget::new(max_memory),
        }));
        start_sweeper(Arc::downgrade(&open));
        Self {
            store,
            idle_timeout,
            max_open,
            open,
        }
    }

    /// Bytes charged by the open transactions now.
    pub fn memory_used(&self) -> u64 {
        self.open
            .lock()
            .expect("no panics while holding the lock")
            .budget
            .used()
    }

    /// Transactions in the open set now (expired ones until swept).
    pub fn open_count(&self) -> usize {
        self.open
            .lock()
            .expect("no panics while holding the lock")
            .txs
            .len()
    }

    /// Runs `f` on the buffer of open transaction `id` and the budget, restarting its idle timer; `404` if
    /// it is unknown or expired.
    fn with_open<T>(
        &self,
        id: &TxId,
        f: impl FnOnce(&mut TxBuffer, &mut MemoryBudget) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        let now = Instant::now();
        match open.txs.get_mut(id) {
            Some(tx) if tx.state == State::Committing => Err(committing()),
            Some(tx) if tx.deadline > now && tx.state == State::Open => {
                tx.deadline = now + self.idle_timeout;
                open.buffer(id, f)
            }
            Some(_) => {
                open.remove(id);
                Err(not_found(id.as_str()))
            }
            None => Err(not_found(id.as_str())),
        }
    }

    /// Hands the transaction to a commit: its plan, or the answer of the commit that already made it
    /// durable.
    fn start_commit(&self, id: &TxId) -> Result<Result<Arc<TxBuffer>, usize>, Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        let now = Instant::now();
        match open.txs.get_mut(id) {
            Some(tx) if tx.state == State::Committing => Err(committing()),
            Some(tx) if tx.deadline <= now => {
                open.remove(id);
                Err(not_found(id.as_str()))
            }
            Some(tx) => match tx.state {
                State::Committed(writes) => {
                    open.remove(id);
                    Ok(Err(writes))
                }
                _ => {
                    tx.state = State::Committing;
                    Ok(Ok(tx.buffer.clone()))
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
                open.remove(id);
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
            open.remove(id);
        }
    }
}

/// Settles a commit on the writer thread, once its outcome is final.
fn settle(open: &Mutex<Open>, id: &TxId, outcome: &Result<usize, Error>, idle_timeout: Duration) {
    let mut open = open
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Open { txs, budget } = &mut *open;
    let Some(tx) = txs.get_mut(id) else {
        return;
    };
    match outcome {
        Ok(writes) => {
            // Only the answer is kept: its buffer's bytes go back to the budget.
            budget.release(tx.buffer.memory());
            tx.state = State::Committed(*writes);
            tx.buffer = Arc::default();
            tx.deadline = Instant::now() + idle_timeout;
        }
        // The store could not take it: nothing was written, and the transaction can commit again.
        Err(e) if matches!(e.kind, Kind::Unavailable | Kind::Throttled) => {
            tx.state = State::Open;
            tx.deadline = Instant::now() + idle_timeout;
        }
        // A conflict, or anything else: the transaction is over.
        Err(_) => open.remove(id),
    }
}

/// Another request is committing this transaction right now.
fn committing() -> Error {
    Error::unavailable("a commit of this transaction is running; retry to learn its outcome")
}

#[async_trait]
impl KvTransactions for EmbeddedKvTx {
    async fn begin(&self, id: TxId) -> Result<Began, Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        let now = Instant::now();
        // Expired ones count until the sweeper's next round; nothing is created past the cap.
        if open.txs.len() >= self.max_open {
            return Err(too_many(self.max_open));
        }
        open.budget.charge(TX_OVERHEAD_BYTES)?;
        open.txs.insert(
            id.clone(),
            OpenTx {
                buffer: Arc::default(),
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
        let own = self.with_open(id, |buffer, _| {
            Ok(buffer
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
        self.with_open(id, |buffer, budget| {
            buffer.record_read(key, record.version, budget)
        })?;
        Ok(record.value.map(|value| TxValue {
            value,
            version: Some(record.version),
        }))
    }

    async fn stage(&self, id: &TxId, key: &Key, value: Option<Value>) -> Result<(), Error> {
        self.with_open(id, |buffer, budget| buffer.stage(key, value, budget))
    }

    async fn commit(&self, id: &TxId) -> Result<usize, Error> {
        let buffer = match self.start_commit(id)? {
            Ok(buffer) => buffer,
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
                    let plan = buffer.plan();
                    // Validate every read first: a conflict must leave the batch untouched.
                    let mut current = Vec::with_capacity(plan.len());
                    for step in &plan {
                        let bytes = staging.get(Space::Kv, step.key.as_str().as_bytes())?;
                        let record = Record::decode_opt(bytes.as_deref())?;
                        if step
                            .expect
                            .is_some_and(|expected| expected != record.version)
                        {
                            return Err(conflict(step.key));
                        }
                        current.push(record.version);
                    }
                    let mut writes = 0;
                    for (step, version) in plan.into_iter().zip(current) {
                        if let Some(value) = step.write {
                            let record = Record {
                                version: version + 1,
                                value: value.map(|v| v.as_str().to_owned()),
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
                open.remove(id);
                Ok(())
            }
            Some(_) => {
                open.remove(id);
                Err(not_found(id.as_str()))
            }
            None => Err(not_found(id.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::kv::tx::ENTRY_OVERHEAD_BYTES;

    fn k(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    fn v(n: usize) -> Value {
        Value::parse("x".repeat(n)).unwrap()
    }

    #[tokio::test]
    async fn the_count_cap_refuses_a_begin_and_a_finished_transaction_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let txs = EmbeddedKvTx::new(
            Store::open(dir.path()).unwrap(),
            SWEEP_EVERY * 60,
            3,
            1 << 20,
        );
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(txs.begin(TxId::generate()).await.unwrap().id);
        }
        let e = txs.begin(TxId::generate()).await.unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_ref()),
            (Kind::Unavailable, "too_many_transactions")
        );
        assert_eq!(txs.open_count(), 3, "nothing was created");
        txs.rollback(&ids[0]).await.unwrap();
        txs.stage(&ids[1], &k("a"), Some(v(10))).await.unwrap();
        assert_eq!(txs.commit(&ids[1]).await.unwrap(), 1);
        txs.begin(TxId::generate()).await.unwrap();
        txs.begin(TxId::generate()).await.unwrap();
        assert_eq!(
            txs.begin(TxId::generate()).await.unwrap_err().code,
            "too_many_transactions"
        );
    }

    #[tokio::test]
    async fn the_memory_cap_refuses_the_write_that_would_pass_it_and_every_end_gives_the_bytes_back()
     {
        let dir = tempfile::tempdir().unwrap();
        let write = 1 + 100_000 + ENTRY_OVERHEAD_BYTES;
        let max = 2 * TX_OVERHEAD_BYTES + 2 * write + 1000;
        let txs = EmbeddedKvTx::new(Store::open(dir.path()).unwrap(), SWEEP_EVERY * 60, 100, max);
        let (a, b) = (
            txs.begin(TxId::generate()).await.unwrap().id,
            txs.begin(TxId::generate()).await.unwrap().id,
        );
        txs.stage(&a, &k("a"), Some(v(100_000))).await.unwrap();
        txs.stage(&b, &k("b"), Some(v(100_000))).await.unwrap();
        assert_eq!(txs.memory_used(), 2 * TX_OVERHEAD_BYTES + 2 * write);
        let e = txs.stage(&a, &k("c"), Some(v(100_000))).await.unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_ref(), e.retry_after),
            (Kind::Unavailable, "transaction_memory_full", Some(1))
        );
        // unchanged and usable: its own write reads back, the refused one is not there, and it commits
        assert_eq!(
            txs.get(&a, &k("a")).await.unwrap().unwrap().value.len(),
            100_000
        );
        assert_eq!(txs.memory_used(), 2 * TX_OVERHEAD_BYTES + 2 * write);
        assert_eq!(txs.commit(&a).await.unwrap(), 1);
        assert_eq!(txs.memory_used(), TX_OVERHEAD_BYTES + write);
        txs.rollback(&b).await.unwrap();
        assert_eq!(txs.memory_used(), 0);
        // a refused commit keeps the bytes charged (the transaction stays open), a conflict gives them back
        let c = txs.begin(TxId::generate()).await.unwrap().id;
        txs.stage(&c, &k("c"), Some(v(10))).await.unwrap();
        txs.store.inject_refused_batches(1);
        assert_eq!(txs.commit(&c).await.unwrap_err().code, "store_unavailable");
        assert_eq!(
            txs.memory_used(),
            TX_OVERHEAD_BYTES + 1 + 10 + ENTRY_OVERHEAD_BYTES
        );
        assert_eq!(txs.commit(&c).await.unwrap(), 1);
        assert_eq!(txs.memory_used(), 0);
    }

    #[tokio::test]
    async fn expired_transactions_are_swept_on_a_timer_and_give_their_bytes_back() {
        let dir = tempfile::tempdir().unwrap();
        let txs = EmbeddedKvTx::new(
            Store::open(dir.path()).unwrap(),
            Duration::from_millis(200),
            2,
            1 << 20,
        );
        for _ in 0..2 {
            let id = txs.begin(TxId::generate()).await.unwrap().id;
            txs.stage(&id, &k("a"), Some(v(50_000))).await.unwrap();
        }
        assert_eq!(txs.open_count(), 2);
        // no begin, no request at all: only the sweeper can free them
        let deadline = Instant::now() + Duration::from_secs(10);
        while txs.open_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "expired transactions were never swept"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(txs.memory_used(), 0);
        txs.begin(TxId::generate()).await.unwrap();
    }
}
