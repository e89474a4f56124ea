//! Counters (CONTRACT.md §4): HTTP handlers, one Lambda binary per operation in `src/bin/`, and the handler
//! that folds the eventual-mode log (from its DynamoDB stream and its re-scan schedule).
//!
//! # Layout
//!
//! - [`handlers`]: `POST /increment` (through `strata_http::idempotency`; the key also reaches the store, so
//!   a retry counts once even across a crash) and `GET /increment/{key}`, on the
//!   [`strata_core::counters::Counters`] port.
//! - [`stream`]: turns a DynamoDB stream event (`aws_lambda_events`) into log entries for
//!   [`strata_dynamo::aggregator::Aggregator`] (`serde_dynamo`), and malformed records into batch failures.
//! - [`aggregate`]: the `counters-aggregate` Lambda's handler: a stream batch, or the scheduled re-scan.
//! - [`ROUTES`]: this crate's part of the route table.
//! - `src/bin/*.rs`: the Lambda `main`s (`counters-aggregate` is the stream- and schedule-triggered one).

pub mod aggregate;
pub mod handlers;
pub mod stream;

use strata_http::handler;
use strata_http::route::Route;

pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/increment",
        function: "counters-increment",
        handler: handler!(handlers::increment),
        openapi: handlers::increment_openapi,
    },
    Route {
        method: "GET",
        path: "/increment/{key}",
        function: "counters-get",
        handler: handler!(handlers::get),
        openapi: handlers::get_openapi,
    },
];
