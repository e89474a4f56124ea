//! Idempotency keys (CONTRACT.md, "Common rules"): a retried request with the same `Idempotency-Key` and the same body
//! gets the original status and body and changes nothing; the same key with another body is `422`.
//!
//! The record goes through two states, as in Powertools for AWS Lambda: *in progress* (claimed by a request
//! that is running; it expires after [`IN_PROGRESS_TTL`] so a crashed request does not block the key
//! forever) and *completed* (the stored response, kept for the retention of [`crate::Settings`], [`crate::defaults::RETENTION`] unless configured).

use crate::Error;
use async_trait::async_trait;
use std::time::Duration;

/// How long a claim by a running request holds; longer than any request may run (the Lambda timeout).
pub const IN_PROGRESS_TTL: Duration = Duration::from_secs(30);
/// Longest accepted key.
pub const MAX_KEY_CHARS: usize = 255;

/// The largest answer body an idempotency record keeps (CONTRACT.md, Limits): far above any answer strata
/// gives (error messages quote at most a short prefix of a client's value), and far under DynamoDB's
/// 400 KB item. A larger answer is not kept: the key is released, as after a `5xx`.
pub const MAX_RECORD_BODY_BYTES: usize = 64 * 1024;

/// A response as stored for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The answer's status code.
    pub status: u16,
    /// The answer's body.
    pub body: String,
    /// The answer's `content-type`, when it had one other than JSON (`POST /kv/commands` answers text).
    pub content_type: Option<String>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or its earlier claim expired): run the request, then [`Idempotency::complete`] or
    /// [`Idempotency::release`] as this owner.
    Proceed(Owner),
    /// The request already ran: answer with this.
    Replay(Stored),
}

/// One claim's own token. Only the claim that holds it completes or releases the key: a request that ran
/// past its claim's expiry, whose key another request then claimed, changes nothing (its answer is not
/// kept, and the other request's claim stands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    /// A fresh random token.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The token as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates a client's key: 1..=255 visible ASCII characters.
pub fn validate_key(raw: &str) -> Result<(), Error> {
    if raw.is_empty() || raw.len() > MAX_KEY_CHARS || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// `422 idempotency_key_reused`: the key was used with a different request.
pub fn mismatch() -> Error {
    Error::new(
        crate::Kind::IdempotencyMismatch,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request",
    )
}

/// `409 request_in_progress`: a request with the key is still running.
pub fn in_progress() -> Error {
    Error::conflict(
        "request_in_progress",
        "a request with this Idempotency-Key is still running; retry shortly",
    )
    .retry_after(1)
}

/// The idempotency port. `key` is already scoped to the operation; `fingerprint` identifies the request.
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Claims the key for this request. Errors: [`mismatch`] (another request used the key),
    /// [`in_progress`] (the same request is running elsewhere).
    async fn claim(&self, key: &str, fingerprint: &str) -> Result<Claim, Error>;
    /// What a claim would find, without claiming: the answer to replay, or `None` when nothing holds the
    /// key. The same errors as [`Idempotency::claim`]. For an operation whose store keeps the key itself,
    /// to honour a record an earlier request wrote (see `strata_http::idempotency::serve_kept`).
    async fn look(&self, key: &str, fingerprint: &str) -> Result<Option<Stored>, Error>;
    /// Stores the response of a claimed request, if `owner` still holds the claim (else nothing changes).
    /// `Ok(false)`: the claim had expired and another request holds the key; the answer is not kept.
    async fn complete(
        &self,
        key: &str,
        owner: &Owner,
        fingerprint: &str,
        response: &Stored,
    ) -> Result<bool, Error>;
    /// Gives the key up after a failure that should not be replayed (a `5xx`), so a retry runs again; only
    /// if `owner` still holds the claim.
    async fn release(&self, key: &str, owner: &Owner) -> Result<(), Error>;
}
