//! The key/value service (CONTRACT.md §1): HTTP handlers and their declarations.
//!
//! # Layout
//!
//! - [`handlers`]: one plain `async fn(&Stores, Request) -> Result<Response, Error>` per operation. They
//!   parse, call the [`strata_core::kv::KvStore`] port and shape the reply; validation rules live in
//!   `strata_core::kv`. Next to the handlers: the small helpers they call. The request and response body
//!   types are `strata_api_types::kv`'s.
//! - [`line`](mod@line): the line-protocol session (one for TCP, `POST /kv/commands` and WebSocket) and
//!   the `POST /kv/commands` handler.
//! - [`transactions`]: the transaction handlers, on the [`strata_core::kv::tx::KvTransactions`] port.
//! - [`openapi`]: each operation's OpenAPI description (the function its route carries) and the parameters
//!   they name: `keys`, `transactions` and `line`, one per handler module.
//! - [`websocket`]: the API Gateway WebSocket routes (`$connect`, `$disconnect`, `$default`) on the same
//!   session, with the open transaction kept per connection id.
//! - [`ROUTES`] and [`WEBSOCKET`]: this service's operations, each declared once with its deployment (see
//!   `strata_http::route`); `strata-api` gathers every service's into the API.

pub mod handlers;
pub mod line;
pub mod openapi;
pub mod transactions;
pub mod websocket;

pub use handlers::{delete, get, put};
use strata_http::handler;
use strata_http::route::{Access, Deploy, Function, Grant, IDEMPOTENCY, Pool, Route, Trigger};

/// The DynamoDB actions of the line-protocol session (`POST /kv/commands` and the WebSocket `$default`):
/// the keys, and the transaction it may hold open.
const LINE_SESSION_GRANTS: [Grant; 2] = [
    Grant {
        table: "KvTable",
        actions: &["GetItem", "UpdateItem", "ConditionCheckItem"],
    },
    Grant {
        table: "KvTxTable",
        actions: &["GetItem", "PutItem", "UpdateItem", "Query"],
    },
];

pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/kv/keys/{key+}",
        function: "kv-get",
        handler: handler!(handlers::get),
        deploy: Deploy::new(
            "KvGet",
            Access::Read,
            Pool::Reads,
            &[Grant {
                table: "KvTable",
                actions: &["GetItem"],
            }],
        ),
        openapi: openapi::keys::get,
    },
    Route {
        method: "PUT",
        path: "/kv/keys/{key+}",
        function: "kv-put",
        handler: handler!(handlers::put),
        deploy: Deploy::new(
            "KvPut",
            Access::Write,
            Pool::Writes,
            &[Grant {
                table: "KvTable",
                actions: &["GetItem", "UpdateItem"],
            }],
        ),
        openapi: openapi::keys::put,
    },
    Route {
        method: "DELETE",
        path: "/kv/keys/{key+}",
        function: "kv-delete",
        handler: handler!(handlers::delete),
        deploy: Deploy::new(
            "KvDelete",
            Access::Write,
            Pool::Writes,
            &[Grant {
                table: "KvTable",
                actions: &["GetItem", "UpdateItem"],
            }],
        ),
        openapi: openapi::keys::delete,
    },
    Route {
        method: "POST",
        path: "/kv/transactions",
        function: "kv-tx-begin",
        handler: handler!(transactions::begin, idempotency = "kv-tx-begin"),
        deploy: Deploy::new(
            "KvTxBegin",
            Access::Write,
            Pool::Writes,
            &[
                Grant {
                    table: "KvTxTable",
                    actions: &["PutItem"],
                },
                IDEMPOTENCY,
            ],
        ),
        openapi: openapi::transactions::begin,
    },
    Route {
        method: "GET",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-get",
        handler: handler!(transactions::get),
        deploy: Deploy::new(
            // A read inside a transaction changes it (the read is remembered for validation, the idle
            // timer restarts): the write scope.
            "KvTxGet",
            Access::Write,
            Pool::Reads,
            &[
                Grant {
                    table: "KvTxTable",
                    actions: &["GetItem", "UpdateItem"],
                },
                Grant {
                    table: "KvTable",
                    actions: &["GetItem"],
                },
            ],
        ),
        openapi: openapi::transactions::get,
    },
    Route {
        method: "PUT",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-put",
        handler: handler!(transactions::put),
        deploy: Deploy::new(
            "KvTxPut",
            Access::Write,
            Pool::Writes,
            &[Grant {
                table: "KvTxTable",
                actions: &["GetItem", "UpdateItem"],
            }],
        ),
        openapi: openapi::transactions::put,
    },
    Route {
        method: "DELETE",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-delete",
        handler: handler!(transactions::delete),
        deploy: Deploy::new(
            "KvTxDelete",
            Access::Write,
            Pool::Writes,
            &[Grant {
                table: "KvTxTable",
                actions: &["GetItem", "UpdateItem"],
            }],
        ),
        openapi: openapi::transactions::delete,
    },
    Route {
        method: "POST",
        path: "/kv/transactions/{id}/commit",
        function: "kv-tx-commit",
        // With an Idempotency-Key, a retry of a commit whose answer was lost gets that answer again.
        handler: handler!(transactions::commit, idempotency = "kv-tx-commit"),
        deploy: Deploy::new(
            "KvTxCommit",
            Access::Write,
            Pool::Writes,
            &[
                Grant {
                    table: "KvTxTable",
                    actions: &["GetItem", "Query", "UpdateItem"],
                },
                Grant {
                    table: "KvTable",
                    actions: &["UpdateItem", "ConditionCheckItem"],
                },
                IDEMPOTENCY,
            ],
        ),
        openapi: openapi::transactions::commit,
    },
    Route {
        method: "POST",
        path: "/kv/transactions/{id}/rollback",
        function: "kv-tx-rollback",
        handler: handler!(transactions::rollback, idempotency = "kv-tx-rollback"),
        deploy: Deploy::new(
            "KvTxRollback",
            Access::Write,
            Pool::Writes,
            &[
                Grant {
                    table: "KvTxTable",
                    actions: &["UpdateItem"],
                },
                IDEMPOTENCY,
            ],
        ),
        openapi: openapi::transactions::rollback,
    },
    Route {
        method: "POST",
        path: "/kv/commands",
        function: "kv-commands",
        handler: handler!(line::commands),
        deploy: Deploy::new(
            "KvCommands",
            Access::Write,
            Pool::Commands,
            &LINE_SESSION_GRANTS,
        )
        .note("(the line protocol over HTTP)"),
        openapi: openapi::line::commands,
    },
];

/// The WebSocket API's routes: the line protocol, one command per message, with the open transaction kept
/// per connection.
pub const WEBSOCKET: &[Function] = &[
    Function {
        function: "ws-connect",
        trigger: Trigger::WebSocket {
            route: "$connect",
            handler: handler!(websocket::connect),
        },
        deploy: Deploy::new("WsConnect", Access::None, Pool::Commands, &[])
            .note("WebSocket $connect"),
    },
    Function {
        function: "ws-disconnect",
        trigger: Trigger::WebSocket {
            route: "$disconnect",
            handler: handler!(websocket::disconnect),
        },
        deploy: Deploy::new(
            "WsDisconnect",
            Access::None,
            Pool::Commands,
            &[
                Grant {
                    table: "WsSessionTable",
                    actions: &["DeleteItem"],
                },
                Grant {
                    table: "KvTxTable",
                    actions: &["UpdateItem"],
                },
            ],
        )
        .note("WebSocket $disconnect (rolls back the connection's open transaction)"),
    },
    Function {
        function: "ws-default",
        trigger: Trigger::WebSocket {
            route: "$default",
            handler: handler!(websocket::default),
        },
        deploy: Deploy::new(
            "WsDefault",
            Access::None,
            Pool::Commands,
            &[
                Grant {
                    table: "WsSessionTable",
                    actions: &["GetItem", "UpdateItem"],
                },
                LINE_SESSION_GRANTS[0],
                LINE_SESSION_GRANTS[1],
            ],
        )
        .note("WebSocket $default (one line-protocol command per message)"),
    },
];
