//! Key/value transactions: optimistic, serializable, all-or-nothing.
//!
//! A transaction buffers its writes and remembers the version of every key it read from the store (0 for a
//! key that never existed). At commit, every remembered version must still be current, otherwise the commit
//! fails with `409 conflict` naming the first such key (in key order) and nothing is written. Keys only
//! written ("blind writes") are not checked: the later commit wins. This is optimistic concurrency control,
//! and with validation of every read it is serializable.
//!
//! Limits: at most [`MAX_TX_KEYS`] distinct keys read from the store or written, and at most
//! [`MAX_TX_BYTES`] of keys and values written. Both come from DynamoDB: a commit is one
//! `TransactWriteItems` of at most 100 actions (one per key, plus the transaction record) and 4 MB.
//!
//! A store that keeps open transactions in its own memory (the embedded store) also bounds them together: at
//! most so many open at once ([`too_many`]) and at most so many bytes buffered by all of them
//! ([`MemoryBudget`]). Both refusals are `503` with `retry-after`: the client did nothing wrong, the server
//! is busy, and capacity comes back as other transactions commit, roll back or expire.

use crate::kv::{Key, Value};
use crate::{Error, Kind};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Most distinct keys a transaction may read from the store or write.
pub const MAX_TX_KEYS: usize = 99;
/// Most bytes of keys and values a transaction may write (a little under DynamoDB's 4 MB, which also
/// counts attribute names and numbers).
pub const MAX_TX_BYTES: usize = 4_000_000;

/// What a transaction is charged against the memory budget for itself, whatever it buffers: its id (twice:
/// the map key and the entry), its entry in the map of open transactions, its state and its two empty maps.
pub const TX_OVERHEAD_BYTES: u64 = 256;
/// What each key a transaction holds (read or written) is charged beyond the key's and the value's bytes:
/// a B-tree slot, the key's and the value's `String` headers and the version read.
pub const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// How long a refused client should wait: expired transactions are swept every second.
const BUSY_RETRY_AFTER: u64 = 1;

/// `POST /kv/transactions` while `max` transactions are open: nothing was created.
pub fn too_many(max: usize) -> Error {
    Error::new(
        Kind::Unavailable,
        "too_many_transactions",
        format!(
            "{max} transactions are open, the most this server holds at once; nothing was created, retry later"
        ),
    )
    .with("max_open_transactions", max)
    .retry_after(BUSY_RETRY_AFTER)
}

/// A read or write that would take the bytes buffered by all open transactions past `max`: nothing of it
/// was buffered and the transaction is unchanged and still open.
pub fn memory_full(max: u64) -> Error {
    Error::new(
        Kind::Unavailable,
        "transaction_memory_full",
        format!(
            "open transactions buffer {max} bytes, the most this server holds; this operation was not \
             buffered and the transaction is unchanged; retry later"
        ),
    )
    .with("max_transaction_memory", max)
    .retry_after(BUSY_RETRY_AFTER)
}

/// The bytes all open transactions of one store hold together, against the most they may hold.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    used: u64,
    max: u64,
}

impl MemoryBudget {
    /// A budget of `max` bytes, none taken.
    pub fn new(max: u64) -> Self {
        Self { used: 0, max }
    }

    /// Bytes taken now.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Takes `bytes` more, or refuses ([`memory_full`]) taking nothing.
    pub fn charge(&mut self, bytes: u64) -> Result<(), Error> {
        match self.used.checked_add(bytes) {
            Some(used) if used <= self.max => {
                self.used = used;
                Ok(())
            }
            _ => Err(memory_full(self.max)),
        }
    }

    /// Gives back `bytes` taken earlier.
    pub fn release(&mut self, bytes: u64) {
        debug_assert!(bytes <= self.used, "releasing more than was charged");
        self.used = self.used.saturating_sub(bytes);
    }
}

/// A transaction id: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(String);

impl TxId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Anything that is not an id we could have issued is simply an unknown transaction.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.len() == 32 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(not_found(raw))
        }
    }

    /// The id as clients see it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id under which a store keeps the transaction that a caller with an identity knows as `self`:
    /// `owner` is 32 hex digits that stand for the caller, and the result the first 128 bits of SHA-256
    /// over both. Another caller who holds the id (a log line, a shared link) names another transaction,
    /// which does not exist: a transaction belongs to the caller who began it (CONTRACT.md §1).
    pub fn owned_by(&self, owner: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(owner.as_bytes())
            .chain_update(b" ")
            .chain_update(self.0.as_bytes())
            .finalize();
        Self(format!("{digest:x}")[..32].to_owned())
    }
}

/// Unknown, committed, rolled back or expired: all the same to a client.
pub fn not_found(id: &str) -> Error {
    Error::not_found(
        "transaction_not_found",
        format!(
            "no open transaction {} (unknown, committed, rolled back or expired)",
            crate::error::quote(id)
        ),
    )
}

/// A commit failed validation: `key` changed after the transaction read it.
pub fn conflict(key: &Key) -> Error {
    Error::conflict(
        "conflict",
        format!(
            "key {} changed after this transaction read it; the transaction is over",
            crate::error::quote(key.as_str())
        ),
    )
    .with("key", key.as_str())
}

/// The bytes a buffered write counts against [`MAX_TX_BYTES`].
pub fn write_bytes(key: &Key, value: Option<&Value>) -> usize {
    key.as_str().len() + value.map_or(0, |v| v.as_str().len())
}

/// Checks a transaction's footprint after a read or write; the operation that would pass a limit is refused
/// and the transaction is left as it was.
pub fn check_limits(keys: usize, bytes: usize) -> Result<(), Error> {
    if keys > MAX_TX_KEYS {
        return Err(Error::too_large(
            "transaction_too_large",
            format!("a transaction may read or write at most {MAX_TX_KEYS} distinct keys"),
        )
        .with("max_keys", MAX_TX_KEYS));
    }
    if bytes > MAX_TX_BYTES {
        return Err(Error::too_large(
            "transaction_too_large",
            format!("a transaction may write at most {MAX_TX_BYTES} bytes of keys and values"),
        )
        .with("max_bytes", MAX_TX_BYTES));
    }
    Ok(())
}

/// What a transaction has done so far: the versions it read and the writes it buffered.
#[derive(Debug, Clone, Default)]
pub struct TxBuffer {
    reads: BTreeMap<Key, u64>,
    /// `None` is a buffered delete.
    writes: BTreeMap<Key, Option<Value>>,
    bytes: usize,
    /// What the buffer holds in memory, as [`Self::memory`] reports it.
    memory: u64,
}

fn read_memory(key: &Key) -> u64 {
    key.as_str().len() as u64 + ENTRY_OVERHEAD_BYTES
}

fn write_memory(key: &Key, value: Option<&Value>) -> u64 {
    write_bytes(key, value) as u64 + ENTRY_OVERHEAD_BYTES
}

impl TxBuffer {
    /// The transaction's own write of `key`, if any: `Some(None)` means it deleted the key.
    pub fn own_write(&self, key: &Key) -> Option<Option<&Value>> {
        self.writes.get(key).map(Option::as_ref)
    }

    fn keys_with(&self, key: &Key) -> usize {
        let known = self.reads.contains_key(key) || self.writes.contains_key(key);
        self.reads.len()
            + self
                .writes
                .keys()
                .filter(|k| !self.reads.contains_key(*k))
                .count()
            + usize::from(!known)
    }

    /// The bytes this buffer holds in memory: every key read (with its version) and every key and value
    /// written, each with [`ENTRY_OVERHEAD_BYTES`]. What a store charges against its [`MemoryBudget`]
    /// (plus [`TX_OVERHEAD_BYTES`] for the transaction itself).
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// Remembers the version read from the store. The first read of a key is the one validated. The bytes
    /// it adds are charged to `budget` first; refused, the buffer is unchanged.
    pub fn record_read(
        &mut self,
        key: &Key,
        version: u64,
        budget: &mut MemoryBudget,
    ) -> Result<(), Error> {
        if self.reads.contains_key(key) {
            return Ok(());
        }
        check_limits(self.keys_with(key), self.bytes)?;
        let added = read_memory(key);
        budget.charge(added)?;
        self.memory += added;
        self.reads.insert(key.clone(), version);
        Ok(())
    }

    /// Buffers a write (`None`: a delete). The bytes it adds are charged to `budget` first (a rewrite that
    /// shrinks gives some back); refused, the buffer is unchanged.
    pub fn stage(
        &mut self,
        key: &Key,
        value: Option<Value>,
        budget: &mut MemoryBudget,
    ) -> Result<(), Error> {
        let old = self.writes.get(key).map(|v| v.as_ref());
        let old_bytes = old.map_or(0, |v| write_bytes(key, v));
        let old_memory = old.map_or(0, |v| write_memory(key, v));
        let bytes = self.bytes - old_bytes + write_bytes(key, value.as_ref());
        check_limits(self.keys_with(key), bytes)?;
        let new_memory = write_memory(key, value.as_ref());
        if new_memory > old_memory {
            budget.charge(new_memory - old_memory)?;
        } else {
            budget.release(old_memory - new_memory);
        }
        self.memory = self.memory - old_memory + new_memory;
        self.bytes = bytes;
        self.writes.insert(key.clone(), value);
        Ok(())
    }

    /// The commit's work, in key order: each key with the version it must still have (if it was read from
    /// the store) and its new value (if written; `Some(None)` deletes). It borrows the buffer: a commit
    /// copies no value until it writes it, so committing does not double what the transaction holds.
    pub fn plan(&self) -> Vec<Step<'_>> {
        let mut steps: BTreeMap<&Key, Step<'_>> = BTreeMap::new();
        for (key, version) in &self.reads {
            steps.insert(
                key,
                Step {
                    key,
                    expect: Some(*version),
                    write: None,
                },
            );
        }
        for (key, value) in &self.writes {
            steps
                .entry(key)
                .or_insert(Step {
                    key,
                    expect: None,
                    write: None,
                })
                .write = Some(value.as_ref());
        }
        steps.into_values().collect()
    }
}

/// One key's part in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'a> {
    /// The key.
    pub key: &'a Key,
    /// The version read from the store (0: the key did not exist), which must still be current.
    pub expect: Option<u64>,
    /// The new value (`Some(None)`: delete), or `None` if the key was only read.
    pub write: Option<Option<&'a Value>>,
}

/// A new transaction.
#[derive(Debug, Clone)]
pub struct Began {
    /// The id to name it by.
    pub id: TxId,
    /// When it expires if left idle.
    pub expires_at: SystemTime,
}

/// A read inside a transaction: its own buffered value (no version yet) or the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxValue {
    /// The value.
    pub value: String,
    /// `None` for a value the transaction wrote itself (it gets a version at commit).
    pub version: Option<u64>,
}

/// The transaction port. Every operation on an unknown, finished or expired transaction is
/// `404 transaction_not_found`; every operation on an open one restarts its idle timer.
#[async_trait]
pub trait KvTransactions: Send + Sync {
    /// Opens the transaction `id` (a fresh [`TxId::generate`], or one derived from it: see
    /// [`TxId::owned_by`]).
    async fn begin(&self, id: TxId) -> Result<Began, Error>;
    /// The transaction's own write of the key if it has one, else the store's value (the version read is
    /// remembered for validation, also when the key is absent).
    async fn get(&self, id: &TxId, key: &Key) -> Result<Option<TxValue>, Error>;
    /// Buffers a write (`None`: a delete), invisible to everyone else until commit.
    async fn stage(&self, id: &TxId, key: &Key, value: Option<Value>) -> Result<(), Error>;
    /// Validates and applies everything atomically; returns the number of keys written. Success, a
    /// conflict or an expiry ends the transaction. A store that cannot take the commit (`Unavailable`,
    /// `Throttled`) wrote nothing of it and leaves the transaction open, so the commit can be retried; a
    /// retry of a commit that did become durable (its answer lost on the way) must not apply it again.
    async fn commit(&self, id: &TxId) -> Result<usize, Error>;
    /// Drops the transaction and its buffered writes; nothing of it is applied.
    async fn rollback(&self, id: &TxId) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn k(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    fn v(s: &str) -> Value {
        Value::parse(s.into()).unwrap()
    }

    fn room() -> MemoryBudget {
        MemoryBudget::new(u64::MAX)
    }

    #[test]
    fn ids_round_trip_and_junk_is_not_found() {
        let id = TxId::generate();
        assert_eq!(TxId::parse(id.as_str()).unwrap(), id);
        for junk in ["", "x", "../etc", &"A".repeat(32), &"a".repeat(33)] {
            assert_eq!(TxId::parse(junk).unwrap_err().code, "transaction_not_found");
        }
    }

    #[test]
    fn the_plan_validates_reads_and_applies_writes_in_key_order() {
        let mut b = TxBuffer::default();
        let mut budget = room();
        b.record_read(&k("b"), 4, &mut budget).unwrap();
        b.record_read(&k("b"), 9, &mut budget).unwrap(); // the first read is what gets validated
        b.stage(&k("b"), Some(v("new")), &mut budget).unwrap();
        b.stage(&k("a"), None, &mut budget).unwrap();
        b.record_read(&k("c"), 0, &mut budget).unwrap();
        assert_eq!(b.own_write(&k("a")), Some(None));
        assert_eq!(b.own_write(&k("b")), Some(Some(&v("new"))));
        assert_eq!(b.own_write(&k("c")), None);
        let plan = b.plan();
        let keys: Vec<_> = plan.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!((plan[0].expect, &plan[0].write), (None, &Some(None)));
        assert_eq!(
            (plan[1].expect, &plan[1].write),
            (Some(4), &Some(Some(&v("new"))))
        );
        assert_eq!((plan[2].expect, &plan[2].write), (Some(0), &None));
    }

    #[test]
    fn the_100th_distinct_key_is_refused_and_the_buffer_stays_usable() {
        let mut b = TxBuffer::default();
        let mut budget = room();
        for i in 0..MAX_TX_KEYS {
            if i % 2 == 0 {
                b.stage(&k(&format!("k{i}")), Some(v("x")), &mut budget)
                    .unwrap();
            } else {
                b.record_read(&k(&format!("k{i}")), 1, &mut budget).unwrap();
            }
        }
        let e = b
            .stage(&k("one-too-many"), Some(v("x")), &mut budget)
            .unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_ref()),
            (Kind::TooLarge, "transaction_too_large")
        );
        assert_eq!(
            b.record_read(&k("another"), 0, &mut budget)
                .unwrap_err()
                .code,
            "transaction_too_large"
        );
        // keys already in the transaction can still be read and rewritten
        b.stage(&k("k1"), Some(v("y")), &mut budget).unwrap();
        b.stage(&k("k0"), None, &mut budget).unwrap();
        assert_eq!(b.plan().len(), MAX_TX_KEYS);
    }

    #[test]
    fn bytes_are_counted_per_key_and_rewrites_replace_their_old_size() {
        let mut b = TxBuffer::default();
        let mut budget = room();
        let big = "x".repeat(200_000);
        for i in 0..19 {
            b.stage(&k(&format!("k{i:02}")), Some(v(&big)), &mut budget)
                .unwrap();
        }
        // 19 * 200_004 = 3_800_076; one more is over 4_000_000
        assert_eq!(
            b.stage(&k("k19"), Some(v(&big)), &mut budget)
                .unwrap_err()
                .code,
            "transaction_too_large"
        );
        // shrinking an existing write frees room
        b.stage(&k("k00"), Some(v("small")), &mut budget).unwrap();
        b.stage(&k("k19"), Some(v(&big)), &mut budget).unwrap();
    }

    #[test]
    fn the_budget_is_charged_for_what_is_buffered_and_a_refusal_changes_nothing() {
        let big = "x".repeat(100_000);
        let cost = (3 + big.len()) as u64 + ENTRY_OVERHEAD_BYTES;
        let mut budget = MemoryBudget::new(2 * cost + 200);
        let mut b = TxBuffer::default();
        b.stage(&k("k01"), Some(v(&big)), &mut budget).unwrap();
        b.stage(&k("k02"), Some(v(&big)), &mut budget).unwrap();
        assert_eq!((budget.used(), b.memory()), (2 * cost, 2 * cost));
        // the third would pass the budget: refused as 503, and nothing of it is buffered
        let e = b.stage(&k("k03"), Some(v(&big)), &mut budget).unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_ref(), e.retry_after),
            (Kind::Unavailable, "transaction_memory_full", Some(1))
        );
        assert_eq!(b.own_write(&k("k03")), None);
        assert_eq!((budget.used(), b.memory()), (2 * cost, 2 * cost));
        // a read costs its key too: refused when nothing is left
        let e = b
            .record_read(&k("x".repeat(150).as_str()), 1, &mut budget)
            .unwrap_err();
        assert_eq!(e.code, "transaction_memory_full");
        assert_eq!(b.plan().len(), 2);
        // shrinking a write gives its bytes back, so the third fits now
        b.stage(&k("k01"), None, &mut budget).unwrap();
        assert_eq!(budget.used(), cost + 3 + ENTRY_OVERHEAD_BYTES);
        b.stage(&k("k03"), Some(v(&big)), &mut budget).unwrap();
        assert_eq!(budget.used(), b.memory());
        budget.release(b.memory());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_count_refusal_is_a_retryable_503() {
        let e = too_many(7);
        assert_eq!(
            (e.kind, e.code.as_ref(), e.retry_after),
            (Kind::Unavailable, "too_many_transactions", Some(1))
        );
        assert_eq!(e.extra["max_open_transactions"], 7);
    }
}
