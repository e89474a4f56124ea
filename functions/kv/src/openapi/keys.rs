//! The OpenAPI operations of the key handlers ([`crate::handlers`]) and the `{key}` parameter, which the
//! transaction routes name too.

use serde_json::json;
use strata_api_types::kv::{KvDeleted, KvItem, KvKeyString, KvWrite};
use strata_http::openapi::{
    Operation, OperationBuilder, Shared, json_body, link, ok, path_parameter, responses,
};

// The body types' schemas state the core's limits; their crate (which builds without the core) keeps
// copies, which must not drift.
const _: () = assert!(strata_api_types::kv::MAX_KEY_BYTES == strata_core::kv::MAX_KEY_BYTES);
const _: () = assert!(strata_api_types::kv::MAX_VALUE_BYTES == strata_core::kv::MAX_VALUE_BYTES);

/// The `{key}` path parameter of the key/value routes.
pub fn key_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "key",
        "The key, percent-encoded UTF-8; it may contain `/` (the rest of the path is the key).",
        strata_http::openapi::schema_ref::<KvKeyString>(),
        json!("greeting"),
    )
}

/// The OpenAPI operation of [`crate::handlers::get`].
pub fn get() -> Operation {
    let op = OperationBuilder::new()
        .tag("kv")
        .summary(Some("Read a key"))
        .description(Some("The latest acknowledged value and its version."))
        .parameter(key_parameter());
    responses(op, [
        (
            "200",
            ok::<KvItem>("The value and the version that wrote it.")
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_key` (empty, over 1024 bytes, whitespace or control characters) or `invalid_path`."),
        Shared::Unauthorized.plain(),
        Shared::NotFound.with("`key_not_found`: no value is stored under the key."),
        Shared::TooManyRequests.plain(),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.plain(),
    ])
    .build()
}

/// The OpenAPI operation of [`crate::handlers::put`].
pub fn put() -> Operation {
    let op = OperationBuilder::new()
        .tag("kv")
        .summary(Some("Write a key"))
        .description(Some("Single-key write, atomic and durable when acknowledged; the version is greater than any earlier version of the key (also across deletes)."))
        .parameter(key_parameter())
        .request_body(Some(
            json_body::<KvWrite>(true, json!({"value": "hello world"}))
                .build(),
        ));
    responses(op, [
        (
            "200",
            ok::<KvItem>("The value as stored and its new version.")
                .link("Read", link("kv-get", "Read the key back.", &[("key", "$response.body#/key")]))
                .link("Delete", link("kv-delete", "Delete the key.", &[("key", "$response.body#/key")]))
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_key`, `invalid_path`, `invalid_json` (not a JSON object) or `invalid_field` (`value` missing or not a string)."),
        Shared::Unauthorized.plain(),
        Shared::RequestTimeout.plain(),
        Shared::PayloadTooLarge.with("`body_too_large` (over 1 MiB) or `value_too_large` (over 256 KiB)."),
        Shared::TooManyRequests.unknown_outcome("write"),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.unknown_outcome("write"),
    ])
    .build()
}

/// The OpenAPI operation of [`crate::handlers::delete`].
pub fn delete() -> Operation {
    let op = OperationBuilder::new()
        .tag("kv")
        .summary(Some("Delete a key"))
        .description(Some(
            "Deleting an absent key is not an error: `deleted` is `false` and nothing is written.",
        ))
        .parameter(key_parameter());
    responses(
        op,
        [
            (
                "200",
                ok::<KvDeleted>("Whether the key existed.").build().into(),
            ),
            Shared::BadRequest.with("`invalid_key` or `invalid_path`."),
            Shared::Unauthorized.plain(),
            Shared::TooManyRequests.unknown_outcome("delete"),
            Shared::InternalError.plain(),
            Shared::StoreUnavailable.unknown_outcome("delete"),
        ],
    )
    .build()
}
