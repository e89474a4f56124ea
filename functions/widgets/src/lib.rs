//! Widgets (CONTRACT.md §3): HTTP handlers and their declarations.
//!
//! # Layout
//!
//! - [`handlers`]: one plain `async fn(&Stores, Request) -> Result<Response, Error>` per operation, on the
//!   [`strata_core::widgets::Widgets`] port; the slot rules live in `strata_core::widgets`.
//! - [`ROUTES`]: this service's operations, each declared once with its deployment (see
//!   `strata_http::route`); `strata-api` gathers every service's into the API.

pub mod handlers;

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
        openapi: handlers::create_openapi,
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
        openapi: handlers::get_openapi,
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
        openapi: handlers::delete_openapi,
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
        openapi: handlers::associate_openapi,
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
        openapi: handlers::dissociate_openapi,
    },
];
