//! The OpenAPI 3.1 document of the HTTP API (`infra/openapi.json`), compiled in and served by the local
//! server at `GET /openapi.json`. The suite checks it against [`crate::routes::all`] (every route is an
//! operation, nothing else is, except the local-only operations it marks `x-strata-local-only`), and
//! `infra/scripts/schemathesis` tests the running server against it.

use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// `GET /openapi.json` → `200` the document.
pub async fn serve() -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
