//! `Idempotency-Key` for every operation that creates or changes state, in one place.
//!
//! A request with the header claims its key (scoped to the operation) with the request's fingerprint; a
//! retry with the same key and the same method, path and body gets the stored status and body back (with
//! `idempotent-replayed: true`) and changes nothing; the same key with another request is `422`; a retry
//! while the first is still running is `409 request_in_progress` with `retry-after`. Responses below 500
//! are stored; after a `5xx` the key is released so a retry runs again.

use crate::response::{error, from_result};
use crate::{Body, Request, Response};
use sha2::{Digest, Sha256};
use std::future::Future;
use strata_core::Stores;
use strata_core::idempotency::{Claim, Stored, validate_key};

pub const HEADER: &str = "idempotency-key";

/// The operation-scoped key of a request, if it has a (valid) `Idempotency-Key`.
pub fn scoped_key(req: &Request, scope: &str) -> Result<Option<String>, strata_core::Error> {
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("\u{0}");
    validate_key(raw)?;
    Ok(Some(format!("{scope}:{raw}")))
}

/// What identifies "the same request": method, path and body.
pub fn fingerprint(req: &Request) -> String {
    let mut hash = Sha256::new();
    hash.update(req.method().as_str());
    hash.update(b" ");
    hash.update(req.uri().path());
    hash.update(b"\n");
    hash.update(req.body().as_ref());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `handler` at most once per idempotency key. The handler gets the scoped key (or `None`), which a
/// store can use to make the operation itself idempotent across crashes.
pub async fn run<F, Fut>(stores: &Stores, req: Request, scope: &str, handler: F) -> Response
where
    F: FnOnce(Request, Option<String>) -> Fut,
    Fut: Future<Output = Response>,
{
    let key = match scoped_key(&req, scope) {
        Ok(Some(key)) => key,
        Ok(None) => return handler(req, None).await,
        Err(e) => return error(&e),
    };
    let fingerprint = fingerprint(&req);
    match stores.idempotency.claim(&key, &fingerprint).await {
        Ok(Claim::Replay(stored)) => return replay(stored),
        Ok(Claim::Proceed) => {}
        Err(e) => return error(&e),
    }
    let response = handler(req, Some(key.clone())).await;
    if response.status().is_server_error() {
        if let Err(e) = stores.idempotency.release(&key, &fingerprint).await {
            tracing::warn!(error = %e, "cannot release an idempotency key");
        }
        return response;
    }
    let stored = Stored {
        status: response.status().as_u16(),
        body: String::from_utf8_lossy(response.body().as_ref()).into_owned(),
    };
    if let Err(e) = stores
        .idempotency
        .complete(&key, &fingerprint, &stored)
        .await
    {
        // The operation happened; only the record of its response is missing. Say so, rather than
        // pretend: a retry would run it again, and stores that take the key (certificates) dedupe it.
        tracing::error!(error = %e, "cannot store an idempotent response");
        return from_result(Err(e));
    }
    response
}

fn replay(stored: Stored) -> Response {
    let mut response = http::Response::builder()
        .status(stored.status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("idempotent-replayed", "true")
        .body(if stored.body.is_empty() {
            Body::Empty
        } else {
            Body::Text(stored.body)
        })
        .expect("a stored status is valid");
    if response.status() == http::StatusCode::NO_CONTENT {
        response.headers_mut().remove(http::header::CONTENT_TYPE);
    }
    response
}
