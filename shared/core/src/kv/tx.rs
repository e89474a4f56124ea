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

use crate::Error;
use crate::kv::{Key, Value};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Most distinct keys a transaction may read from the store or write.
pub const MAX_TX_KEYS: usize = 99;
/// Most bytes of keys and values a transaction may write (a little under DynamoDB's 4 MB, which also
/// counts attribute names and numbers).
pub const MAX_TX_BYTES: usize = 4_000_000;
/// Most transactions open at once on the embedded store, unless configured otherwise.
pub const DEFAULT_MAX_OPEN: usize = 4096;
/// Most bytes all open transactions of the embedded store may buffer together, unless configured otherwise:
/// with the rest of the server, well under 512 MiB resident.
pub const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;
/// How long a transaction may sit idle before it expires, unless configured otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A transaction id: 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(String);

impl TxId {
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

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Unknown, committed, rolled back or expired: all the same to a client.
pub fn not_found(id: &str) -> Error {
    Error::not_found(
        "transaction_not_found",
        format!("no open transaction {id:?} (unknown, committed, rolled back or expired)"),
    )
}

/// A commit failed validation: `key` changed after the transaction read it.
pub fn conflict(key: &Key) -> Error {
    Error::conflict(
        "conflict",
        format!(
            "key {:?} changed after this transaction read it; the transaction is over",
            key.as_str()
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

    /// Remembers the version read from the store. The first read of a key is the one validated.
    pub fn record_read(&mut self, key: &Key, version: u64) -> Result<(), Error> {
        if self.reads.contains_key(key) {
            return Ok(());
        }
        check_limits(self.keys_with(key), self.bytes)?;
        self.reads.insert(key.clone(), version);
        Ok(())
    }

    /// Buffers a write (`None`: a delete).
    pub fn stage(&mut self, key: &Key, value: Option<Value>) -> Result<(), Error> {
        let old = self
            .writes
            .get(key)
            .map_or(0, |v| write_bytes(key, v.as_ref()));
        let bytes = self.bytes - old + write_bytes(key, value.as_ref());
        check_limits(self.keys_with(key), bytes)?;
        self.bytes = bytes;
        self.writes.insert(key.clone(), value);
        Ok(())
    }

    /// The commit's work, in key order: each key with the version it must still have (if it was read from
    /// the store) and its new value (if written; `Some(None)` deletes).
    pub fn into_plan(self) -> Vec<Step> {
        let mut steps: BTreeMap<Key, Step> = BTreeMap::new();
        for (key, version) in self.reads {
            steps.insert(
                key.clone(),
                Step {
                    key,
                    expect: Some(version),
                    write: None,
                },
            );
        }
        for (key, value) in self.writes {
            steps
                .entry(key.clone())
                .or_insert(Step {
                    key,
                    expect: None,
                    write: None,
                })
                .write = Some(value);
        }
        steps.into_values().collect()
    }
}

/// One key's part in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub key: Key,
    /// The version read from the store (0: the key did not exist), which must still be current.
    pub expect: Option<u64>,
    /// The new value (`Some(None)`: delete), or `None` if the key was only read.
    pub write: Option<Option<Value>>,
}

/// A new transaction.
#[derive(Debug, Clone)]
pub struct Began {
    pub id: TxId,
    pub expires_at: SystemTime,
}

/// A read inside a transaction: its own buffered value (no version yet) or the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxValue {
    pub value: String,
    /// `None` for a value the transaction wrote itself (it gets a version at commit).
    pub version: Option<u64>,
}

/// The transaction port. Every operation on an unknown, finished or expired transaction is
/// `404 transaction_not_found`; every operation on an open one restarts its idle timer.
#[async_trait]
pub trait KvTransactions: Send + Sync {
    async fn begin(&self) -> Result<Began, Error>;
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
        b.record_read(&k("b"), 4).unwrap();
        b.record_read(&k("b"), 9).unwrap(); // the first read is what gets validated
        b.stage(&k("b"), Some(v("new"))).unwrap();
        b.stage(&k("a"), None).unwrap();
        b.record_read(&k("c"), 0).unwrap();
        assert_eq!(b.own_write(&k("a")), Some(None));
        assert_eq!(b.own_write(&k("b")), Some(Some(&v("new"))));
        assert_eq!(b.own_write(&k("c")), None);
        let plan = b.into_plan();
        let keys: Vec<_> = plan.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!((plan[0].expect, &plan[0].write), (None, &Some(None)));
        assert_eq!(
            (plan[1].expect, &plan[1].write),
            (Some(4), &Some(Some(v("new"))))
        );
        assert_eq!((plan[2].expect, &plan[2].write), (Some(0), &None));
    }

    #[test]
    fn the_100th_distinct_key_is_refused_and_the_buffer_stays_usable() {
        let mut b = TxBuffer::default();
        for i in 0..MAX_TX_KEYS {
            if i % 2 == 0 {
                b.stage(&k(&format!("k{i}")), Some(v("x"))).unwrap();
            } else {
                b.record_read(&k(&format!("k{i}")), 1).unwrap();
            }
        }
        let e = b.stage(&k("one-too-many"), Some(v("x"))).unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_ref()),
            (Kind::TooLarge, "transaction_too_large")
        );
        assert_eq!(
            b.record_read(&k("another"), 0).unwrap_err().code,
            "transaction_too_large"
        );
        // keys already in the transaction can still be read and rewritten
        b.stage(&k("k1"), Some(v("y"))).unwrap();
        b.stage(&k("k0"), None).unwrap();
        assert_eq!(b.into_plan().len(), MAX_TX_KEYS);
    }

    #[test]
    fn bytes_are_counted_per_key_and_rewrites_replace_their_old_size() {
        let mut b = TxBuffer::default();
        let big = "x".repeat(200_000);
        for i in 0..19 {
            b.stage(&k(&format!("k{i:02}")), Some(v(&big))).unwrap();
        }
        // 19 * 200_004 = 3_800_076; one more is over 4_000_000
        assert_eq!(
            b.stage(&k("k19"), Some(v(&big))).unwrap_err().code,
            "transaction_too_large"
        );
        // shrinking an existing write frees room
        b.stage(&k("k00"), Some(v("small"))).unwrap();
        b.stage(&k("k19"), Some(v(&big))).unwrap();
    }
}
