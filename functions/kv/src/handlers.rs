//! The key/value handlers: HTTP in, port call, HTTP out.
//!
//! Next to each handler: the types of the bodies it answers with (what it serializes is what the OpenAPI
//! document's schema describes) and reads, and its `*_openapi` function, the operation of the document that
//! its route in `ROUTES` carries.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_core::kv::{Key, MAX_KEY_BYTES, MAX_VALUE_BYTES, Value};
use strata_core::{Error, Stores};
use strata_http::openapi::{
    NO_SPACE_OR_CONTROL, Operation, OperationBuilder, Shared, integer, json_body, link, ok,
    path_parameter, responses, string,
};
use strata_http::request::{body, path_param};
use strata_http::response::json;
use strata_http::{Request, Response};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The schema of a key: what [`Key::parse`] accepts.
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

/// The schema of a value: what [`Value::parse`] accepts.
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

/// The body of `PUT /kv/keys/{key}` and of `PUT /kv/transactions/{id}/keys/{key}`.
#[derive(Deserialize, ToSchema)]
pub struct KvWrite {
    #[schema(value_type = KvValue)]
    pub value: String,
}

/// A version: a positive integer.
pub fn version_schema() -> utoipa::openapi::Object {
    integer(1, None)
}

/// A key, its value and the version that wrote it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KvItem {
    #[schema(value_type = KvKeyString)]
    pub key: String,
    #[schema(value_type = KvValue)]
    pub value: String,
    #[schema(schema_with = version_schema)]
    pub version: u64,
}

/// The answer of `DELETE /kv/keys/{key}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KvDeleted {
    #[schema(value_type = KvKeyString)]
    pub key: String,
    /// `false` when the key was absent.
    pub deleted: bool,
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

pub fn key(req: &Request) -> Result<Key, Error> {
    Key::parse(&path_param(req, "key")?)
}

pub fn key_not_found(key: &Key) -> Error {
    Error::not_found(
        "key_not_found",
        format!(
            "no value is stored under key {}",
            strata_core::error::quote(key.as_str())
        ),
    )
}

/// `GET /kv/keys/{key}` → `200 {"key","value","version"}`, `404 key_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Result<Response, Error> {
    let key = key(&req)?;
    let item = stores
        .kv
        .get(&key)
        .await?
        .ok_or_else(|| key_not_found(&key))?;
    Ok(json(
        StatusCode::OK,
        &KvItem {
            key: key.as_str().to_owned(),
            value: item.value,
            version: item.version,
        },
    ))
}

/// `PUT /kv/keys/{key}` with `{"value": "..."}` → `200 {"key","value","version"}`.
pub async fn put(stores: &Stores, req: Request) -> Result<Response, Error> {
    let key = key(&req)?;
    let value = Value::parse(body::<KvWrite>(&req)?.value)?;
    let version = stores.kv.put(&key, &value).await?;
    Ok(json(
        StatusCode::OK,
        &KvItem {
            key: key.as_str().to_owned(),
            value: value.as_str().to_owned(),
            version,
        },
    ))
}

/// `DELETE /kv/keys/{key}` → `200 {"key","deleted": bool}`; deleting an absent key is not an error.
pub async fn delete(stores: &Stores, req: Request) -> Result<Response, Error> {
    let key = key(&req)?;
    let deleted = stores.kv.delete(&key).await?;
    Ok(json(
        StatusCode::OK,
        &KvDeleted {
            key: key.as_str().to_owned(),
            deleted: deleted.existed,
        },
    ))
}

/// The OpenAPI operation of [`get`].
pub fn get_openapi() -> Operation {
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

/// The OpenAPI operation of [`put`].
pub fn put_openapi() -> Operation {
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

/// The OpenAPI operation of [`delete`].
pub fn delete_openapi() -> Operation {
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
