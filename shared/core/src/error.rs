//! The domain error: what went wrong, in terms a client can act on.

use serde_json::{Map, Value};
use std::borrow::Cow;

/// What kind of failure this is. The HTTP layer maps each kind to exactly one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Malformed or invalid input (400).
    Invalid,
    /// The caller may not make this request here (403): the local server's refusal of a web page.
    Forbidden,
    /// The thing named does not exist (404).
    NotFound,
    /// The request did not arrive in time (408): a body slower than the local server's read timeout.
    Timeout,
    /// The request conflicts with the current state (409).
    Conflict,
    /// The request or one of its parts is too large (413).
    TooLarge,
    /// The body's media type is not one the operation reads (415).
    UnsupportedMediaType,
    /// An idempotency key was reused with a different request (422).
    IdempotencyMismatch,
    /// The client is over its rate limit (429).
    Throttled,
    /// The store cannot take the request right now; retrying later may succeed (503).
    Unavailable,
    /// A real internal fault: logged in full, reported to the client without details (500).
    Internal,
}

/// A domain error; its [`Details`] are boxed so `Result<T, Error>` stays one pointer wide on the error side.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {}", .0.code, .0.message)]
pub struct Error(Box<Details>);

/// What an error says. `code` is stable and machine-readable; `message` is a sentence for people;
/// `extra` carries fields that clients rely on (the conflicting `key`, the `remaining` shares, ...).
#[derive(Debug, Clone)]
pub struct Details {
    /// What went wrong, which picks the status.
    pub kind: Kind,
    /// The contract's code, e.g. `key_not_found`.
    pub code: Cow<'static, str>,
    /// A sentence for people.
    pub message: String,
    /// Fields added to the error object ([`Error::with`]).
    pub extra: Map<String, Value>,
    /// Seconds a throttled or unavailable client should wait before retrying.
    pub retry_after: Option<u64>,
}

impl std::ops::Deref for Error {
    type Target = Details;

    fn deref(&self) -> &Details {
        &self.0
    }
}

impl Error {
    /// An error of `kind` with its code and message.
    pub fn new(kind: Kind, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self(Box::new(Details {
            kind,
            code: code.into(),
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }))
    }

    /// Adds a field to the error object (`{"error": {..., "<name>": value}}`).
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.extra.insert(name.to_owned(), value.into());
        self
    }

    /// Tells the client how many seconds to wait before retrying (`retry-after`).
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }

    /// A field of the request body or path is invalid; names the field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, "invalid_field", message).with("field", field)
    }

    /// Malformed or invalid input (400).
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, code, message)
    }

    /// The thing named does not exist (404).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, code, message)
    }

    /// The request conflicts with the current state (409).
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, code, message)
    }

    /// The request or one of its parts is too large (413).
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, code, message)
    }

    /// The store is unavailable (I/O failure, throttling, a closed writer). Safe to retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, "store_unavailable", message).retry_after(1)
    }

    /// An internal fault. The message is logged, never sent to the client.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, "internal_error", message)
    }
}

/// Characters of a client's value an error message quotes at most (CONTRACT.md, Errors): a message says
/// which value was refused without sending a large one back (and, with an `Idempotency-Key`, without
/// keeping it for the retention).
pub const QUOTE_CHARS: usize = 64;

/// A client's value as an error message quotes it: in double quotes with Rust's escapes, cut to its first
/// [`QUOTE_CHARS`] characters and `…` when longer.
pub fn quote(raw: &str) -> String {
    match raw.char_indices().nth(QUOTE_CHARS) {
        None => format!("{raw:?}"),
        Some((end, _)) => format!("{:?}…", &raw[..end]),
    }
}

/// A client's value shown without quotes (a path), cut as [`quote`] cuts it.
pub fn prefix(raw: &str) -> std::borrow::Cow<'_, str> {
    match raw.char_indices().nth(QUOTE_CHARS) {
        None => raw.into(),
        Some((end, _)) => format!("{}…", &raw[..end]).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_quoted_by_a_short_prefix() {
        assert_eq!(quote("greeting"), "\"greeting\"");
        let exact = "é".repeat(QUOTE_CHARS);
        assert_eq!(quote(&exact), format!("{exact:?}"));
        let long = "é".repeat(QUOTE_CHARS + 1);
        assert_eq!(quote(&long), format!("{exact:?}…"));
        assert!(quote(&"x".repeat(1 << 20)).len() < 2 * QUOTE_CHARS);
    }

    #[test]
    fn extra_fields_are_kept_in_order_given() {
        let e = Error::conflict("conflict", "key changed").with("key", "k");
        assert_eq!(e.kind, Kind::Conflict);
        assert_eq!(e.extra.get("key"), Some(&Value::from("k")));
        assert_eq!(e.to_string(), "conflict: key changed");
    }
}
