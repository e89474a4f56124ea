//! The key/value handlers: HTTP in, port call, HTTP out.
//!
//! First the types of the bodies the handlers read and answer with (what a handler serializes is what the
//! OpenAPI document's schema describes), then the handlers. Each operation's OpenAPI description, and the
//! schema helpers the body types name, are in [`crate::openapi::keys`].

use crate::openapi;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strata_core::kv::{Key, Value};
use strata_core::{Error, Stores};
use strata_http::request::{body, path_param};
use strata_http::response::json;
use strata_http::{Request, Response};
use utoipa::ToSchema;

/// The body of `PUT /kv/keys/{key}` and of `PUT /kv/transactions/{id}/keys/{key}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct KvWrite {
    #[schema(value_type = openapi::keys::KvValue)]
    pub value: String,
}

/// A key, its value and the version that wrote it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KvItem {
    #[schema(value_type = openapi::keys::KvKeyString)]
    pub key: String,
    #[schema(value_type = openapi::keys::KvValue)]
    pub value: String,
    #[schema(schema_with = openapi::keys::version_schema)]
    pub version: u64,
}

/// The answer of `DELETE /kv/keys/{key}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KvDeleted {
    #[schema(value_type = openapi::keys::KvKeyString)]
    pub key: String,
    /// `false` when the key was absent.
    pub deleted: bool,
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
