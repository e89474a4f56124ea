//! The stock-certificate ledger (CONTRACT.md §2): HTTP handlers, and one Lambda binary per operation in `src/bin/`.
//!
//! # Layout
//!
//! - [`handlers`]: one plain `async fn(&Stores, Request) -> Response` per operation, on the
//!   [`strata_core::certificates::Ledger`] port; the numbering rules live in `strata_core::certificates`.
//!   Issuing and changing a class go through `strata_http::idempotency`, and an issue hands the client's
//!   key to the ledger as its request id, so a retry yields the original certificate even across a crash.
//! - [`ROUTES`]: this crate's part of the route table.
//! - `src/bin/*.rs`: the Lambda `main`s.

pub mod handlers;

use strata_http::handler;
use strata_http::route::Route;

pub const ROUTES: &[Route] = &[
    Route {
        method: "PUT",
        path: "/share-classes/{class}",
        function: "share-classes-put",
        handler: handler!(handlers::put_class),
        openapi: handlers::put_class_openapi,
    },
    Route {
        method: "GET",
        path: "/share-classes/{class}",
        function: "share-classes-get",
        handler: handler!(handlers::get_class),
        openapi: handlers::get_class_openapi,
    },
    Route {
        method: "POST",
        path: "/certificates",
        function: "certificates-issue",
        handler: handler!(handlers::issue),
        openapi: handlers::issue_openapi,
    },
    Route {
        method: "GET",
        path: "/certificates/{id}",
        function: "certificates-get",
        handler: handler!(handlers::get),
        openapi: handlers::get_openapi,
    },
    Route {
        method: "GET",
        path: "/certificates",
        function: "certificates-list",
        handler: handler!(handlers::list),
        openapi: handlers::list_openapi,
    },
];
