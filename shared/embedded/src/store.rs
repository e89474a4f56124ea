//! Opening the data directory and wiring the ports.

use crate::writer::{Staging, Writer};
use fjall::Readable;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use strata_core::{Backend, Error, Settings, Stores};

/// One keyspace per domain, so each domain's keys sort and compact on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    Kv,
    Classes,
    Certificates,
    Requests,
    Idempotency,
    Counters,
    CounterLog,
    CounterRequests,
    Widgets,
}

impl Space {
    const ALL: [Space; 9] = [
        Space::Kv,
        Space::Classes,
        Space::Certificates,
        Space::Requests,
        Space::Idempotency,
        Space::Counters,
        Space::CounterLog,
        Space::CounterRequests,
        Space::Widgets,
    ];

    fn name(self) -> &'static str {
        match self {
            Space::Kv => "kv",
            Space::Classes => "classes",
            Space::Certificates => "certificates",
            Space::Requests => "requests",
            Space::Idempotency => "idempotency",
            Space::Counters => "counters",
            Space::CounterLog => "counter_log",
            Space::CounterRequests => "counter_requests",
            Space::Widgets => "widgets",
        }
    }
}

/// The keyspaces, indexed by [`Space`].
#[derive(Clone)]
pub struct Spaces {
    spaces: Vec<Keyspace>,
}

// fjall's keyspaces do not implement `Debug`.
impl std::fmt::Debug for Spaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spaces")
            .field("keyspaces", &self.spaces.len())
            .finish()
    }
}

impl Spaces {
    pub fn get(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }
}

/// One open fjall database and its keyspaces. The writer replaces it as a whole when it reopens the data
/// directory after a failed write, so a snapshot and the keyspaces it reads always belong together.
pub(crate) struct Handles {
    pub(crate) db: Database,
    pub(crate) spaces: Spaces,
}

/// A keyspace's memtable is flushed to disk at this size. fjall's default (64 MiB) across every keyspace
/// lets memtables alone hold hundreds of MiB; at 16 MiB 64 committed transactions of 3.8 MB peak about
/// 60 MiB lower. fjall keeps a keyspace's options from its creation, so this applies to new data
/// directories.
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

impl Handles {
    /// Opens the database in `dir`; fjall replays its journal, so this is every acknowledged write.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, fjall::Error> {
        let db = Database::builder(dir).cache_size(cache_bytes).open()?;
        let spaces = Spaces {
            spaces: Space::ALL
                .iter()
                .enumerate()
                .map(|(index, space)| {
                    debug_assert_eq!(index, *space as usize, "Space::ALL is in declaration order");
                    db.keyspace(space.name(), || {
                        KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Self { db, spaces })
    }

    pub(crate) fn space(&self, space: Space) -> &Keyspace {
        self.spaces.get(space)
    }

    /// A consistent view of every keyspace, for scans.
    pub(crate) fn snapshot(&self) -> fjall::Snapshot {
        self.db.snapshot()
    }
}

/// What the readers and the writer share: the data directory and its current [`Handles`].
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) cache_bytes: u64,
    /// `None` only while the writer reopens the data directory (fjall locks it, so the old database must be
    /// gone before the new one opens).
    current: RwLock<Option<Arc<Handles>>>,
    /// Faults injected by tests ([`Store::inject_refused_batches`], [`Store::inject_lost_answers`]).
    #[cfg(any(test, feature = "faults"))]
    pub(crate) injected: crate::writer::Injected,
}

impl Shared {
    pub(crate) fn current(&self) -> Option<Arc<Handles>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the handles; returns the old ones, so the caller decides when they are dropped.
    pub(crate) fn replace(&self, handles: Option<Arc<Handles>>) -> Option<Arc<Handles>> {
        std::mem::replace(
            &mut *self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            handles,
        )
    }
}

/// An open embedded store. Cloning is cheap; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

// The data directory names the store; the rest (database handles, writer, queues) tells nothing more.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Declared before `shared`: dropping it joins the writer thread, which holds the database too.
    writer: Writer,
    shared: Arc<Shared>,
    /// The counter log's next sequence number and whether its fold loop runs: one per store, however many
    /// times [`Store::stores`] is called. It only ever grows in memory, so reopening the data directory
    /// needs no re-derivation: the log on disk never holds a number at or above it.
    counter_log: Arc<AtomicU64>,
    fold_loop_started: std::sync::atomic::AtomicBool,
    sweeper_started: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (or creates) the store in `dir` with fjall's default block cache (32 MiB).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_with_cache(dir, 32 * 1024 * 1024)
    }

    /// Opens (or creates) the store in `dir`, recovering every write that was acknowledged before, with a block
    /// cache of `cache_bytes` (large data sets read much faster when their hot part fits in it).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        crate::format::check_data_dir(dir)?;
        let handles = Handles::open(dir, cache_bytes).map_err(|e| match e {
            // Said plainly: two servers on one directory is the common mistake.
            fjall::Error::Locked => Error::unavailable(format!(
                "data directory {} is in use by another process",
                dir.display()
            )),
            e => Error::unavailable(format!("cannot open data directory {}: {e}", dir.display())),
        })?;
        // Above every entry left in the log (a restart reuses only numbers already folded away).
        let next_log_entry = handles
            .snapshot()
            .last_key_value(handles.space(Space::CounterLog))
            .and_then(|entry| entry.key().ok())
            .and_then(|key| <[u8; 8]>::try_from(&key[..]).ok())
            .map_or(0, |key| u64::from_be_bytes(key) + 1);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            cache_bytes,
            current: RwLock::new(Some(Arc::new(handles))),
            #[cfg(any(test, feature = "faults"))]
            injected: crate::writer::Injected::default(),
        });
        let writer = Writer::start(shared.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                shared,
                counter_log: Arc::new(AtomicU64::new(next_log_entry)),
                fold_loop_started: std::sync::atomic::AtomicBool::new(false),
                sweeper_started: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The ports, all served by this store. The first call also starts the sweeper of expired records
    /// ([`crate::retention`]), with that call's retention (every port writes expiries with its own).
    pub fn stores(&self, settings: &Settings) -> Stores {
        if !self
            .inner
            .sweeper_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            crate::retention::start(self, settings.retention);
        }
        Stores {
            backend: Backend::Embedded,
            kv: Arc::new(crate::kv::EmbeddedKv::new(self.clone())),
            kv_tx: Arc::new(crate::kv_tx::EmbeddedKvTx::new(
                self.clone(),
                settings.tx_idle_timeout,
                settings.max_open_transactions,
                settings.max_transaction_memory,
            )),
            ledger: Arc::new(crate::ledger::EmbeddedLedger::new(
                self.clone(),
                settings.default_classes.clone(),
                settings.retention,
            )),
            counters: Arc::new(crate::counters::EmbeddedCounters::new(
                self.clone(),
                settings.counter_mode,
                settings.retention,
            )),
            idempotency: Arc::new(crate::idempotency::EmbeddedIdempotency::new(
                self.clone(),
                settings.retention,
            )),
            connections: Arc::new(crate::connections::MemoryConnections::default()),
            widgets: Arc::new(crate::widgets::EmbeddedWidgets::new(self.clone())),
        }
    }

    /// Export and import of this store's data.
    pub fn transfer(&self) -> crate::transfer::EmbeddedTransfer {
        crate::transfer::EmbeddedTransfer::new(self.clone())
    }

    /// Runs `task` every `every` on a thread of its own until the store is dropped. The thread holds the
    /// store only while a round runs, so it never keeps the store open.
    pub(crate) fn start_background<F, Fut>(&self, name: &str, every: std::time::Duration, task: F)
    where
        F: Fn(Store) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        return tracing::error!(error = %e, "cannot start a background runtime");
                    }
                };
                loop {
                    std::thread::sleep(every);
                    let Some(inner) = weak.upgrade() else { return };
                    runtime.block_on(task(Store { inner }));
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start background thread {name}");
        }
    }

    /// The counter log's sequence: the next number to assign.
    pub(crate) fn counter_log_sequence(&self) -> Arc<AtomicU64> {
        self.inner.counter_log.clone()
    }

    /// True the first time only: whoever gets it starts the counter log's fold loop.
    pub(crate) fn claim_fold_loop(&self) -> bool {
        !self
            .inner
            .fold_loop_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs `command` on the writer thread and resolves once its writes are durable (or it failed, in which
    /// case none of its writes are applied).
    pub(crate) async fn write<T, F>(&self, command: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Staging<'_>) -> Result<T, Error> + Send + 'static,
    {
        self.inner.writer.submit(command, |_| {}).await
    }

    /// As [`Self::write`], and `settle` sees the final outcome on the writer thread before the caller is
    /// answered, even if the caller has gone away by then.
    pub(crate) async fn write_settled<T, F, S>(&self, command: F, settle: S) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Staging<'_>) -> Result<T, Error> + Send + 'static,
        S: FnOnce(&Result<T, Error>) + Send + 'static,
    {
        self.inner.writer.submit(command, settle).await
    }

    /// Fault tests: the next `batches` write batches are refused as a full disk refuses them (`503
    /// store_unavailable`, nothing written), without touching the disk.
    #[cfg(any(test, feature = "faults"))]
    pub fn inject_refused_batches(&self, batches: usize) {
        self.inner
            .shared
            .injected
            .refuse_batches
            .store(batches, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fault tests: the next `commands` write commands are carried out (durably, if their batch is) but
    /// their answer is lost on the way back, as when the writer fsynced and the reply path failed.
    #[cfg(any(test, feature = "faults"))]
    pub fn inject_lost_answers(&self, commands: usize) {
        self.inner
            .shared
            .injected
            .lose_answers
            .store(commands, std::sync::atomic::Ordering::SeqCst);
    }

    /// Records in `space` now (a full scan: for tests and tools, not for serving).
    pub fn count(&self, space: Space) -> Result<usize, Error> {
        let view = self.view()?;
        view.snapshot().len(view.space(space)).map_err(fjall_error)
    }

    /// The current database and keyspaces: `503` for the moment the writer reopens the data directory. Hold
    /// the view only while reading, never across a write: the writer's reopen waits for every view to go.
    pub(crate) fn view(&self) -> Result<Arc<Handles>, Error> {
        self.inner
            .shared
            .current()
            .ok_or_else(|| Error::unavailable("the embedded store is reopening its data directory"))
    }

    /// Reads the current value of `key` in `space`. A point read needs no snapshot: it sees one key, whose
    /// value is already durable when fjall applies it. Scans that must see whole batches use a snapshot of
    /// [`Self::view`] (a snapshot per point read cost about a quarter of the GET throughput).
    pub(crate) fn read(&self, space: Space, key: &[u8]) -> Result<Option<fjall::Slice>, Error> {
        self.view()?.space(space).get(key).map_err(fjall_error)
    }
}

/// fjall I/O failures mean the disk cannot take writes (full, read-only, failing): retryable from the
/// client's point of view, and never reported as success.
pub(crate) fn fjall_error(e: fjall::Error) -> Error {
    tracing::error!(error = %e, "embedded store error");
    Error::unavailable("the embedded store cannot complete the operation")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_in_use_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert_eq!(e.code, "store_unavailable");
        assert!(e.message.contains("is in use by another process"), "{e}");
    }
}
