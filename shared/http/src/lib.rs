//! strata's HTTP layer, shared by every handler, every Lambda and the local server.
//!
//! # Layout
//!
//! - [`request`]: reading a request: path and query parameters, and the JSON body as one type that is both
//!   its `Deserialize` and its OpenAPI schema ([`request::body`]), with errors that name the offending field.
//! - [`response`]: JSON responses, and the one place where a domain [`strata_core::Error`] becomes a status
//!   and the error JSON of the API contract (internal details are never sent; [`response::log_error`] logs
//!   them where responses are observed).
//! - [`route`]: the [`route::Route`] table type and [`handler!`], which makes an
//!   `async fn(&Stores, Request) -> Result<Response, Error>` a route's handler (behind `Idempotency-Key`
//!   handling when given a scope). Each service crate lists its routes once; the local server mounts them
//!   and a test checks them against `template.yaml`.
//! - [`openapi`]: the shared parts of the OpenAPI document: the error JSON's type and schema, the shared
//!   error responses and headers, and the builders each service's operation functions use.
//! - [`idempotency`]: `Idempotency-Key` handling around any handler (claim, replay, `422`, release on `5xx`).
//! - [`lambda`]: the Lambda entry point: JSON logging, building the DynamoDB stores once, running a handler,
//!   flushing each invocation's metrics as CloudWatch Embedded Metric Format.
//! - [`metrics`]: the request metrics (requests, latency, conflicts, refusals, throttles), recorded in one
//!   place for the Lambdas and the local server.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod idempotency;
pub mod lambda;
pub mod metrics;
pub mod openapi;
pub mod request;
pub mod response;
pub mod route;

/// A request and its body, as API Gateway hands them to a Lambda (the local server builds the same).
pub use lambda_http::{Body, Request};

/// The deadline of a request the local server answers (the Lambda functions take theirs from the
/// invocation, see [`lambda::budget_before`]): as long as the template's function timeout less the answer
/// margin, so both hosts give a slow store the same time before answering `503`.
pub const REQUEST_BUDGET: std::time::Duration = std::time::Duration::from_millis(9_500);

/// Every handler answers with this, or with a domain error that [`handler!`] turns into one.
pub type Response = lambda_http::Response<Body>;

/// Largest request body accepted, in bytes (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
