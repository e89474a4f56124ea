//! The OpenAPI operations of the key handlers ([`crate::handlers`]) and the schemas of keys and values,
//! which the transaction routes name too.

use crate::handlers::{KvDeleted, KvItem, KvWrite};
use serde_json::json;
use strata_core::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use strata_http::openapi::{
    NO_SPACE_OR_CONTROL, Operation, OperationBuilder, Shared, integer, json_body, link, ok,
    path_parameter, responses, string,
};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The schema of a key: what [`Key::parse`](strata_core::kv::Key::parse) accepts.
#[derive(Debug)]
pub struct KvKeyString;

impl PartialSchema for KvKeyString {
    fn schema() -> RefOr<Schema> {
        string(
            Some("1 to 1024 bytes of UTF-8, no whitespace, no control characters."),
            Some(1),
            Some(MAX_KEY_BYTES),
            Some(NO_SPACE_OR_CONTROL),
        )
        .into()
    }
}

impl ToSchema for KvKeyString {}

/// The schema of a value: what [`Value::parse`](strata_core::kv::Value::parse) accepts.
#[derive(Debug)]
pub struct KvValue;

impl PartialSchema for KvValue {
    fn schema() -> RefOr<Schema> {
        string(
            Some("Any UTF-8 string up to 256 KiB, kept byte for byte."),
            None,
            Some(MAX_VALUE_BYTES),
            None,
        )
        .into()
    }
}

impl ToSchema for KvValue {}

/// A version: a positive integer.
pub fn version_schema() -> utoipa::openapi::Object {
    integer(1, None)
}

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
