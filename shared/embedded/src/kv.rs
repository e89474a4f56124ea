//! The key/value port on the embedded store.
//!
//! A record is `format version ([`crate::format`]) | version (u64, big-endian) | tag | value bytes`; tag 1 is a present value, tag 0 a tombstone.
//! Tombstones keep the version sequence of a deleted key going, so versions never repeat.

use crate::{Space, Store};
use async_trait::async_trait;
use strata_core::Error;
use strata_core::kv::{Deleted, Key, KvStore, Value, Versioned};

const PRESENT: u8 = 1;
const TOMBSTONE: u8 = 0;

/// A decoded record: the latest version and the value, `None` for a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub version: u64,
    pub value: Option<String>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or("");
        let mut out = crate::format::versioned(9 + value.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(if self.value.is_some() {
            PRESENT
        } else {
            TOMBSTONE
        });
        out.extend_from_slice(value.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = || Error::internal("corrupt key/value record");
        let bytes = crate::format::payload("key/value record", bytes)?;
        let (version, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let (tag, value) = rest.split_first().ok_or_else(corrupt)?;
        let value = match *tag {
            PRESENT => Some(String::from_utf8(value.to_vec()).map_err(|_| corrupt())?),
            TOMBSTONE => None,
            _ => return Err(corrupt()),
        };
        Ok(Self {
            version: u64::from_be_bytes(*version),
            value,
        })
    }

    /// The version and value of a key that may never have been written (version 0).
    pub fn decode_opt(bytes: Option<&[u8]>) -> Result<Self, Error> {
        match bytes {
            Some(bytes) => Self::decode(bytes),
            None => Ok(Self {
                version: 0,
                value: None,
            }),
        }
    }
}

#[derive(Debug)]
pub struct EmbeddedKv {
    store: Store,
}

impl EmbeddedKv {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait]
impl KvStore for EmbeddedKv {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, Error> {
        let bytes = self.store.read(Space::Kv, key.as_str().as_bytes())?;
        let record = Record::decode_opt(bytes.as_deref())?;
        Ok(record.value.map(|value| Versioned {
            value,
            version: record.version,
        }))
    }

    async fn put(&self, key: &Key, value: &Value) -> Result<u64, Error> {
        let key = key.as_str().as_bytes().to_vec();
        let value = value.as_str().to_owned();
        self.store
            .write(move |staging| {
                let current = Record::decode_opt(staging.get(Space::Kv, &key)?.as_deref())?;
                let next = Record {
                    version: current.version + 1,
                    value: Some(value),
                };
                staging.put(Space::Kv, key, next.encode());
                Ok(next.version)
            })
            .await
    }

    async fn delete(&self, key: &Key) -> Result<Deleted, Error> {
        let key = key.as_str().as_bytes().to_vec();
        self.store
            .write(move |staging| {
                let current = Record::decode_opt(staging.get(Space::Kv, &key)?.as_deref())?;
                if current.value.is_none() {
                    return Ok(Deleted { existed: false });
                }
                let tombstone = Record {
                    version: current.version + 1,
                    value: None,
                };
                staging.put(Space::Kv, key, tombstone.encode());
                Ok(Deleted { existed: true })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for record in [
            Record {
                version: 1,
                value: Some("3 * 3 = 9 ü 🚀".into()),
            },
            Record {
                version: u64::MAX,
                value: Some(String::new()),
            },
            Record {
                version: 7,
                value: None,
            },
        ] {
            assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        }
        assert!(Record::decode(&[0, 0, 1]).is_err());
        assert!(Record::decode(&[0, 0, 0, 0, 0, 0, 0, 1, 9]).is_err());
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_to_one_key_in_one_batch_each_get_their_own_version() {
        let (_dir, store) = store();
        let kv = store.stores(&Default::default()).kv;
        let key = Key::parse("hot").unwrap();
        let writes = (0..200).map(|i| {
            let (kv, key) = (kv.clone(), key.clone());
            tokio::spawn(async move {
                kv.put(&key, &Value::parse(format!("v{i}")).unwrap())
                    .await
                    .unwrap()
            })
        });
        let mut versions = Vec::new();
        for w in writes {
            versions.push(w.await.unwrap());
        }
        versions.sort_unstable();
        assert_eq!(
            versions,
            (1..=200).collect::<Vec<_>>(),
            "every write gets a distinct, gapless version"
        );
        assert_eq!(kv.get(&key).await.unwrap().unwrap().version, 200);
    }

    #[tokio::test]
    async fn versions_keep_increasing_across_delete_and_recreate() {
        let (dir, store) = store();
        let kv = store.stores(&Default::default()).kv;
        let key = Key::parse("k").unwrap();
        let v = |s: &str| Value::parse(s.into()).unwrap();
        assert_eq!(kv.put(&key, &v("a")).await.unwrap(), 1);
        assert!(kv.delete(&key).await.unwrap().existed);
        assert!(!kv.delete(&key).await.unwrap().existed);
        assert_eq!(kv.get(&key).await.unwrap(), None);
        assert_eq!(kv.put(&key, &v("b")).await.unwrap(), 3);
        drop((kv, store));
        // reopening recovers the acknowledged state
        let store = Store::open(dir.path()).unwrap();
        let got = store
            .stores(&Default::default())
            .kv
            .get(&key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.value.as_str(), got.version), ("b", 3));
    }
}
