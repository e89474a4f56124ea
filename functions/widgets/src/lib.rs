//! Widgets (CONTRACT.md §3): HTTP handlers, and one Lambda binary per operation in `src/bin/`.
//!
//! # Layout
//!
//! - [`handlers`]: one plain `async fn(&Stores, Request) -> Response` per operation, on the
//!   [`strata_core::widgets::Widgets`] port; the slot rules live in `strata_core::widgets`.
//! - [`ROUTES`]: this crate's part of the route table.
//! - `src/bin/*.rs`: the Lambda `main`s.

pub mod handlers;

use strata_http::handler;
use strata_http::route::Route;

pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/widgets",
        function: "widgets-create",
        handler: handler!(handlers::create),
        openapi: handlers::create_openapi,
    },
    Route {
        method: "GET",
        path: "/widgets/{serial}",
        function: "widgets-get",
        handler: handler!(handlers::get),
        openapi: handlers::get_openapi,
    },
    Route {
        method: "DELETE",
        path: "/widgets/{serial}",
        function: "widgets-delete",
        handler: handler!(handlers::delete),
        openapi: handlers::delete_openapi,
    },
    Route {
        method: "POST",
        path: "/widgets/{serial}/associations",
        function: "widgets-associate",
        handler: handler!(handlers::associate),
        openapi: handlers::associate_openapi,
    },
    Route {
        method: "DELETE",
        path: "/widgets/{serial}/associations/{port}/{peer}",
        function: "widgets-dissociate",
        handler: handler!(handlers::dissociate),
        openapi: handlers::dissociate_openapi,
    },
];
