//! API-wide handlers.

use http::StatusCode;
use serde_json::json;
use strata_core::{Error, Stores};
use strata_http::response::{error, json};
use strata_http::{Request, Response};

/// `GET /health` → `200 {"status":"ok","store":"embedded"|"dynamodb"}`.
pub async fn health(stores: &Stores, _req: Request) -> Response {
    json(
        StatusCode::OK,
        &json!({"status": "ok", "store": stores.backend.as_str()}),
    )
}

/// Any request no route matches → `404 route_not_found`.
pub async fn not_found(_stores: &Stores, req: Request) -> Response {
    error(&Error::not_found(
        "route_not_found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    ))
}
