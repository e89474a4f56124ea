//! The OpenAPI 3.1 document of the HTTP API, generated from the code: each route's operation comes from the
//! function in its service's `openapi` module ([`strata_http::route::Route::openapi`]), at the route's own
//! method and path; the schemas are those of the types the handlers serialize (and of the bodies they read); the shared
//! error responses are [`strata_http::openapi`]'s. [`generate`] builds it; `infra/openapi.json` is its
//! committed output (`strata generate openapi` rewrites it, and a test fails when the two differ).
//!
//! The server serves the committed file ([`DOCUMENT`], compiled in): what the suite and
//! `infra/scripts/schemathesis` check, what clients download and what the repository shows are then one
//! and the same text, and serving costs nothing at start-up.

use crate::routes;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use serde_json::{Map, Value, json};
use strata_http::openapi::{Header, Operation, OperationBuilder, Shared, responses};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{HttpMethod, PathItem, PathsBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayItems, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    Components, ContentBuilder, InfoBuilder, OpenApiBuilder, RefOr, ResponseBuilder,
};

/// The document, as served: `infra/openapi.json`, the committed output of [`generate`].
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Where [`DOCUMENT`] lives in the repository, relative to the workspace root.
pub const DOCUMENT_PATH: &str = "infra/openapi.json";

/// `GET /openapi.json` → `200` the document.
pub async fn serve() -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

const DESCRIPTION: &str = "The HTTP API of strata, identical on AWS (API Gateway + Lambda + DynamoDB) and on the local server (`strata serve`, embedded store). What every operation, status and error code means, the limits and the line protocol are in the contract, `CONTRACT.md` at the root of the strata repository; this document describes the same HTTP API for machines. JSON in, JSON out; every error is `{\"error\": {\"code\", \"message\", ...}}`. Requests no operation matches (unknown paths, another method on a known path) get `404 route_not_found`. Bodies over 1 MiB are `413`; `429` only when a rate limit is configured; `401` from the local server started with `--auth-token` (security scheme `bearerAuth`), on every operation; on AWS with `AuthMode=jwt` API Gateway answers its own `401` (no token, or an invalid one) and `403` (a token without the route's scope), and with `AuthMode=iam` its own `403`, with the body `{\"message\": ...}`. Operations marked `x-strata-local-only` exist on the local server only; it also answers every request with an `x-request-id` header (the client's, or a new one), refuses what a web page sends (`403 host_not_allowed` for a `Host` that is not its own address, `localhost` or an `--allow-host` name; `403 origin_not_allowed` for a foreign `Origin`), takes only `application/json` bodies where JSON is read (`415`), and answers `HEAD` `404` as API Gateway does. Not described here: the key/value line protocol over TCP and over WebSocket (`GET /kv/ws` locally, an API Gateway WebSocket API on AWS), which speak lines, not HTTP requests and responses.";

const TAGS: &[(&str, &str)] = &[
    ("system", "Health."),
    ("kv", "Key/value store."),
    (
        "kv-transactions",
        "Optimistic, serializable key/value transactions.",
    ),
    (
        "certificates",
        "Share classes and gapless stock certificates.",
    ),
    ("widgets", "Widgets and their port-slot associations."),
    (
        "counters",
        "Counters (strong or eventual mode, per deployment).",
    ),
    ("local", "Local server only."),
];

/// API Gateway's greedy `{name+}` is OpenAPI's `{name}`.
pub fn openapi_path(path: &str) -> String {
    path.replace("+}", "}")
}

fn method(name: &str) -> HttpMethod {
    match name {
        "GET" => HttpMethod::Get,
        "PUT" => HttpMethod::Put,
        "POST" => HttpMethod::Post,
        "DELETE" => HttpMethod::Delete,
        "PATCH" => HttpMethod::Patch,
        "HEAD" => HttpMethod::Head,
        "OPTIONS" => HttpMethod::Options,
        other => panic!("route method {other} is not an OpenAPI operation"),
    }
}

/// Marks an operation of the local server only.
fn local_only(op: OperationBuilder) -> OperationBuilder {
    op.extensions(Some(Extensions::from_iter([(
        "x-strata-local-only",
        Value::Bool(true),
    )])))
}

/// `GET /openapi.json`, served by [`serve`].
fn openapi_operation() -> Operation {
    let document = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "openapi",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^3\\.1\\.\\d+$")),
        )
        .required("openapi")
        .required("info")
        .required("paths");
    let op = local_only(
        OperationBuilder::new()
            .operation_id(Some("openapi"))
            .tag("local")
            .summary(Some("This document"))
            .description(Some(
                "Served by the local server only (`strata serve`); not a route of the AWS deployment.",
            )),
    );
    responses(
        op,
        [
            (
                "200",
                ResponseBuilder::new()
                    .description("The OpenAPI document.")
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(document)).build(),
                    )
                    .build()
                    .into(),
            ),
            Shared::Unauthorized.plain(),
            Shared::TooManyRequests.plain(),
        ],
    )
    .build()
}

/// `GET /metrics`, served by [`crate::server::with_metrics`].
fn metrics_operation() -> Operation {
    let op = local_only(
        OperationBuilder::new()
            .operation_id(Some("metrics"))
            .tag("local")
            .summary(Some("Request metrics (Prometheus text)"))
            .description(Some(
                "Served by the local server only (`strata serve`); on AWS the same metrics are CloudWatch embedded-metric-format log lines. Requests, latency, and refusals by operation, status and error code.",
            )),
    );
    responses(
        op,
        [
            (
                "200",
                ResponseBuilder::new()
                    .description(
                        "The metrics in the Prometheus text exposition format (version 0.0.4).",
                    )
                    .content(
                        "text/plain",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                            .build(),
                    )
                    .build()
                    .into(),
            ),
            Shared::Unauthorized.plain(),
        ],
    )
    .build()
}

/// The whole document, pretty-printed (what `infra/openapi.json` holds, with a final newline).
pub fn generate() -> String {
    let mut paths = PathsBuilder::new();
    // The components are the schemas the operations name (`schema_ref`), the error's first.
    let mut schemas = Vec::new();
    strata_http::openapi::add_schema::<strata_http::openapi::Error>(&mut schemas);
    let (mut operations, named) = strata_http::openapi::collect_schemas(|| {
        routes::all()
            .into_iter()
            .map(|route| {
                let mut op = (route.openapi)();
                // The operation id is the route's Lambda binary: one name for the operation everywhere.
                op.operation_id = Some(route.function.to_owned());
                // The local server takes only JSON where JSON is read (`strata::server::front`).
                if op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"))
                {
                    let (status, response) = Shared::UnsupportedMediaType.plain();
                    op.responses.responses.insert(status.to_owned(), response);
                }
                (openapi_path(route.path), method(route.method), op)
            })
            .collect::<Vec<(String, HttpMethod, Operation)>>()
    });
    for (name, schema) in named {
        if !schemas.iter().any(|(n, _)| *n == name) {
            schemas.push((name, schema));
        }
    }
    close_answers(&operations, &mut schemas);
    operations.push((
        "/openapi.json".to_owned(),
        HttpMethod::Get,
        openapi_operation(),
    ));
    operations.push(("/metrics".to_owned(), HttpMethod::Get, metrics_operation()));
    // One path item per path, its operations in route order.
    let mut items: Vec<(String, PathItem)> = Vec::new();
    for (path, http_method, op) in operations {
        match items.iter_mut().find(|(p, _)| *p == path) {
            Some((_, item)) => item.merge_operations(PathItem::new(http_method, op)),
            None => items.push((path, PathItem::new(http_method, op))),
        }
    }
    for (path, item) in items {
        paths = paths.path(path, item);
    }

    let mut components = Components::new();
    for (name, schema) in schemas {
        components.schemas.insert(name, schema);
    }
    for shared in Shared::ALL {
        components
            .responses
            .insert(shared.name().to_owned(), shared.response().into());
    }
    components.security_schemes.insert(
        "bearerAuth".to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "Local server only: `strata serve --auth-token TOKEN` (or the environment variable `STRATA_AUTH_TOKEN`) requires `Authorization: Bearer TOKEN` on every request, every operation of this document and the `GET /kv/ws` upgrade included; without a token configured the local server requires nothing (and listens on loopback by default). The token is an opaque shared secret of 16 to 4096 visible ASCII characters, compared in constant time; wrong tokens are slowed per client address. On AWS, authorization is API Gateway's, not this scheme.",
                ))
                .build(),
        ),
    );
    // utoipa 5 has no `components/headers` (see strata_http::openapi).
    let headers: Map<String, Value> = Header::ALL
        .into_iter()
        .map(|h| (h.component_name().to_owned(), h.definition()))
        .collect();
    components.extensions = Some(Extensions::from_iter([("headers", Value::Object(headers))]));

    let info = InfoBuilder::new()
        .title("strata")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        // `summary` is OpenAPI 3.1's, absent from utoipa 5's `Info`.
        .extensions(Some(Extensions::from_iter([(
            "summary",
            json!("Key/value store with transactions, stock certificates, widgets and counters."),
        )])))
        .build();
    let document = OpenApiBuilder::new()
        .info(info)
        .security(Some([
            SecurityRequirement::default(),
            SecurityRequirement::new("bearerAuth", Vec::<String>::new()),
        ]))
        .tags(Some(TAGS.iter().map(|(name, description)| {
            TagBuilder::new()
                .name(*name)
                .description(Some(*description))
                .build()
        })))
        .paths(paths.build())
        .components(Some(components))
        .build();
    let mut text = serde_json::to_string_pretty(&document).expect("the document serializes");
    text.push('\n');
    text
}

/// Answers are closed: every object an answer holds says `additionalProperties: false`, so a client can
/// tell a field it does not know from a misspelt one. The body types (`strata_api_types`) do not deny
/// unknown fields themselves: a client built on them keeps reading answers that gain a field.
fn close_answers(
    operations: &[(String, HttpMethod, Operation)],
    schemas: &mut [(String, RefOr<Schema>)],
) {
    let mut answers: Vec<String> = operations
        .iter()
        .flat_map(|(_, _, op)| op.responses.responses.values())
        .filter_map(|response| match response {
            RefOr::T(response) => Some(response.content.values()),
            RefOr::Ref(_) => None,
        })
        .flatten()
        .filter_map(|content| content.schema.as_ref())
        .filter_map(schema_name)
        .collect();
    let mut closed = Vec::new();
    while let Some(name) = answers.pop() {
        if closed.contains(&name) {
            continue;
        }
        if let Some((_, schema)) = schemas.iter_mut().find(|(n, _)| *n == name) {
            close(schema, &mut answers);
        }
        closed.push(name);
    }
}

/// The component a `$ref` names.
fn schema_name(schema: &RefOr<Schema>) -> Option<String> {
    match schema {
        RefOr::Ref(r) => r
            .ref_location
            .strip_prefix("#/components/schemas/")
            .map(str::to_owned),
        RefOr::T(_) => None,
    }
}

/// Closes the objects of `schema` that say nothing of other properties; the components it refers to are
/// added to `refs`.
fn close(schema: &mut RefOr<Schema>, refs: &mut Vec<String>) {
    match schema {
        RefOr::Ref(_) => refs.extend(schema_name(schema)),
        RefOr::T(Schema::Object(object)) => {
            // utoipa writes a string or an integer as an `Object` of that type too.
            let is_object = object.schema_type == SchemaType::Type(Type::Object);
            if is_object && object.additional_properties.is_none() {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
            for property in object.properties.values_mut() {
                close(property, refs);
            }
        }
        RefOr::T(Schema::Array(array)) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                close(items, refs);
            }
        }
        RefOr::T(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_document_is_the_generated_one() {
        let generated = generate();
        if generated != DOCUMENT {
            let line = generated
                .lines()
                .zip(DOCUMENT.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || generated.lines().count().min(DOCUMENT.lines().count()) + 1,
                    |i| i + 1,
                );
            panic!(
                "{DOCUMENT_PATH} is not the output of strata::openapi::generate() (first difference at \
                 line {line}); regenerate it with `cargo run -p strata -- generate openapi` and commit it"
            );
        }
    }

    #[test]
    fn greedy_path_parameters_are_plain_ones_in_openapi() {
        assert_eq!(
            openapi_path("/kv/transactions/{id}/keys/{key+}"),
            "/kv/transactions/{id}/keys/{key}"
        );
    }
}
