//! Key/value service: what a key and a value may be, and the port a store implements.
//!
//! Every key carries a version that only ever increases, including across deletes (a delete leaves a
//! tombstone with a new version). That makes "has this key changed since I read it?" a plain version
//! comparison with no ABA problem: a key that is deleted and re-created never returns to an old version.

pub mod line;
pub mod tx;

use crate::Error;
use async_trait::async_trait;

/// Longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest value, in bytes of UTF-8 (256 KiB).
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// A valid key: 1..=1024 bytes of UTF-8, no whitespace, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates a client's key (`400 invalid_key` otherwise).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::invalid("invalid_key", "key must not be empty"));
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(Error::invalid(
                "invalid_key",
                format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", raw.len()),
            ));
        }
        if let Some(c) = raw.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                "invalid_key",
                format!("key must not contain whitespace or control characters (found {c:?})"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A valid value: any UTF-8 string of at most 256 KiB, kept byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    /// Validates a client's value (`413 value_too_large` when over [`MAX_VALUE_BYTES`]).
    pub fn parse(raw: String) -> Result<Self, Error> {
        if raw.len() > MAX_VALUE_BYTES {
            return Err(Error::too_large(
                "value_too_large",
                format!(
                    "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                    raw.len()
                ),
            ));
        }
        Ok(Self(raw))
    }

    /// The value as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value, taken out.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A stored value and the version that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value as stored.
    pub value: String,
    /// The version that wrote it: 1 for the first write, one more for each write since.
    pub version: u64,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// `false` when the key was already absent (nothing was written).
    pub existed: bool,
}

/// The key/value port. Every write is durable when the future resolves `Ok`.
#[async_trait]
pub trait KvStore: Send + Sync {
    /// The current value, if the key is present. Reads the latest acknowledged write.
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, Error>;
    /// Writes the value atomically and returns the new version (greater than any before it for this key).
    async fn put(&self, key: &Key, value: &Value) -> Result<u64, Error>;
    /// Removes the key; deleting an absent key changes nothing.
    async fn delete(&self, key: &Key) -> Result<Deleted, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn keys_accept_utf8_and_punctuation() {
        for ok in [
            "a",
            "user:42/name",
            "ключ",
            "🔑",
            &"k".repeat(MAX_KEY_BYTES),
        ] {
            assert_eq!(Key::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn keys_reject_empty_long_whitespace_and_control() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        // a 3-byte character that pushes the key one byte past the limit
        let long_utf8 = format!("{}€", "k".repeat(MAX_KEY_BYTES - 2));
        for bad in [
            "", "a b", "a\tb", "a\nb", "a\u{7f}b", "a\u{0}b", "a\u{a0}b", &long, &long_utf8,
        ] {
            let e = Key::parse(bad).unwrap_err();
            assert_eq!(
                (e.kind, e.code.as_ref()),
                (Kind::Invalid, "invalid_key"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn values_are_kept_byte_for_byte_up_to_the_limit() {
        let text = "3 * 3 = 9 {\"json\": [1, 2]} — ünïcødé 🚀".to_owned();
        assert_eq!(Value::parse(text.clone()).unwrap().as_str(), text);
        assert!(Value::parse(String::new()).is_ok());
        assert!(Value::parse("v".repeat(MAX_VALUE_BYTES)).is_ok());
        let e = Value::parse("v".repeat(MAX_VALUE_BYTES + 1)).unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_ref()),
            (Kind::TooLarge, "value_too_large")
        );
    }
}
