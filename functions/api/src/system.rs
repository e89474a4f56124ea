//! API-wide handlers.

use http::StatusCode;
use serde::Serialize;
use strata_core::{Error, Stores};
use strata_http::openapi::{Operation, OperationBuilder, Shared, ok, responses};
use strata_http::response::json;
use strata_http::{Request, Response};
use utoipa::ToSchema;
use utoipa::openapi::schema::ObjectBuilder;

/// The answer of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[schema(schema_with = ok_schema)]
    pub status: &'static str,
    #[schema(schema_with = store_schema)]
    pub store: &'static str,
}

/// Exactly `"ok"`.
fn ok_schema() -> utoipa::openapi::Object {
    strata_http::openapi::constant("ok".into())
}

/// The backends' names.
fn store_schema() -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
        .enum_values(Some(strata_core::Backend::ALL.map(|b| b.as_str())))
        .build()
}

/// `GET /health` → `200 {"status":"ok","store":"embedded"|"dynamodb"}`.
pub async fn health(stores: &Stores, _req: Request) -> Result<Response, Error> {
    Ok(json(
        StatusCode::OK,
        &Health {
            status: "ok",
            store: stores.backend.as_str(),
        },
    ))
}

/// Any request no route matches → `404 route_not_found`.
pub async fn not_found(_stores: &Stores, req: Request) -> Result<Response, Error> {
    Err(route_not_found(req.method(), req.uri().path()))
}

/// The error of a request no route matches.
pub fn route_not_found(method: &http::Method, path: &str) -> Error {
    Error::not_found(
        "route_not_found",
        format!("no route for {method} {}", strata_core::error::prefix(path)),
    )
}

/// The OpenAPI operation of [`health`].
pub fn health_openapi() -> Operation {
    let op = OperationBuilder::new()
        .tag("system")
        .summary(Some("Liveness and the store behind this deployment"))
        .description(Some("Always `200` while the server runs."));
    responses(
        op,
        [
            ("200", ok::<Health>("The server is up.").build().into()),
            Shared::Unauthorized.plain(),
            Shared::TooManyRequests.plain(),
        ],
    )
    .build()
}
