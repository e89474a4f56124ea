//! Idempotency records on the embedded store.
//!
//! Claims of running requests live in memory: they only matter while this process runs the request, and a
//! crash ends the request as well. Completed responses are written durably (keyspace `idempotency`:
//! key → expiry, fingerprint, status, body) and kept for the configured retention (24 hours unless
//! configured); an expired record is never answered, is replaced on the next claim of its key, and is
//! deleted by the sweeper ([`crate::retention`]) if the key is not reused.

use crate::{Space, Store};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use strata_core::Error;
use strata_core::idempotency::{
    Claim, IN_PROGRESS_TTL, Idempotency, Owner, Stored, in_progress, mismatch,
};

pub struct EmbeddedIdempotency {
    store: Store,
    retention: Duration,
    // A std Mutex, not a tokio one: nothing awaits while it is held.
    running: Mutex<Running>,
}

// Without the running claims: their owners' tokens are not for logs.
impl std::fmt::Debug for EmbeddedIdempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedIdempotency")
            .field("store", &self.store)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// Claims of requests running now: key → the claim. A request whose client went away mid-way (its future
/// dropped) never completes nor releases its claim, so expired claims are dropped as new ones come in, at
/// most once per [`IN_PROGRESS_TTL`]: the map holds at most the claims of that long.
struct Running {
    claims: HashMap<String, RunningClaim>,
    next_trim: Instant,
}

/// One running claim.
struct RunningClaim {
    fingerprint: String,
    owner: Owner,
    until: Instant,
}

impl Running {
    fn insert(&mut self, key: &str, fingerprint: &str, now: Instant) -> Owner {
        if now >= self.next_trim {
            self.claims.retain(|_, claim| claim.until > now);
            self.next_trim = now + IN_PROGRESS_TTL;
        }
        let owner = Owner::generate();
        self.claims.insert(
            key.to_owned(),
            RunningClaim {
                fingerprint: fingerprint.to_owned(),
                owner: owner.clone(),
                until: now + IN_PROGRESS_TTL,
            },
        );
        owner
    }

    /// Whether `owner` holds the claim of `key` (expired or not: nobody took it over).
    fn holds(&self, key: &str, owner: &Owner) -> bool {
        self.claims.get(key).is_some_and(|c| c.owner == *owner)
    }
}

/// Set in a record's status when the answer's content type follows it (statuses are below 600).
const CONTENT_TYPE_FLAG: u16 = 0x8000;

pub(crate) struct Record {
    pub(crate) expires_ms: u64,
    pub(crate) fingerprint: String,
    pub(crate) stored: Stored,
}

use strata_core::time::now_millis;

fn corrupt() -> Error {
    Error::internal("corrupt idempotency record")
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out =
            crate::format::versioned(12 + self.fingerprint.len() + self.stored.body.len());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&(self.fingerprint.len() as u16).to_be_bytes());
        out.extend_from_slice(self.fingerprint.as_bytes());
        match &self.stored.content_type {
            // No flag: the answer is JSON.
            None => out.extend_from_slice(&self.stored.status.to_be_bytes()),
            Some(content_type) => {
                out.extend_from_slice(&(self.stored.status | CONTENT_TYPE_FLAG).to_be_bytes());
                out.extend_from_slice(&(content_type.len() as u16).to_be_bytes());
                out.extend_from_slice(content_type.as_bytes());
            }
        }
        out.extend_from_slice(self.stored.body.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bytes = crate::format::payload("idempotency record", bytes)?;
        let expires_ms = u64::from_be_bytes(
            bytes
                .get(..8)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        );
        let fp_len = u16::from_be_bytes(
            bytes
                .get(8..10)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        ) as usize;
        let fingerprint = bytes.get(10..10 + fp_len).ok_or_else(corrupt)?;
        let status = bytes.get(10 + fp_len..12 + fp_len).ok_or_else(corrupt)?;
        let status = u16::from_be_bytes(status.try_into().map_err(|_| corrupt())?);
        let mut at = 12 + fp_len;
        let content_type = if status & CONTENT_TYPE_FLAG != 0 {
            let len = bytes.get(at..at + 2).ok_or_else(corrupt)?;
            let len = u16::from_be_bytes(len.try_into().map_err(|_| corrupt())?) as usize;
            let raw = bytes.get(at + 2..at + 2 + len).ok_or_else(corrupt)?;
            at += 2 + len;
            Some(String::from_utf8(raw.to_vec()).map_err(|_| corrupt())?)
        } else {
            None
        };
        let body = bytes.get(at..).ok_or_else(corrupt)?;
        Ok(Self {
            expires_ms,
            fingerprint: String::from_utf8(fingerprint.to_vec()).map_err(|_| corrupt())?,
            stored: Stored {
                status: status & !CONTENT_TYPE_FLAG,
                body: String::from_utf8(body.to_vec()).map_err(|_| corrupt())?,
                content_type,
            },
        })
    }
}

impl EmbeddedIdempotency {
    /// What holds `key` (call under the `running` lock): a live record's answer to replay, `422` for
    /// another request under the key, `409` while its claim runs; `None` when nothing does.
    fn held(
        &self,
        running: &Running,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<Stored>, Error> {
        if let Some(bytes) = self.store.read(Space::Idempotency, key.as_bytes())? {
            let record = Record::decode(&bytes)?;
            if record.expires_ms > now_millis() {
                return if record.fingerprint == fingerprint {
                    Ok(Some(record.stored))
                } else {
                    Err(mismatch())
                };
            }
        }
        match running.claims.get(key) {
            Some(claim) if claim.until > Instant::now() => {
                Err(if claim.fingerprint == fingerprint {
                    in_progress()
                } else {
                    mismatch()
                })
            }
            _ => Ok(None),
        }
    }

    /// Completed responses are kept for `retention`.
    pub fn new(store: Store, retention: Duration) -> Self {
        Self {
            store,
            retention,
            running: Mutex::new(Running {
                claims: HashMap::new(),
                next_trim: Instant::now(),
            }),
        }
    }
}

#[async_trait]
impl Idempotency for EmbeddedIdempotency {
    async fn look(&self, key: &str, fingerprint: &str) -> Result<Option<Stored>, Error> {
        let running = self
            .running
            .lock()
            .expect("no panics while holding the lock");
        self.held(&running, key, fingerprint)
    }

    async fn claim(&self, key: &str, fingerprint: &str) -> Result<Claim, Error> {
        // Decided under the lock: `complete` makes the record durable and visible before it drops the
        // running claim (also under the lock), so a claim sees either the running claim or the record, never
        // neither, and a request cannot run twice.
        let mut running = self
            .running
            .lock()
            .expect("no panics while holding the lock");
        if let Some(stored) = self.held(&running, key, fingerprint)? {
            return Ok(Claim::Replay(stored));
        }
        Ok(Claim::Proceed(running.insert(
            key,
            fingerprint,
            Instant::now(),
        )))
    }

    async fn complete(
        &self,
        key: &str,
        owner: &Owner,
        fingerprint: &str,
        response: &Stored,
    ) -> Result<bool, Error> {
        // Checked here and the record written after: between the two only a claim past its expiry could be
        // taken over, and a request outlives its 30 s claim only if it outlives its deadline by far.
        if !self
            .running
            .lock()
            .expect("no panics while holding the lock")
            .holds(key, owner)
        {
            tracing::warn!(
                "an idempotency claim expired before its request ended, and another request holds the \
                 key: this request's answer is not kept"
            );
            return Ok(false);
        }
        let record = Record {
            expires_ms: crate::retention::expiry_from_now(self.retention),
            fingerprint: fingerprint.to_owned(),
            stored: response.clone(),
        };
        let owned_key = key.as_bytes().to_vec();
        let result = self
            .store
            .write(move |staging| {
                staging.put(Space::Idempotency, owned_key, record.encode());
                Ok(())
            })
            .await;
        self.release(key, owner).await?;
        result.map(|()| true)
    }

    async fn release(&self, key: &str, owner: &Owner) -> Result<(), Error> {
        let mut running = self
            .running
            .lock()
            .expect("no panics while holding the lock");
        if running.holds(key, owner) {
            running.claims.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: &str) -> Stored {
        Stored {
            status: 201,
            body: body.into(),
            content_type: None,
        }
    }

    /// A look finds what a claim would, and claims nothing.
    #[tokio::test]
    async fn a_look_finds_what_a_claim_would_and_claims_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let idempotency =
            EmbeddedIdempotency::new(Store::open(dir.path()).unwrap(), Duration::from_secs(3600));
        let code = |r: Result<Option<Stored>, Error>| r.unwrap_err().code.clone();
        assert_eq!(idempotency.look("op:k", "fp").await.unwrap(), None);
        let Claim::Proceed(owner) = idempotency.claim("op:k", "fp").await.unwrap() else {
            panic!("a look claims nothing: the key is new")
        };
        assert_eq!(
            code(idempotency.look("op:k", "fp").await),
            "request_in_progress"
        );
        assert_eq!(
            code(idempotency.look("op:k", "other").await),
            "idempotency_key_reused"
        );
        assert!(
            idempotency
                .complete("op:k", &owner, "fp", &stored("answer"))
                .await
                .unwrap()
        );
        assert_eq!(
            idempotency.look("op:k", "fp").await.unwrap(),
            Some(stored("answer"))
        );
        assert_eq!(
            code(idempotency.look("op:k", "other").await),
            "idempotency_key_reused"
        );
    }

    /// A request that outlived its claim, whose key another request then claimed, neither releases nor
    /// completes the other request's claim.
    #[tokio::test]
    async fn a_stale_claimant_leaves_the_claim_of_the_request_that_took_the_key_over() {
        let dir = tempfile::tempdir().unwrap();
        let idempotency =
            EmbeddedIdempotency::new(Store::open(dir.path()).unwrap(), Duration::from_secs(3600));
        let Claim::Proceed(stale) = idempotency.claim("op:k", "fp").await.unwrap() else {
            panic!("a new key proceeds")
        };
        // Its claim expires, as it does IN_PROGRESS_TTL later.
        idempotency
            .running
            .lock()
            .unwrap()
            .claims
            .get_mut("op:k")
            .unwrap()
            .until = Instant::now() - Duration::from_secs(1);
        let Claim::Proceed(fresh) = idempotency.claim("op:k", "fp").await.unwrap() else {
            panic!("an expired claim is taken over")
        };
        let in_progress = async || {
            idempotency
                .claim("op:k", "fp")
                .await
                .unwrap_err()
                .code
                .clone()
        };

        idempotency.release("op:k", &stale).await.unwrap();
        assert_eq!(in_progress().await, "request_in_progress");
        let kept = idempotency
            .complete("op:k", &stale, "fp", &stored("stale"))
            .await
            .unwrap();
        assert!(!kept, "the stale owner's answer is not kept");
        assert_eq!(in_progress().await, "request_in_progress");

        let kept = idempotency
            .complete("op:k", &fresh, "fp", &stored("fresh"))
            .await
            .unwrap();
        assert!(kept);
        assert_eq!(
            idempotency.claim("op:k", "fp").await.unwrap(),
            Claim::Replay(stored("fresh"))
        );
    }
}
