//! The key/value transaction handlers (CONTRACT.md §1): HTTP in, [`KvTransactions`] port call, HTTP out.
//!
//! Next to each handler: the types of the bodies it answers with (what it serializes is what the OpenAPI
//! document's schema describes) and reads, and its `*_openapi` function, the operation of the document that
//! its route in `ROUTES` carries.
//!
//! [`KvTransactions`]: strata_core::kv::tx::KvTransactions

use crate::handlers::{KvKeyString, KvValue, KvWrite, key, key_not_found, key_parameter};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_core::defaults::TX_IDLE_TIMEOUT;
use strata_core::kv::Value;
use strata_core::kv::tx::{MAX_TX_BYTES, MAX_TX_KEYS, TxId};
use strata_core::time::rfc3339;
use strata_core::{Error, Stores};
use strata_http::openapi::{
    Header, Operation, OperationBuilder, Shared, headers, honours_idempotency_key, idempotency_key,
    json_body, link, ok, path_parameter, responses, schema_ref, string, unknown,
};
use strata_http::request::{body, path_param};
use strata_http::response::json;
use strata_http::{Request, Response, idempotency};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The schema of a transaction id: what [`TxId::parse`] accepts.
pub struct TxIdString;

impl PartialSchema for TxIdString {
    fn schema() -> RefOr<Schema> {
        string(
            Some("32 lowercase hex digits."),
            None,
            None,
            Some("^[0-9a-f]{32}$"),
        )
        .into()
    }
}

impl ToSchema for TxIdString {}

/// The body of `POST /kv/transactions`: an object whose fields are not read.
#[derive(Deserialize, ToSchema)]
#[schema(description = "No fields are read.")]
pub struct TxBegin {}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxBegun {
    #[schema(value_type = TxIdString)]
    pub id: String,
    /// When the transaction expires if it stays idle (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// `null` for the transaction's own, not yet committed, write.
fn tx_version_schema() -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(1))
        .description(Some(
            "`null` for the transaction's own, not yet committed, write.",
        ))
        .build()
}

/// A key as the transaction sees it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxItem {
    #[schema(value_type = KvKeyString)]
    pub key: String,
    #[schema(value_type = KvValue)]
    pub value: String,
    #[schema(schema_with = tx_version_schema, required = true)]
    pub version: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxWritten {
    #[schema(value_type = KvKeyString)]
    pub key: String,
    #[schema(value_type = KvValue)]
    pub value: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxDeleted {
    #[schema(value_type = KvKeyString)]
    pub key: String,
}

/// Exactly `true`.
fn always_true() -> utoipa::openapi::Object {
    strata_http::openapi::constant(true.into())
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxCommitted {
    #[schema(value_type = TxIdString)]
    pub id: String,
    #[schema(schema_with = always_true)]
    pub committed: bool,
    #[schema(schema_with = writes_schema)]
    pub writes: usize,
}

fn writes_schema() -> utoipa::openapi::Object {
    strata_http::openapi::integer(0, None)
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxRolledBack {
    #[schema(value_type = TxIdString)]
    pub id: String,
    #[schema(schema_with = always_true)]
    pub rolled_back: bool,
}

/// The `{id}` path parameter of the transaction routes.
fn tx_id_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "id",
        "A transaction id from `POST /kv/transactions`; anything else is `404 transaction_not_found`.",
        schema_ref::<TxIdString>(),
        json!("0123456789abcdef0123456789abcdef"),
    )
}

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

/// The OpenAPI operation of [`begin`].
pub fn begin_openapi() -> Operation {
    let outcome = unknown("a transaction may have been opened, and expires unused");
    let op = OperationBuilder::new()
        .tag("kv-transactions")
        .summary(Some("Begin a transaction"))
        .description(Some(honours_idempotency_key(&format!("An optimistic, serializable transaction that expires after an idle timeout ({} s unless configured otherwise).", TX_IDLE_TIMEOUT.as_secs()))))
        .parameter(idempotency_key())
        .request_body(Some(
            json_body::<TxBegin>(false, json!({}))
                .description(Some("`{}` or no body at all."))
                .build(),
        ));
    responses(op, [
        (
            "201",
            ok::<TxBegun>("The new transaction.")
                .link("ReadInTransaction", link("kv-tx-get", "Read a key in the new transaction.", &[("id", "$response.body#/id")]))
                .link("WriteInTransaction", link("kv-tx-put", "Buffer a write in the new transaction.", &[("id", "$response.body#/id")]))
                .link("DeleteInTransaction", link("kv-tx-delete", "Buffer a delete in the new transaction.", &[("id", "$response.body#/id")]))
                .link("Commit", link("kv-tx-commit", "Commit the new transaction.", &[("id", "$response.body#/id")]))
                .link("Rollback", link("kv-tx-rollback", "Roll the new transaction back.", &[("id", "$response.body#/id")]))
                .extensions(headers(&[Header::IdempotentReplayed], &[]))
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_json` (a body that is not a JSON object) or `invalid_idempotency_key`."),
        Shared::Unauthorized.plain(),
        Shared::RequestTimeout.plain(),
        Shared::Conflict.with("`request_in_progress` (with `retry-after`)."),
        Shared::PayloadTooLarge.with("`body_too_large`."),
        Shared::IdempotencyKeyReused.with("`idempotency_key_reused`."),
        Shared::TooManyRequests.outcome(&outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome_and(&outcome, "`too_many_transactions` (local server, past `--max-open-transactions`; with `max_open_transactions`) or `transaction_memory_full` (past `--max-transaction-memory-mb`): nothing was created; retry after `retry-after` seconds."),
    ])
    .build()
}

/// The OpenAPI operation of [`get`].
pub fn get_openapi() -> Operation {
    let outcome =
        "the read may or may not have been recorded for validation; the transaction stays usable";
    let op = OperationBuilder::new()
        .tag("kv-transactions")
        .summary(Some("Read a key in a transaction"))
        .description(Some(format!("Sees the transaction's own buffered writes first; a key read from the store (present or absent) is validated at commit and counts toward the {MAX_TX_KEYS}-key limit.")))
        .parameter(tx_id_parameter())
        .parameter(key_parameter());
    responses(op, [
        (
            "200",
            ok::<TxItem>("The value; `version` is `null` for the transaction's own, not yet committed, write.")
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_key` or `invalid_path`."),
        Shared::Unauthorized.plain(),
        Shared::NotFound.with("`transaction_not_found` (unknown, committed, rolled back or expired) or `key_not_found`."),
        Shared::PayloadTooLarge.with(&format!("`transaction_too_large`: the read would be the {}th distinct key; the transaction stays usable.", MAX_TX_KEYS + 1)),
        Shared::TooManyRequests.outcome(outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome_and(outcome, "`transaction_memory_full` (local server: the open transactions buffer `--max-transaction-memory-mb` together; with `max_transaction_memory`): the read was not recorded, the transaction is unchanged and usable."),
    ])
    .build()
}

/// The OpenAPI operation of [`put`].
pub fn put_openapi() -> Operation {
    let outcome = unknown("the write may or may not be buffered; the transaction stays usable");
    let op = OperationBuilder::new()
        .tag("kv-transactions")
        .summary(Some("Buffer a write in a transaction"))
        .description(Some("Invisible to everyone else until the commit."))
        .parameter(tx_id_parameter())
        .parameter(key_parameter())
        .request_body(Some(
            json_body::<KvWrite>(true, json!({"value": "hello world"})).build(),
        ));
    responses(op, [
        (
            "200",
            ok::<TxWritten>("The buffered write.")
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_key`, `invalid_path`, `invalid_json` or `invalid_field`."),
        Shared::Unauthorized.plain(),
        Shared::NotFound.with("`transaction_not_found`."),
        Shared::RequestTimeout.plain(),
        Shared::PayloadTooLarge.with(&format!("`body_too_large`, `value_too_large`, or `transaction_too_large` (over {MAX_TX_KEYS} distinct keys or {MAX_TX_BYTES} bytes; the transaction stays usable).")),
        Shared::TooManyRequests.outcome(&outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome_and(&outcome, "`transaction_memory_full` (local server: the open transactions buffer `--max-transaction-memory-mb` together; with `max_transaction_memory`): the write was not buffered, the transaction is unchanged and usable."),
    ])
    .build()
}

/// The OpenAPI operation of [`delete`].
pub fn delete_openapi() -> Operation {
    let outcome = unknown("the delete may or may not be buffered; the transaction stays usable");
    let op = OperationBuilder::new()
        .tag("kv-transactions")
        .summary(Some("Buffer a delete in a transaction"))
        .description(Some("Invisible to everyone else until the commit."))
        .parameter(tx_id_parameter())
        .parameter(key_parameter());
    responses(op, [
        (
            "200",
            ok::<TxDeleted>("The buffered delete.")
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_key` or `invalid_path`."),
        Shared::Unauthorized.plain(),
        Shared::NotFound.with("`transaction_not_found`."),
        Shared::PayloadTooLarge.with("`transaction_too_large`."),
        Shared::TooManyRequests.outcome(&outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome_and(&outcome, "`transaction_memory_full` (local server: the open transactions buffer `--max-transaction-memory-mb` together; with `max_transaction_memory`): the delete was not buffered, the transaction is unchanged and usable."),
    ])
    .build()
}

/// The OpenAPI operation of [`commit`].
pub fn commit_openapi() -> Operation {
    let outcome = "the transaction is still open and the same commit can be retried; on DynamoDB the commit may also have applied, and then the retry answers `404 transaction_not_found`";
    let op = OperationBuilder::new()
        .tag("kv-transactions")
        .summary(Some("Commit a transaction"))
        .description(Some(honours_idempotency_key("All or nothing. Every key the transaction read from the store is validated; if one changed, the commit fails with `409 conflict` naming the first such key, nothing is written and the transaction is over.")))
        .parameter(tx_id_parameter())
        .parameter(idempotency_key());
    responses(
        op,
        [
            (
                "200",
                ok::<TxCommitted>("Committed.")
                    .extensions(headers(&[Header::IdempotentReplayed], &[]))
                    .build()
                    .into(),
            ),
            Shared::BadRequest.with("`invalid_path` or `invalid_idempotency_key`."),
            Shared::Unauthorized.plain(),
            Shared::NotFound.with("`transaction_not_found`."),
            Shared::Conflict.with(
                "`conflict` (with `key`, the first conflicting key) or `request_in_progress`.",
            ),
            Shared::IdempotencyKeyReused.with("`idempotency_key_reused`."),
            Shared::TooManyRequests.outcome(outcome),
            Shared::InternalError.plain(),
            Shared::StoreUnavailable.outcome(outcome),
        ],
    )
    .build()
}

/// The OpenAPI operation of [`rollback`].
pub fn rollback_openapi() -> Operation {
    let outcome = unknown("the transaction may have been rolled back");
    let op = OperationBuilder::new()
        .tag("kv-transactions")
        .summary(Some("Roll a transaction back"))
        .description(Some(honours_idempotency_key(
            "Discards the buffered writes.",
        )))
        .parameter(tx_id_parameter())
        .parameter(idempotency_key());
    responses(
        op,
        [
            (
                "200",
                ok::<TxRolledBack>("Rolled back.")
                    .extensions(headers(&[Header::IdempotentReplayed], &[]))
                    .build()
                    .into(),
            ),
            Shared::BadRequest.with("`invalid_path` or `invalid_idempotency_key`."),
            Shared::Unauthorized.plain(),
            Shared::NotFound.with("`transaction_not_found`."),
            Shared::Conflict.with("`request_in_progress`."),
            Shared::IdempotencyKeyReused.with("`idempotency_key_reused`."),
            Shared::TooManyRequests.outcome(&outcome),
            Shared::InternalError.plain(),
            Shared::StoreUnavailable.outcome(&outcome),
        ],
    )
    .build()
}
