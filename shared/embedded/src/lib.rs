//! strata's embedded backend: the store ports on fjall, an LSM-tree in a local data directory.
//!
//! # Layout
//!
//! - [`store`]: [`Store`], which opens the database, its keyspaces ([`Space`]) and the writer, and hands out
//!   the ports as a [`strata_core::Stores`].
//! - [`format`]: the format version byte that starts every stored value, and the data directory's format
//!   marker: an unknown version is refused, never misread.
//! - [`writer`]: the single writer thread. It drains every queued command, runs them one after another
//!   against a staging overlay, writes the whole batch with one fsync, and only then answers every command.
//!   This is group commit: one fsync per batch instead of one per write, and no reply before durability.
//!   A batch the disk refuses is answered `503`; the writer reopens the data directory once the disk takes
//!   writes again.
//! - [`kv`]: the key/value port: record encoding and the commands it sends to the writer.
//! - [`ledger`]: stock certificates: an issue is one writer command (check, allocate, store).
//! - [`connections`]: WebSocket sessions' open transactions, in memory.
//! - [`counters`]: strong and eventual counters; in eventual mode a fold thread moves the log into totals.
//! - [`idempotency`]: `Idempotency-Key` records: running claims in memory, completed responses on disk.
//! - [`widgets`]: widgets; every claim, release and delete is one writer command over both sides.
//! - [`kv_tx`]: key/value transactions: open ones in memory, bounded in number and bytes, the commit as
//!   one writer command.
//! - [`retention`]: expiry of the records kept for idempotency and exactly-once, and their sweeper.
//! - [`transfer`]: export (one snapshot of every keyspace) and import (writes that accept an identical
//!   existing record), for `strata export`, `import` and `backup`.
//!
//! Reads go straight to the keyspaces. fjall applies a batch to its memtables only after its journal write
//! (and the fsync we ask for) has returned, so a reader never sees a write that a crash could still lose.
//! Scans that must see whole batches (listings, the counter log's fold loop) read a snapshot: a plain keyspace scan can
//! see a batch while its items are being applied one by one.

pub mod connections;
pub mod counters;
pub mod format;
pub mod idempotency;
pub mod kv;
pub mod kv_tx;
pub mod ledger;
pub mod retention;
pub mod store;
pub mod transfer;
pub mod widgets;
pub mod writer;

pub use store::{Space, Store};
