//! The OpenAPI operations of the transaction handlers ([`crate::transactions`]) and their `{id}`
//! parameter.

use super::keys::key_parameter;
use serde_json::json;
use strata_api_types::kv::KvWrite;
use strata_api_types::kv::tx::{
    TxBegin, TxBegun, TxCommitted, TxDeleted, TxIdString, TxItem, TxRolledBack, TxWritten,
};
use strata_core::defaults::TX_IDLE_TIMEOUT;
use strata_core::kv::tx::{MAX_TX_BYTES, MAX_TX_KEYS};
use strata_http::openapi::{
    Header, Operation, OperationBuilder, Shared, headers, honours_idempotency_key, idempotency_key,
    json_body, link, ok, path_parameter, responses, schema_ref, unknown,
};

/// The `{id}` path parameter of the transaction routes.
fn tx_id_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "id",
        "A transaction id from `POST /kv/transactions`; anything else is `404 transaction_not_found`.",
        schema_ref::<TxIdString>(),
        json!("0123456789abcdef0123456789abcdef"),
    )
}

/// The OpenAPI operation of [`crate::transactions::begin`].
pub fn begin() -> Operation {
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

/// The OpenAPI operation of [`crate::transactions::get`].
pub fn get() -> Operation {
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

/// The OpenAPI operation of [`crate::transactions::put`].
pub fn put() -> Operation {
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

/// The OpenAPI operation of [`crate::transactions::delete`].
pub fn delete() -> Operation {
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

/// The OpenAPI operation of [`crate::transactions::commit`].
pub fn commit() -> Operation {
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

/// The OpenAPI operation of [`crate::transactions::rollback`].
pub fn rollback() -> Operation {
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
