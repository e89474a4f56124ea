//! The key/value handlers: HTTP in, port call, HTTP out.
//!
//! The bodies the handlers read and answer with are [`strata_api_types::kv`]'s (what a handler serializes is
//! what the OpenAPI document's schema describes). Each operation's OpenAPI description is in
//! [`crate::openapi::keys`].

use http::StatusCode;
use strata_api_types::kv::{KvDeleted, KvItem, KvWrite};
use strata_core::kv::{Key, Value};
use strata_core::{Error, Stores};
use strata_http::request::{body, path_param};
use strata_http::response::json;
use strata_http::{Request, Response};

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
