//! The key/value transaction handlers (CONTRACT.md §1): HTTP in, [`KvTransactions`] port call, HTTP out.
//!
//! The bodies the handlers read and answer with are [`strata_api_types::kv::tx`]'s (what a handler
//! serializes is what the OpenAPI document's schema describes). Each operation's OpenAPI description is in
//! [`crate::openapi::transactions`].
//!
//! [`KvTransactions`]: strata_core::kv::tx::KvTransactions

use crate::handlers::{key, key_not_found};
use http::StatusCode;
use strata_api_types::kv::KvWrite;
use strata_api_types::kv::tx::{
    TxBegin, TxBegun, TxCommitted, TxDeleted, TxItem, TxRolledBack, TxWritten,
};
use strata_core::kv::Value;
use strata_core::kv::tx::TxId;
use strata_core::time::rfc3339;
use strata_core::{Error, Stores};
use strata_http::request::{body, path_param};
use strata_http::response::json;
use strata_http::{Request, Response, idempotency};

/// A transaction as a request names it: the id the client holds, and the id the store keeps it under.
/// A transaction belongs to the caller who began it (CONTRACT.md §1): for a caller with an identity the
/// store keeps it under a digest of the caller and the id ([`TxId::owned_by`]), so that another caller who
/// holds the id finds none (`404 transaction_not_found`). An anonymous caller's is the id itself.
struct Named {
    id: TxId,
    stored: TxId,
}

impl Named {
    fn new(req: &Request, id: TxId) -> Self {
        let stored = match idempotency::caller(req) {
            Some(caller) => id.owned_by(&caller.digest()),
            None => id.clone(),
        };
        Self { id, stored }
    }

    /// The store's answer, its `transaction_not_found` naming the client's id rather than the stored one.
    fn answer<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        result.map_err(|e| {
            if e.code == "transaction_not_found" {
                strata_core::kv::tx::not_found(self.id.as_str())
            } else {
                e
            }
        })
    }
}

fn tx_id(req: &Request) -> Result<Named, Error> {
    Ok(Named::new(req, TxId::parse(&path_param(req, "id")?)?))
}

/// `POST /kv/transactions` (body `{}` or empty) → `201 {"id","expires_at"}`.
pub async fn begin(stores: &Stores, req: Request) -> Result<Response, Error> {
    if !req.body().as_ref().is_empty() {
        body::<TxBegin>(&req)?;
    }
    let tx = Named::new(&req, TxId::generate());
    let began = stores.kv_tx.begin(tx.stored.clone()).await?;
    Ok(json(
        StatusCode::CREATED,
        &TxBegun {
            id: tx.id.as_str().to_owned(),
            expires_at: rfc3339(began.expires_at),
        },
    ))
}

/// `GET /kv/transactions/{id}/keys/{key}` → as `GET /kv/keys/{key}`; `version` is `null` for the
/// transaction's own, not yet committed, write.
pub async fn get(stores: &Stores, req: Request) -> Result<Response, Error> {
    let key = key(&req)?;
    let tx = tx_id(&req)?;
    let item = tx
        .answer(stores.kv_tx.get(&tx.stored, &key).await)?
        .ok_or_else(|| key_not_found(&key))?;
    Ok(json(
        StatusCode::OK,
        &TxItem {
            key: key.as_str().to_owned(),
            value: item.value,
            version: item.version,
        },
    ))
}

/// `PUT /kv/transactions/{id}/keys/{key}` with `{"value"}` → `200 {"key","value"}`, buffered.
pub async fn put(stores: &Stores, req: Request) -> Result<Response, Error> {
    let key = key(&req)?;
    let value = Value::parse(body::<KvWrite>(&req)?.value)?;
    let tx = tx_id(&req)?;
    let shown = value.as_str().to_owned();
    tx.answer(stores.kv_tx.stage(&tx.stored, &key, Some(value)).await)?;
    Ok(json(
        StatusCode::OK,
        &TxWritten {
            key: key.as_str().to_owned(),
            value: shown,
        },
    ))
}

/// `DELETE /kv/transactions/{id}/keys/{key}` → `200 {"key"}`, buffered.
pub async fn delete(stores: &Stores, req: Request) -> Result<Response, Error> {
    let key = key(&req)?;
    let tx = tx_id(&req)?;
    tx.answer(stores.kv_tx.stage(&tx.stored, &key, None).await)?;
    Ok(json(
        StatusCode::OK,
        &TxDeleted {
            key: key.as_str().to_owned(),
        },
    ))
}

/// `POST /kv/transactions/{id}/commit` → `200 {"id","committed":true,"writes":n}`, `409 conflict`.
pub async fn commit(stores: &Stores, req: Request) -> Result<Response, Error> {
    let tx = tx_id(&req)?;
    let writes = tx.answer(stores.kv_tx.commit(&tx.stored).await)?;
    Ok(json(
        StatusCode::OK,
        &TxCommitted {
            id: tx.id.as_str().to_owned(),
            committed: true,
            writes,
        },
    ))
}

/// `POST /kv/transactions/{id}/rollback` → `200 {"id","rolled_back":true}`.
pub async fn rollback(stores: &Stores, req: Request) -> Result<Response, Error> {
    let tx = tx_id(&req)?;
    tx.answer(stores.kv_tx.rollback(&tx.stored).await)?;
    Ok(json(
        StatusCode::OK,
        &TxRolledBack {
            id: tx.id.as_str().to_owned(),
            rolled_back: true,
        },
    ))
}
