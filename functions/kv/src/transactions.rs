//! The key/value transaction handlers (CONTRACT.md §1): HTTP in, [`KvTransactions`] port call, HTTP out.
//!
//! [`KvTransactions`]: strata_core::kv::tx::KvTransactions

use crate::handlers::{key, key_not_found};
use http::StatusCode;
use serde_json::json;
use strata_core::kv::Value;
use strata_core::kv::tx::TxId;
use strata_core::time::rfc3339;
use strata_core::{Error, Stores};
use strata_http::request::{json_object, path_param};
use strata_http::response::{from_result, json};
use strata_http::{Request, Response, idempotency};

fn tx_id(req: &Request) -> Result<TxId, Error> {
    TxId::parse(&path_param(req, "id")?)
}

/// `POST /kv/transactions` (body `{}` or empty) → `201 {"id","expires_at"}`.
pub async fn begin(stores: &Stores, req: Request) -> Response {
    idempotency::run(stores, req, "kv-tx-begin", |req, _| async move {
        from_result(
            async {
                if !req.body().as_ref().is_empty() {
                    json_object(&req)?;
                }
                let began = stores.kv_tx.begin().await?;
                Ok(json(
                    StatusCode::CREATED,
                    &json!({"id": began.id.as_str(), "expires_at": rfc3339(began.expires_at)}),
                ))
            }
            .await,
        )
    })
    .await
}

/// `GET /kv/transactions/{id}/keys/{key}` → as `GET /kv/keys/{key}`; `version` is `null` for the
/// transaction's own, not yet committed, write.
pub async fn get(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let key = key(&req)?;
            let id = tx_id(&req)?;
            let item = stores
                .kv_tx
                .get(&id, &key)
                .await?
                .ok_or_else(|| key_not_found(&key))?;
            Ok(json(
                StatusCode::OK,
                &json!({"key": key.as_str(), "value": item.value, "version": item.version}),
            ))
        }
        .await,
    )
}

/// `PUT /kv/transactions/{id}/keys/{key}` with `{"value"}` → `200 {"key","value"}`, buffered.
pub async fn put(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let key = key(&req)?;
            let value = Value::parse(json_object(&req)?.string("value")?)?;
            let id = tx_id(&req)?;
            let shown = value.as_str().to_owned();
            stores.kv_tx.stage(&id, &key, Some(value)).await?;
            Ok(json(
                StatusCode::OK,
                &json!({"key": key.as_str(), "value": shown}),
            ))
        }
        .await,
    )
}

/// `DELETE /kv/transactions/{id}/keys/{key}` → `200 {"key"}`, buffered.
pub async fn delete(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let key = key(&req)?;
            let id = tx_id(&req)?;
            stores.kv_tx.stage(&id, &key, None).await?;
            Ok(json(StatusCode::OK, &json!({"key": key.as_str()})))
        }
        .await,
    )
}

/// `POST /kv/transactions/{id}/commit` → `200 {"id","committed":true,"writes":n}`, `409 conflict`.
pub async fn commit(stores: &Stores, req: Request) -> Response {
    // With an Idempotency-Key, a retry of a commit whose answer was lost gets that answer again.
    idempotency::run(stores, req, "kv-tx-commit", |req, _| async move {
        from_result(
            async {
                let id = tx_id(&req)?;
                let writes = stores.kv_tx.commit(&id).await?;
                Ok(json(
                    StatusCode::OK,
                    &json!({"id": id.as_str(), "committed": true, "writes": writes}),
                ))
            }
            .await,
        )
    })
    .await
}

/// `POST /kv/transactions/{id}/rollback` → `200 {"id","rolled_back":true}`.
pub async fn rollback(stores: &Stores, req: Request) -> Response {
    idempotency::run(stores, req, "kv-tx-rollback", |req, _| async move {
        from_result(
            async {
                let id = tx_id(&req)?;
                stores.kv_tx.rollback(&id).await?;
                Ok(json(
                    StatusCode::OK,
                    &json!({"id": id.as_str(), "rolled_back": true}),
                ))
            }
            .await,
        )
    })
    .await
}
