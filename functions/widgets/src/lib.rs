//! Widgets (CONTRACT.md §3): HTTP handlers and their declarations.
//!
//! # Layout
//!
//! - [`handlers`]: one plain `async fn(&Stores, Request) -> Result<Response, Error>` per operation, on the
//!   [`strata_core::widgets::Widgets`] port; the slot rules live in `strata_core::widgets`. Next to the
//!   handlers: the small helpers they call, and the one that turns a widget into its answer (the body types
//!   are `strata_api_types::widgets`'s).
//! - [`openapi`]: each operation's OpenAPI description (the function its route carries) and the parameters
//!   they name.
//! - [`ROUTES`]: this service's operations, each declared once with its deployment (see
//!   `strata_http::route`); `strata-api` gathers every service's into the API.

pub mod handlers;
pub mod openapi;

use strata_http::handler;
use strata_http::route::{Access, Deploy, Grant, IDEMPOTENCY, Pool, Route};

pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/widgets",
        function: "widgets-create",
        handler: handler!(handlers::create, idempotency = "widgets-create"),
        deploy: Deploy::new(
            "WidgetCreate",
            Access::Write,
            Pool::Writes,
            &[
                Grant {
                    table: "WidgetTable",
                    actions: &["PutItem"],
                },
                IDEMPOTENCY,
            ],
        ),
        openapi: openapi::create,
    },
    Route {
        method: "GET",
        path: "/widgets/{serial}",
        function: "widgets-get",
        handler: handler!(handlers::get),
        deploy: Deploy::new(
            "WidgetGet",
            Access::Read,
            Pool::Reads,
            &[Grant {
                table: "WidgetTable",
                actions: &["GetItem"],
            }],
        ),
        openapi: openapi::get,
    },
    Route {
        method: "DELETE",
        path: "/widgets/{serial}",
        function: "widgets-delete",
        handler: handler!(handlers::delete),
        deploy: Deploy::new(
            "WidgetDelete",
            Access::Write,
            Pool::Writes,
            &[Grant {
                table: "WidgetTable",
                actions: &["GetItem", "DeleteItem", "UpdateItem"],
            }],
        )
        .note("(releases every association)"),
        openapi: openapi::delete,
    },
    Route {
        method: "POST",
        path: "/widgets/{serial}/associations",
        function: "widgets-associate",
        handler: handler!(handlers::associate, idempotency = "widgets-associate"),
        deploy: Deploy::new(
            "WidgetAssociate",
            Access::Write,
            Pool::Writes,
            &[
                Grant {
                    table: "WidgetTable",
                    actions: &["GetItem", "UpdateItem"],
                },
                IDEMPOTENCY,
            ],
        ),
        openapi: openapi::associate,
    },
    Route {
        method: "DELETE",
        path: "/widgets/{serial}/associations/{port}/{peer}",
        function: "widgets-dissociate",
        handler: handler!(handlers::dissociate),
        deploy: Deploy::new(
            "WidgetDissociate",
            Access::Write,
            Pool::Writes,
            &[Grant {
                table: "WidgetTable",
                actions: &["UpdateItem"],
            }],
        ),
        openapi: openapi::dissociate,
    },
];
