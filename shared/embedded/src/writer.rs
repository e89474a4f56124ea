//! The single writer: group commit over fjall.
//!
//! fjall has no group commit of its own, and one fsync per write caps a disk at a few thousand writes per
//! second. Here every write is a command run on one thread. The thread takes every command that is queued,
//! runs each against a [`Staging`] overlay (so later commands in the batch see earlier ones), writes the
//! whole batch atomically with a single fsync, and then answers every command with the outcome. A command
//! that fails leaves no trace in the batch. If the fsync fails, every command of the batch is told so: a
//! client never gets a success that a crash could undo.

use crate::store::{Space, Spaces, fjall_error};
use fjall::{Database, PersistMode};
use std::collections::HashMap;
use strata_core::Error;
use tokio::sync::{mpsc, oneshot};

/// Most commands folded into one batch; bounds the latency a command can add to its batch-mates.
const MAX_BATCH_COMMANDS: usize = 1024;
/// Most bytes staged in one batch, so a burst of large values does not build one huge journal entry.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Commands waiting for the writer; a full queue makes callers wait (back-pressure), not fail.
const QUEUE_DEPTH: usize = 8192;

type Reply = Box<dyn FnOnce(Result<(), Error>) + Send>;
type Job = Box<dyn FnOnce(&mut Staging<'_>) -> Reply + Send>;

/// The handle to the writer thread.
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
    pub(crate) fn start(db: Database, spaces: Spaces) -> Result<Self, Error> {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("strata-writer".into())
            .spawn(move || run(&db, &spaces, jobs))
            .map_err(|e| Error::internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    pub(crate) async fn submit<T, F>(&self, command: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Staging<'_>) -> Result<T, Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |staging| {
            let outcome = command(staging);
            staging.end_command(outcome.is_ok());
            Box::new(move |durable: Result<(), Error>| {
                // The caller may have gone away (client disconnected); the write stands regardless.
                let _ = tx.send(durable.and(outcome));
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

fn run(db: &Database, spaces: &Spaces, mut jobs: mpsc::Receiver<Job>) {
    // `blocking_recv` returns None once every sender is gone: the store was dropped, time to stop.
    while let Some(first) = jobs.blocking_recv() {
        let mut staging = Staging::new(spaces);
        let mut replies = vec![first(&mut staging)];
        while replies.len() < MAX_BATCH_COMMANDS && staging.bytes < MAX_BATCH_BYTES {
            match jobs.try_recv() {
                Ok(job) => replies.push(job(&mut staging)),
                Err(_) => break,
            }
        }
        let durable = staging.commit(db);
        for reply in replies {
            reply(durable.clone());
        }
    }
    if let Err(e) = db.persist(PersistMode::SyncAll) {
        tracing::error!(error = %e, "final persist failed");
    }
}

type Slot = (Space, Vec<u8>);

/// The writes of the batch being built, read through by the commands of that batch.
///
/// `None` marks a removal. Each key appears once in the batch however often it is written, which is also
/// what fjall needs: every item of a batch gets the same sequence number.
pub struct Staging<'a> {
    spaces: &'a Spaces,
    batch: HashMap<Slot, Option<Vec<u8>>>,
    /// The current command's writes, merged into `batch` only if the command succeeds.
    command: HashMap<Slot, Option<Vec<u8>>>,
    bytes: usize,
}

impl<'a> Staging<'a> {
    fn new(spaces: &'a Spaces) -> Self {
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
        Ok(self
            .spaces
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
    /// it visible to readers) only after the journal write and fsync succeeded.
    fn commit(self, db: &Database) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
        for ((space, key), value) in self.batch {
            let keyspace = self.spaces.get(space);
            match value {
                Some(value) => batch.insert(keyspace, key, value),
                None => batch.remove(keyspace, key),
            }
        }
        batch.commit().map_err(fjall_error)
    }
}
