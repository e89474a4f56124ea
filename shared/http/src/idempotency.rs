//! `Idempotency-Key` for every operation that creates or changes state, in one place.
//!
//! A request with the header claims its key (scoped to the operation) with the request's fingerprint; a
//! retry with the same key and the same method, path and body gets the stored status and body back (with
//! `idempotent-replayed: true`) and changes nothing; the same key with another request is `422`; a retry
//! while the first is still running is `409 request_in_progress` with `retry-after`. Responses below 500
//! are stored, except `429`; after a `5xx` or `429` the key is released so a retry runs again.

use crate::response::error;
use crate::{Body, Request, Response};
use sha2::{Digest, Sha256};
use std::future::Future;
use strata_core::Stores;
use strata_core::idempotency::{Claim, MAX_RECORD_BODY_BYTES, Stored, validate_key};

/// The request header, as `http` names it (lowercase).
pub const HEADER: &str = "idempotency-key";

/// The key of a request as stored, if it has a (valid) `Idempotency-Key`: scoped to the operation and to the
/// caller, so the same key from two callers is two keys (neither can block the other's or receive its
/// answer). An anonymous caller (an open API, the local server) keeps the plain `scope:key`; a caller's is
/// `scope:<digest> key`, with a space no key can hold, so no anonymous key can spell a caller's.
pub fn scoped_key(req: &Request, scope: &str) -> Result<Option<String>, strata_core::Error> {
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("\u{0}");
    validate_key(raw)?;
    Ok(Some(match caller(req) {
        // A digest: bounded length whatever the ARN, and no identity written into the stores' keys.
        Some(caller) => format!("{scope}:{} {raw}", caller.digest()),
        None => format!("{scope}:{raw}"),
    }))
}

/// Who is calling, as API Gateway's authorizer established it (CONTRACT.md, "Idempotency-Key"). One caller
/// is one service or one user, however many sessions or workers it runs:
///
/// - IAM: the principal's ARN, an assumed role's without the session name (`…:assumed-role/ROLE`): an SQS
///   redelivery to another worker, another container or a refreshed session of the same role is the same
///   caller. With a Cognito identity pool's identity (many users assume one role), the role and the
///   identity: each user is a caller of their own.
/// - JWT: the issuer and the subject; a token without `sub` (a client-credentials token of some issuers),
///   the issuer and `client_id`; one with neither is one caller per issuer.
///
/// `None` without an authorizer (`AuthMode=none`, the local server): every such caller shares one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(String);

impl Caller {
    /// As the stores' keys carry it: 32 hex digits of its SHA-256.
    pub fn digest(&self) -> String {
        digest(self.0.as_bytes())[..32].to_owned()
    }

    /// The caller in full (`iam:…`, `jwt:…`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller of `req`, from API Gateway's authorizer context (see [`Caller`]).
pub fn caller(req: &Request) -> Option<Caller> {
    use lambda_http::RequestExt;
    let authorizer = req.request_context_ref()?.authorizer()?;
    if let Some(iam) = &authorizer.iam {
        let principal = match (&iam.user_arn, &iam.caller_id) {
            (Some(arn), _) => Some(without_session(arn)),
            // `AROA…:session` for a role: the role's unique id.
            (None, Some(id)) => Some(id.split(':').next().unwrap_or(id)),
            (None, None) => None,
        };
        if let Some(principal) = principal {
            let identity = iam
                .cognito_identity
                .as_ref()
                .and_then(|c| Some((c.identity_pool_id.as_deref()?, c.identity_id.as_deref()?)));
            return Some(Caller(match identity {
                Some((pool, id)) => format!("iam:{principal} cognito:{pool} {id}"),
                None => format!("iam:{principal}"),
            }));
        }
    }
    if let Some(jwt) = &authorizer.jwt {
        let iss = jwt.claims.get("iss").map(String::as_str).unwrap_or("");
        return Some(Caller(
            match (jwt.claims.get("sub"), jwt.claims.get("client_id")) {
                (Some(sub), _) => format!("jwt:{iss} sub:{sub}"),
                (None, Some(client)) => format!("jwt:{iss} client:{client}"),
                (None, None) => format!("jwt:{iss}"),
            },
        ));
    }
    None
}

/// An assumed role's ARN without its session name (`arn:aws:sts::123456789012:assumed-role/orders/one` is
/// the role `…:assumed-role/orders`); any other ARN as it is.
fn without_session(arn: &str) -> &str {
    let Some((prefix, resource)) = arn.rsplit_once(':') else {
        return arn;
    };
    match resource.strip_prefix("assumed-role/") {
        Some(role_and_session) => match role_and_session.split_once('/') {
            Some((role, _session)) => &arn[..prefix.len() + 1 + "assumed-role/".len() + role.len()],
            None => arn,
        },
        None => arn,
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// What identifies "the same request": method, path and body.
pub fn fingerprint(req: &Request) -> String {
    let mut hash = Sha256::new();
    hash.update(req.method().as_str());
    hash.update(b" ");
    hash.update(req.uri().path());
    hash.update(b"\n");
    hash.update(req.body().as_ref());
    format!("{:x}", hash.finalize())
}

/// The scoped key of the request [`serve`] runs, for a store that makes the operation itself idempotent
/// across crashes (certificates, keyed increments); `None` without an `Idempotency-Key`.
pub fn key(req: &Request) -> Option<&str> {
    req.extensions().get::<ScopedKey>().map(|k| k.0.as_str())
}

/// The scoped key, as [`serve`] hands it to the handler in the request's extensions.
#[derive(Debug, Clone)]
struct ScopedKey(String);

/// Serves `handler` at most once per idempotency key scoped to `scope` (see [`run`]); what
/// `handler!(f, idempotency = "scope")` expands to. The handler finds the scoped key with [`key`].
pub async fn serve<'a, F, Fut>(
    stores: &'a Stores,
    req: Request,
    scope: &str,
    handler: F,
) -> Response
where
    F: FnOnce(&'a Stores, Request) -> Fut,
    Fut: Future<Output = Result<Response, strata_core::Error>>,
{
    run(stores, req, scope, |mut req, key| async move {
        if let Some(key) = key {
            req.extensions_mut().insert(ScopedKey(key));
        }
        crate::response::from_result(handler(stores, req).await)
    })
    .await
}

/// [`serve`], unless `keeps(stores)`: then the store keeps the key itself, in the write the operation makes
/// anyway, and no record is claimed or written here (what `handler!(f, idempotency = "scope", kept_by =
/// keeps)` expands to). The key is checked and scoped the same way; the handler answers a retry and marks
/// the answer with [`replayed`].
pub async fn serve_kept<'a, F, Fut>(
    stores: &'a Stores,
    req: Request,
    scope: &str,
    keeps: fn(&Stores) -> bool,
    handler: F,
) -> Response
where
    F: FnOnce(&'a Stores, Request) -> Fut,
    Fut: Future<Output = Result<Response, strata_core::Error>>,
{
    if !keeps(stores) {
        return serve(stores, req, scope, handler).await;
    }
    let mut req = req;
    match scoped_key(&req, scope) {
        Ok(Some(key)) => {
            // A record an earlier request wrote under the key (the operation ran before the store kept
            // its keys, e.g. under another counter mode) still answers.
            match stores.idempotency.look(&key, &fingerprint(&req)).await {
                Ok(Some(stored)) => return replay(stored),
                Ok(None) => {}
                Err(e) => return error(&e),
            }
            req.extensions_mut().insert(ScopedKey(key));
        }
        Ok(None) => {}
        Err(e) => return error(&e),
    }
    crate::response::from_result(handler(stores, req).await)
}

/// Marks an answer as the replay of an earlier attempt's, as a replayed record is
/// (`idempotent-replayed: true`).
pub fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REPLAYED, http::HeaderValue::from_static("true"));
    response
}

const REPLAYED: &str = "idempotent-replayed";

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
    let owner = match stores.idempotency.claim(&key, &fingerprint).await {
        Ok(Claim::Replay(stored)) => return replay(stored),
        Ok(Claim::Proceed(owner)) => owner,
        Err(e) => return error(&e),
    };
    // Keep time for recording the answer (or releasing the key) after the operation.
    let response =
        strata_core::deadline::keeping(RECORD_RESERVE, handler(req, Some(key.clone()))).await;
    let oversized = response.body().as_ref().len() > MAX_RECORD_BODY_BYTES;
    if oversized {
        tracing::error!(
            bytes = response.body().as_ref().len(),
            "an answer over {MAX_RECORD_BODY_BYTES} bytes is not kept for its idempotency key"
        );
    }
    if oversized || !replayable(response.status()) {
        if let Err(e) = stores.idempotency.release(&key, &owner).await {
            tracing::warn!(error = %e, "cannot release an idempotency key");
        }
        stores.settled(&key, false).await;
        return response;
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v != JSON);
    let stored = Stored {
        status: response.status().as_u16(),
        body: String::from_utf8_lossy(response.body().as_ref()).into_owned(),
        content_type: content_type.map(str::to_owned),
    };
    let recorded = match stores
        .idempotency
        .complete(&key, &owner, &fingerprint, &stored)
        .await
    {
        Ok(kept) => kept,
        Err(e) => {
            // The operation happened; only the record of its answer is missing. The client gets the
            // answer: an error here would make it retry an operation that took effect. The claim expires
            // on its own; a retry after that runs the operation again, which stores that take the key
            // dedupe (certificates, keyed increments).
            tracing::error!(error = %e, "cannot store an idempotent response");
            false
        }
    };
    stores.settled(&key, recorded).await;
    response
}

/// Time kept after the operation, within the request's deadline, for the idempotency record's write.
pub const RECORD_RESERVE: std::time::Duration = std::time::Duration::from_millis(700);

/// Whether an answer is remembered for the key's retention. A `5xx` or `429` says the operation did not
/// (or may not have) taken effect and asks for a retry: remembered, it would be replayed to that retry for a
/// day. The key is released instead, and the retry runs the operation again.
pub fn replayable(status: http::StatusCode) -> bool {
    !(status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS)
}

const JSON: &str = "application/json";

/// The stored answer again: its status, body and content type, marked as a replay. (`retry-after` never
/// needs keeping: only answers that carry it, `429` and `503`, are not stored.)
fn replay(stored: Stored) -> Response {
    let mut response = http::Response::builder()
        .status(stored.status)
        .header(
            http::header::CONTENT_TYPE,
            stored.content_type.as_deref().unwrap_or(JSON),
        )
        .header(REPLAYED, "true")
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
