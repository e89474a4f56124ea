//! The single writer: group commit over fjall.
//!
//! fjall has no group commit of its own, and one fsync per write caps a disk at a few thousand writes per
//! second. Here every write is a command run on one thread. The thread takes every command that is queued,
//! runs each against a [`Staging`] overlay (so later commands in the batch see earlier ones), writes the
//! whole batch atomically with a single fsync, and then answers every command with the outcome. A command
//! that fails leaves no trace in the batch. If the fsync fails, every command of the batch is told so: a
//! client never gets a success that a crash could undo.
//!
//! When the disk refuses a batch (full, read-only, failing), fjall applies none of it to its memtables, so
//! readers never see it, but it refuses every later write until the database is opened again. The writer
//! then answers every command `503 store_unavailable` and keeps the old database for readers. Before the
//! next batch (at most every [`RETRY_EVERY`]) it checks that the data directory takes a write and an fsync
//! again, closes the old database and opens it afresh from disk, which is exactly the acknowledged writes,
//! with one exception it repairs: closing flushes what the journal still buffered of the refused batch, and
//! if that completes it, the reopened database would show it. The writer remembers what the refused batch
//! overwrote and, if any of it shows after the reopen, writes the old values back (durably) before it lets
//! readers or commands see the new database.

use crate::store::{Handles, Shared, Space, Spaces, fjall_error};
use fjall::{Database, PersistMode};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
#[cfg(any(test, feature = "faults"))]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use strata_core::Error;
use tokio::sync::{mpsc, oneshot};

/// Most commands folded into one batch; bounds the latency a command can add to its batch-mates.
const MAX_BATCH_COMMANDS: usize = 1024;
/// Most bytes staged in one batch, so a burst of large values does not build one huge journal entry.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Commands waiting for the writer; a full queue makes callers wait (back-pressure), not fail.
const QUEUE_DEPTH: usize = 8192;
/// After a refused batch, how often the writer checks whether the disk takes writes again. Below the
/// `retry-after: 1` a refused client gets, so a client that waits as told finds the store writable.
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// How much the check writes and fsyncs: a full disk with a few bytes free must not pass it.
const PROBE_BYTES: usize = 256 * 1024;
/// The check's file, in the data directory (the same file system as the journal), removed right after.
const PROBE_FILE: &str = "strata-write-probe";
/// How long a reopen waits for readers to let go of the old database (fjall locks the directory).
const REOPEN_PATIENCE: Duration = Duration::from_secs(5);

/// Told whether the batch is durable, and whether to answer the caller (`false` only when a fault test
/// makes the answer go missing after the outcome is settled).
type Reply = Box<dyn FnOnce(Result<(), Error>, bool) + Send>;
type Job = Box<dyn FnOnce(&mut Staging<'_>) -> Reply + Send>;

/// The handle to the writer thread.
#[derive(Debug)]
pub struct Writer {
    /// `None` only while dropping: closing the queue is what tells the thread to finish.
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// Waits for the thread to finish the queued commands and close the database, so the data directory can
    /// be reopened as soon as the store is gone.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    pub(crate) fn start(shared: Arc<Shared>) -> Result<Self, Error> {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("strata-writer".into())
            .spawn(move || run(&shared, jobs))
            .map_err(|e| Error::internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Runs `command` in the next batch; `settle` sees the final outcome (durable or not) on the writer
    /// thread before the caller is answered, and also when the caller has gone away meanwhile.
    pub(crate) async fn submit<T, F, S>(&self, command: F, settle: S) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Staging<'_>) -> Result<T, Error> + Send + 'static,
        S: FnOnce(&Result<T, Error>) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let settle = Settle(Some(settle), std::marker::PhantomData);
        let job: Job = Box::new(move |staging| {
            let outcome = command(staging);
            staging.end_command(outcome.is_ok());
            Box::new(move |durable: Result<(), Error>, answer: bool| {
                let outcome = durable.and(outcome);
                settle.run(&outcome);
                // The caller may have gone away (client disconnected); the write stands regardless.
                if answer {
                    let _ = tx.send(outcome);
                }
            })
        });
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| Error::unavailable("the embedded store is closed"))?;
        queue
            .send(job)
            .await
            .map_err(|_| Error::unavailable("the embedded store is shutting down"))?;
        rx.await
            .map_err(|_| Error::internal("the writer stopped before answering"))?
    }
}

/// A command's settle hook, run exactly once: with the outcome, or, if the command is dropped before the
/// writer ran it (the store closing, the caller giving up while the queue was full), with `503`, since
/// nothing of it was written.
struct Settle<T, S: FnOnce(&Result<T, Error>)>(Option<S>, std::marker::PhantomData<fn(&T)>);

impl<T, S: FnOnce(&Result<T, Error>)> Settle<T, S> {
    fn run(mut self, outcome: &Result<T, Error>) {
        if let Some(settle) = self.0.take() {
            settle(outcome);
        }
    }
}

impl<T, S: FnOnce(&Result<T, Error>)> Drop for Settle<T, S> {
    fn drop(&mut self) {
        if let Some(settle) = self.0.take() {
            settle(&Err(Error::unavailable(
                "the write never reached the writer; nothing was written",
            )));
        }
    }
}

/// What a command is told when the store cannot take writes.
fn refused() -> Error {
    Error::unavailable(
        "the data directory cannot take writes (full, read-only or failing); nothing was written",
    )
}

fn run(shared: &Shared, mut jobs: mpsc::Receiver<Job>) {
    let mut fault: Option<Fault> = None;
    // `blocking_recv` returns None once every sender is gone: the store was dropped, time to stop.
    while let Some(first) = jobs.blocking_recv() {
        if let Some(refused_batch) = fault.take() {
            fault = recover(shared, refused_batch);
        }
        let handles = shared.current();
        let mut staging = Staging::new(handles.as_deref().map(|h| &h.spaces));
        let mut replies = vec![first(&mut staging)];
        while replies.len() < MAX_BATCH_COMMANDS && staging.bytes < MAX_BATCH_BYTES {
            match jobs.try_recv() {
                Ok(job) => replies.push(job(&mut staging)),
                Err(_) => break,
            }
        }
        let durable = match (&fault, &handles) {
            // A fault test's refused batch: nothing reaches the disk, so there is nothing to recover.
            #[cfg(any(test, feature = "faults"))]
            (None, Some(_)) if take(&shared.injected.refuse_batches) => Err(refused()),
            (None, Some(handles)) => match staging.commit(&handles.db) {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "the disk refused a batch; writes answer 503 until it takes them again");
                    fault = Some(Fault::new(staging, handles));
                    Err(refused())
                }
            },
            _ => Err(refused()),
        };
        for reply in replies {
            #[cfg(any(test, feature = "faults"))]
            let answer = !take(&shared.injected.lose_answers);
            #[cfg(not(any(test, feature = "faults")))]
            let answer = true;
            reply(durable.clone(), answer);
        }
    }
    if fault.is_none()
        && let Some(handles) = shared.current()
        && let Err(e) = handles.db.persist(PersistMode::SyncAll)
    {
        tracing::error!(error = %e, "final persist failed");
    }
}

/// Faults a test asks for, each counted down by one per use (only with the `faults` feature, which the
/// test crate turns on, and in this crate's own tests).
#[cfg(any(test, feature = "faults"))]
#[derive(Debug, Default)]
pub(crate) struct Injected {
    /// Batches to refuse as a full disk would (answered `503`, nothing written).
    pub(crate) refuse_batches: AtomicUsize,
    /// Commands whose outcome is settled (durable or not) but whose answer never reaches the caller.
    pub(crate) lose_answers: AtomicUsize,
}

#[cfg(any(test, feature = "faults"))]
fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The value a refused batch overwrote in one slot (`Some(None)`: the slot was empty); `None` when it could
/// not be read (the disk failing reads too), so it cannot be put back, only reported.
type Before = Option<Option<Vec<u8>>>;

/// A batch the disk refused: every slot it wrote, with the value it overwrote.
struct Fault {
    slots: Vec<(Slot, Before)>,
    next_attempt: Instant,
}

impl Fault {
    /// Reads what the batch would have overwritten from the database that refused it: fjall applies a batch
    /// to its memtables only after the journal took it, so that database still shows the values before it.
    fn new(staging: Staging<'_>, handles: &Handles) -> Self {
        let slots = staging
            .batch
            .into_iter()
            .map(|((space, key), _)| {
                let before = match handles.space(space).get(&key) {
                    Ok(value) => Some(value.map(|v| v.to_vec())),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the value a refused write overwrote");
                        None
                    }
                };
                ((space, key), before)
            })
            .collect();
        Self {
            slots,
            next_attempt: Instant::now() + RETRY_EVERY,
        }
    }

    fn later(mut self) -> Option<Self> {
        self.next_attempt = Instant::now() + RETRY_EVERY;
        Some(self)
    }
}

/// Tries to bring the store back after a refused batch; `None` once it takes writes again.
fn recover(shared: &Shared, fault: Fault) -> Option<Fault> {
    if Instant::now() < fault.next_attempt {
        return Some(fault);
    }
    if let Err(e) = probe(&shared.dir) {
        tracing::debug!(error = %e, "the data directory still refuses writes");
        return fault.later();
    }
    // Readers get 503 for the moment the directory has no open database; the old one goes first, because
    // fjall locks the directory. Closing it flushes whatever its journal still buffers.
    drop(shared.replace(None));
    let deadline = Instant::now() + REOPEN_PATIENCE;
    let handles = loop {
        match Handles::open(&shared.dir, shared.cache_bytes) {
            Ok(handles) => break handles,
            // A reader still holds the old database for a moment.
            Err(fjall::Error::Locked) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                tracing::warn!(error = %e, "reopening the data directory failed; will retry");
                return fault.later();
            }
        }
    };
    if let Err(e) = put_back(&handles, &fault) {
        tracing::warn!(error = %e, "undoing a refused batch failed; will retry");
        return fault.later();
    }
    shared.replace(Some(Arc::new(handles)));
    tracing::warn!("the data directory takes writes again; the store is reopened");
    None
}

/// Writes back what the refused batch overwrote, if the reopened database shows any of the batch (a journal
/// batch is all or nothing, so then it shows all of it).
fn put_back(handles: &Handles, fault: &Fault) -> Result<(), fjall::Error> {
    let mut landed = false;
    for ((space, key), before) in &fault.slots {
        let now = handles.space(*space).get(key)?.map(|v| v.to_vec());
        if before.as_ref().is_some_and(|before| *before != now) {
            landed = true;
        }
    }
    if !landed {
        return Ok(());
    }
    tracing::warn!("a refused batch reached the journal after all; writing back what it overwrote");
    let mut batch = handles.db.batch().durability(Some(PersistMode::SyncAll));
    for ((space, key), before) in &fault.slots {
        let keyspace = handles.space(*space);
        match before {
            Some(Some(value)) => batch.insert(keyspace, key.as_slice(), value.as_slice()),
            Some(None) => batch.remove(keyspace, key.as_slice()),
            None => tracing::error!(
                ?space,
                "a refused write is visible and its old value is unknown; it stays"
            ),
        }
    }
    batch.commit()
}

/// Whether the data directory takes a write and an fsync right now.
fn probe(dir: &std::path::Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

type Slot = (Space, Vec<u8>);

/// The writes of the batch being built, read through by the commands of that batch.
///
/// `None` marks a removal. Each key appears once in the batch however often it is written, which is also
/// what fjall needs: every item of a batch gets the same sequence number.
#[derive(Debug)]
pub struct Staging<'a> {
    /// `None` while the data directory is being reopened: every read fails with `503`.
    spaces: Option<&'a Spaces>,
    batch: HashMap<Slot, Option<Vec<u8>>>,
    /// The current command's writes, merged into `batch` only if the command succeeds.
    command: HashMap<Slot, Option<Vec<u8>>>,
    bytes: usize,
}

impl<'a> Staging<'a> {
    fn new(spaces: Option<&'a Spaces>) -> Self {
        Self {
            spaces,
            batch: HashMap::new(),
            command: HashMap::new(),
            bytes: 0,
        }
    }

    /// The latest value of `key`: this command's writes, then the batch's, then the store.
    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let slot = (space, key.to_vec());
        if let Some(staged) = self.command.get(&slot).or_else(|| self.batch.get(&slot)) {
            return Ok(staged.clone());
        }
        let spaces = self.spaces.ok_or_else(refused)?;
        Ok(spaces
            .get(space)
            .get(key)
            .map_err(fjall_error)?
            .map(|v| v.to_vec()))
    }

    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.command.insert((space, key), Some(value));
    }

    pub fn remove(&mut self, space: Space, key: Vec<u8>) {
        self.command.insert((space, key), None);
    }

    fn end_command(&mut self, keep: bool) {
        if !keep {
            self.command.clear();
            return;
        }
        for (slot, value) in self.command.drain() {
            self.bytes += slot.1.len() + value.as_ref().map_or(0, Vec::len);
            self.batch.insert(slot, value);
        }
    }

    /// Writes the batch atomically and waits for the fsync. fjall applies the batch to its memtables (makes
    /// it visible to readers) only after the journal write and fsync succeeded. Keeps the batch, so a refused
    /// one can be remembered.
    fn commit(&self, db: &Database) -> Result<(), fjall::Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let Some(spaces) = self.spaces else {
            return Err(fjall::Error::Poisoned);
        };
        // `fdatasync`, not `fsync`: fjall preallocates each journal file (and fsyncs it and its directory
        // when it creates it), so a batch's data and what is needed to read it back are all this flushes;
        // the timestamps `fsync` would also write are not needed to recover anything.
        let mut batch = db.batch().durability(Some(PersistMode::SyncData));
        for ((space, key), value) in &self.batch {
            let keyspace = spaces.get(*space);
            match value {
                Some(value) => batch.insert(keyspace, key.as_slice(), value.as_slice()),
                None => batch.remove(keyspace, key.as_slice()),
            }
        }
        batch.commit()
    }
}
