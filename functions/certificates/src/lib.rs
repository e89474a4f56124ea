//! The stock-certificate ledger (CONTRACT.md §2): HTTP handlers and their declarations.
//!
//! # Layout
//!
//! - [`handlers`]: one plain `async fn(&Stores, Request) -> Result<Response, Error>` per operation, on the
//!   [`strata_core::certificates::Ledger`] port; the numbering rules live in `strata_core::certificates`.
//!   Issuing and changing a class are served behind `Idempotency-Key` (declared on their routes), and an
//!   issue hands the client's key to the ledger as its request id, so a retry yields the original
//!   certificate even across a crash. Next to the handlers: the small helpers they call, and those that turn
//!   the domain's types into the answers (the body types are `strata_api_types::certificates`'s).
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
        method: "PUT",
        path: "/share-classes/{class}",
        function: "share-classes-put",
        handler: handler!(handlers::put_class, idempotency = "share-classes-put"),
        deploy: Deploy::new(
            "ShareClassPut",
            Access::Admin,
            Pool::Writes,
            &[
                Grant {
                    table: "LedgerTable",
                    actions: &["UpdateItem"],
                },
                IDEMPOTENCY,
            ],
        ),
        openapi: openapi::put_class,
    },
    Route {
        method: "GET",
        path: "/share-classes/{class}",
        function: "share-classes-get",
        handler: handler!(handlers::get_class),
        deploy: Deploy::new(
            "ShareClassGet",
            Access::Read,
            Pool::Reads,
            &[Grant {
                table: "LedgerTable",
                actions: &["GetItem"],
            }],
        ),
        openapi: openapi::get_class,
    },
    Route {
        method: "POST",
        path: "/certificates",
        function: "certificates-issue",
        handler: handler!(handlers::issue, idempotency = "certificates-issue"),
        deploy: Deploy::new(
            "CertificateIssue",
            Access::Write,
            Pool::Writes,
            &[
                Grant {
                    table: "LedgerTable",
                    actions: &["GetItem", "PutItem", "UpdateItem"],
                },
                IDEMPOTENCY,
            ],
        ),
        openapi: openapi::issue,
    },
    Route {
        method: "GET",
        path: "/certificates/{id}",
        function: "certificates-get",
        handler: handler!(handlers::get),
        deploy: Deploy::new(
            "CertificateGet",
            Access::Read,
            Pool::Reads,
            &[Grant {
                table: "LedgerTable",
                actions: &["GetItem", "PutItem", "UpdateItem"],
            }],
        )
        .note("(finishes a pending certificate it finds)"),
        openapi: openapi::get,
    },
    Route {
        method: "GET",
        path: "/certificates",
        function: "certificates-list",
        handler: handler!(handlers::list),
        deploy: Deploy::new(
            "CertificateList",
            Access::Read,
            Pool::Reads,
            &[Grant {
                table: "LedgerTable",
                actions: &["GetItem", "Query", "PutItem", "UpdateItem"],
            }],
        )
        .note("?class= (finishes pending certificates it finds)"),
        openapi: openapi::list,
    },
];
