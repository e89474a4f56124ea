//! The key/value service (CONTRACT.md §1): HTTP handlers, and one Lambda binary per operation in `src/bin/`.
//!
//! # Layout
//!
//! - [`handlers`]: one plain `async fn(&Stores, Request) -> Response` per operation. They parse, call the
//!   [`strata_core::kv::KvStore`] port and shape the reply; validation rules live in `strata_core::kv`.
//! - [`line`]: the line-protocol session (one for TCP, `POST /kv/commands` and WebSocket) and the
//!   `POST /kv/commands` handler.
//! - [`transactions`]: the transaction handlers, on the [`strata_core::kv::tx::KvTransactions`] port.
//! - [`websocket`]: the API Gateway WebSocket routes (`$connect`, `$disconnect`, `$default`) on the same
//!   session, with the open transaction kept per connection id.
//! - [`system`]: `GET /health` and the fallback for unknown routes; API-wide, hosted here because every
//!   deployment has the key/value service.
//! - [`ROUTES`] and [`FALLBACK`]: this crate's part of the route table, mounted by the local server and
//!   checked against `template.yaml`.
//! - `src/bin/*.rs`: the Lambda `main`s. Each only builds the DynamoDB stores once and runs its handler.

pub mod handlers;
pub mod line;
pub mod system;
pub mod transactions;
pub mod websocket;

pub use handlers::{delete, get, put};
use strata_http::handler;
use strata_http::route::Route;

pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/health",
        function: "health",
        handler: handler!(system::health),
        openapi: system::health_openapi,
    },
    Route {
        method: "GET",
        path: "/kv/keys/{key+}",
        function: "kv-get",
        handler: handler!(handlers::get),
        openapi: handlers::get_openapi,
    },
    Route {
        method: "PUT",
        path: "/kv/keys/{key+}",
        function: "kv-put",
        handler: handler!(handlers::put),
        openapi: handlers::put_openapi,
    },
    Route {
        method: "DELETE",
        path: "/kv/keys/{key+}",
        function: "kv-delete",
        handler: handler!(handlers::delete),
        openapi: handlers::delete_openapi,
    },
    Route {
        method: "POST",
        path: "/kv/transactions",
        function: "kv-tx-begin",
        handler: handler!(transactions::begin),
        openapi: transactions::begin_openapi,
    },
    Route {
        method: "GET",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-get",
        handler: handler!(transactions::get),
        openapi: transactions::get_openapi,
    },
    Route {
        method: "PUT",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-put",
        handler: handler!(transactions::put),
        openapi: transactions::put_openapi,
    },
    Route {
        method: "DELETE",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-delete",
        handler: handler!(transactions::delete),
        openapi: transactions::delete_openapi,
    },
    Route {
        method: "POST",
        path: "/kv/transactions/{id}/commit",
        function: "kv-tx-commit",
        handler: handler!(transactions::commit),
        openapi: transactions::commit_openapi,
    },
    Route {
        method: "POST",
        path: "/kv/transactions/{id}/rollback",
        function: "kv-tx-rollback",
        handler: handler!(transactions::rollback),
        openapi: transactions::rollback_openapi,
    },
    Route {
        method: "POST",
        path: "/kv/commands",
        function: "kv-commands",
        handler: handler!(line::commands),
        openapi: line::commands_openapi,
    },
];

/// Answers every request that no route matches (API Gateway's `$default` route), in the contract's JSON.
pub const FALLBACK: Route = Route {
    method: "ANY",
    path: "$default",
    function: "not-found",
    handler: handler!(system::not_found),
    openapi: strata_http::openapi::Operation::new,
};
