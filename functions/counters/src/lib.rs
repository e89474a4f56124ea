//! Counters (CONTRACT.md §4): HTTP handlers, their declarations, and the handler
//! that folds the eventual-mode log (from its DynamoDB stream and its re-scan schedule).
//!
//! # Layout
//!
//! - [`handlers`]: `POST /increment` (behind `Idempotency-Key`, declared on its route; the key also
//!   reaches the store, so a retry counts once even across a crash) and `GET /increment/{key}`, on the
//!   [`strata_core::counters::Counters`] port. The request and response body types are
//!   `strata_api_types::counters`'s.
//! - [`openapi`]: each operation's OpenAPI description (the function its route carries) and the parameter
//!   they name.
//! - [`stream`]: turns a DynamoDB stream event (`aws_lambda_events`) into log entries for
//!   [`strata_dynamo::aggregator::Aggregator`] (`serde_dynamo`), and malformed records into batch failures.
//! - [`aggregate`]: the `counters-aggregate` Lambda's handler: a stream batch, or the scheduled re-scan.
//! - [`ROUTES`] and [`AGGREGATOR`]: this service's functions, each declared once with its deployment (see
//!   `strata_http::route`); `strata-api` gathers every service's into the API.

pub mod aggregate;
pub mod handlers;
pub mod openapi;
pub mod stream;

use strata_http::handler;
use strata_http::route::{Access, Deploy, Function, Grant, IDEMPOTENCY, Pool, Route, Trigger};

pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/increment",
        function: "counters-increment",
        handler: handler!(
            handlers::increment,
            idempotency = "increment",
            kept_by = handlers::store_keeps_keys
        ),
        deploy: Deploy::new(
            "CounterIncrement",
            Access::Write,
            Pool::Writes,
            &[
                Grant {
                    table: "CounterTable",
                    actions: &["UpdateItem", "GetItem"],
                },
                Grant {
                    table: "CounterLogTable",
                    actions: &["PutItem", "GetItem"],
                },
                Grant {
                    table: "CounterMarkerTable",
                    actions: &["GetItem"],
                },
                // The records of keyed requests, and in eventual mode the look for one an earlier request
                // left (see `strata_http::idempotency::serve_kept`).
                Grant {
                    table: IDEMPOTENCY.table,
                    actions: &["PutItem", "UpdateItem", "DeleteItem", "GetItem"],
                },
            ],
        ),
        openapi: openapi::increment,
    },
    Route {
        method: "GET",
        path: "/increment/{key}",
        function: "counters-get",
        handler: handler!(handlers::get),
        deploy: Deploy::new(
            "CounterGet",
            Access::Read,
            Pool::Reads,
            &[Grant {
                table: "CounterTable",
                actions: &["GetItem"],
            }],
        ),
        openapi: openapi::get,
    },
];

/// The Lambda that folds the eventual-mode log into the totals (see [`aggregate`]).
pub const AGGREGATOR: Function = Function {
    function: "counters-aggregate",
    trigger: Trigger::CounterLog,
    deploy: Deploy::new(
        "CounterAggregate",
        Access::None,
        Pool::Writes,
        // The stream's reads and the failure queue are the trigger's, granted with it.
        &[
            Grant {
                table: "CounterLogTable",
                actions: &["DeleteItem", "Scan"],
            },
            Grant {
                table: "CounterMarkerTable",
                actions: &["PutItem"],
            },
            Grant {
                table: "CounterTable",
                actions: &["UpdateItem"],
            },
        ],
    ).note("Folds the counter log (eventual mode), delivered by its stream or re-scanned on a schedule, into the totals exactly once"),
};
