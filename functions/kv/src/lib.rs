//! The key/value service (CONTRACT.md §1): HTTP handlers and their declarations.
//!
//! # Layout
//!
//! - [`handlers`]: one plain `async fn(&Stores, Request) -> Result<Response, Error>` per operation. They
//!   parse, call the [`strata_core::kv::KvStore`] port and shape the reply; validation rules live in
//!   `strata_core::kv`.
//! - [`line`]: the line-protocol session (one for TCP, `POST /kv/commands` and WebSocket) and the
//!   `POST /kv/commands` handler.
//! - [`transactions`]: the transaction handlers, on the [`strata_core::kv::tx::KvTransactions`] port.
//! - [`websocket`]: the API Gateway WebSocket routes (`$connect`, `$disconnect`, `$default`) on the same
//!   session, with the open transaction kept per connection id.
//! - [`ROUTES`] and [`WEBSOCKET`]: this service's operations, each declared once with its deployment (see
//!   `strata_http::route`); `strata-api` gathers every service's into the API.

pub mod handlers;
pub mod line;
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
        deploy: Deploy {
            id: "KvGet",
            note: "",
            access: Access::Read,
            pool: Pool::Reads,
            grants: &[Grant {
                table: "KvTable",
                actions: &["GetItem"],
            }],
        },
        openapi: handlers::get_openapi,
    },
    Route {
        method: "PUT",
        path: "/kv/keys/{key+}",
        function: "kv-put",
        handler: handler!(handlers::put),
        deploy: Deploy {
            id: "KvPut",
            note: "",
            access: Access::Write,
            pool: Pool::Writes,
            grants: &[Grant {
                table: "KvTable",
                actions: &["GetItem", "UpdateItem"],
            }],
        },
        openapi: handlers::put_openapi,
    },
    Route {
        method: "DELETE",
        path: "/kv/keys/{key+}",
        function: "kv-delete",
        handler: handler!(handlers::delete),
        deploy: Deploy {
            id: "KvDelete",
            note: "",
            access: Access::Write,
            pool: Pool::Writes,
            grants: &[Grant {
                table: "KvTable",
                actions: &["GetItem", "UpdateItem"],
            }],
        },
        openapi: handlers::delete_openapi,
    },
    Route {
        method: "POST",
        path: "/kv/transactions",
        function: "kv-tx-begin",
        handler: handler!(transactions::begin, idempotency = "kv-tx-begin"),
        deploy: Deploy {
            id: "KvTxBegin",
            note: "",
            access: Access::Write,
            pool: Pool::Writes,
            grants: &[
                Grant {
                    table: "KvTxTable",
                    actions: &["PutItem"],
                },
                IDEMPOTENCY,
            ],
        },
        openapi: transactions::begin_openapi,
    },
    Route {
        method: "GET",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-get",
        handler: handler!(transactions::get),
        deploy: Deploy {
            id: "KvTxGet",
            note: "",
            // A read inside a transaction changes it (the read is remembered for validation, the idle
            // timer restarts): the write scope.
            access: Access::Write,
            pool: Pool::Reads,
            grants: &[
                Grant {
                    table: "KvTxTable",
                    actions: &["GetItem", "UpdateItem"],
                },
                Grant {
                    table: "KvTable",
                    actions: &["GetItem"],
                },
            ],
        },
        openapi: transactions::get_openapi,
    },
    Route {
        method: "PUT",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-put",
        handler: handler!(transactions::put),
        deploy: Deploy {
            id: "KvTxPut",
            note: "",
            access: Access::Write,
            pool: Pool::Writes,
            grants: &[Grant {
                table: "KvTxTable",
                actions: &["GetItem", "UpdateItem"],
            }],
        },
        openapi: transactions::put_openapi,
    },
    Route {
        method: "DELETE",
        path: "/kv/transactions/{id}/keys/{key+}",
        function: "kv-tx-delete",
        handler: handler!(transactions::delete),
        deploy: Deploy {
            id: "KvTxDelete",
            note: "",
            access: Access::Write,
            pool: Pool::Writes,
            grants: &[Grant {
                table: "KvTxTable",
                actions: &["GetItem", "UpdateItem"],
            }],
        },
        openapi: transactions::delete_openapi,
    },
    Route {
        method: "POST",
        path: "/kv/transactions/{id}/commit",
        function: "kv-tx-commit",
        // With an Idempotency-Key, a retry of a commit whose answer was lost gets that answer again.
        handler: handler!(transactions::commit, idempotency = "kv-tx-commit"),
        deploy: Deploy {
            id: "KvTxCommit",
            note: "",
            access: Access::Write,
            pool: Pool::Writes,
            grants: &[
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
        },
        openapi: transactions::commit_openapi,
    },
    Route {
        method: "POST",
        path: "/kv/transactions/{id}/rollback",
        function: "kv-tx-rollback",
        handler: handler!(transactions::rollback, idempotency = "kv-tx-rollback"),
        deploy: Deploy {
            id: "KvTxRollback",
            note: "",
            access: Access::Write,
            pool: Pool::Writes,
            grants: &[
                Grant {
                    table: "KvTxTable",
                    actions: &["UpdateItem"],
                },
                IDEMPOTENCY,
            ],
        },
        openapi: transactions::rollback_openapi,
    },
    Route {
        method: "POST",
        path: "/kv/commands",
        function: "kv-commands",
        handler: handler!(line::commands),
        deploy: Deploy {
            id: "KvCommands",
            note: "(the line protocol over HTTP)",
            access: Access::Write,
            pool: Pool::Commands,
            grants: &LINE_SESSION_GRANTS,
        },
        openapi: line::commands_openapi,
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
        deploy: Deploy {
            id: "WsConnect",
            note: "WebSocket $connect",
            access: Access::None,
            pool: Pool::Commands,
            grants: &[],
        },
    },
    Function {
        function: "ws-disconnect",
        trigger: Trigger::WebSocket {
            route: "$disconnect",
            handler: handler!(websocket::disconnect),
        },
        deploy: Deploy {
            id: "WsDisconnect",
            note: "WebSocket $disconnect (rolls back the connection's open transaction)",
            access: Access::None,
            pool: Pool::Commands,
            grants: &[
                Grant {
                    table: "WsSessionTable",
                    actions: &["DeleteItem"],
                },
                Grant {
                    table: "KvTxTable",
                    actions: &["UpdateItem"],
                },
            ],
        },
    },
    Function {
        function: "ws-default",
        trigger: Trigger::WebSocket {
            route: "$default",
            handler: handler!(websocket::default),
        },
        deploy: Deploy {
            id: "WsDefault",
            note: "WebSocket $default (one line-protocol command per message)",
            access: Access::None,
            pool: Pool::Commands,
            grants: &[
                Grant {
                    table: "WsSessionTable",
                    actions: &["GetItem", "UpdateItem"],
                },
                LINE_SESSION_GRANTS[0],
                LINE_SESSION_GRANTS[1],
            ],
        },
    },
];
