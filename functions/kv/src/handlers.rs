//! The key/value handlers: HTTP in, port call, HTTP out.

use http::StatusCode;
use serde_json::json;
use strata_core::kv::{Key, Value};
use strata_core::{Error, Stores};
use strata_http::request::{json_object, path_param};
use strata_http::response::{from_result, json};
use strata_http::{Request, Response};

pub fn key(req: &Request) -> Result<Key, Error> {
    Key::parse(&path_param(req, "key")?)
}

pub fn key_not_found(key: &Key) -> Error {
    Error::not_found(
        "key_not_found",
        format!("no value is stored under key {:?}", key.as_str()),
    )
}

/// `GET /kv/keys/{key}` → `200 {"key","value","version"}`, `404 key_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let key = key(&req)?;
            let item = stores
                .kv
                .get(&key)
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

/// `PUT /kv/keys/{key}` with `{"value": "..."}` → `200 {"key","value","version"}`.
pub async fn put(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let key = key(&req)?;
            let value = Value::parse(json_object(&req)?.string("value")?)?;
            let version = stores.kv.put(&key, &value).await?;
            Ok(json(
                StatusCode::OK,
                &json!({"key": key.as_str(), "value": value.as_str(), "version": version}),
            ))
        }
        .await,
    )
}

/// `DELETE /kv/keys/{key}` → `200 {"key","deleted": bool}`; deleting an absent key is not an error.
pub async fn delete(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let key = key(&req)?;
            let deleted = stores.kv.delete(&key).await?;
            Ok(json(
                StatusCode::OK,
                &json!({"key": key.as_str(), "deleted": deleted.existed}),
            ))
        }
        .await,
    )
}
