//! Operations, declared once per service and shared by the Lambdas, the local server, the generated
//! `template.yaml` blocks and the tests.
//!
//! A [`Route`] is one HTTP operation: where it is served, the handler (with its `Idempotency-Key` scope if
//! it takes one, see [`handler!`](crate::handler)), its OpenAPI operation, and its
//! deployment — the Lambda function's name and resource ids, who may call it, which reserved-concurrency
//! pool it draws from, and exactly the DynamoDB grants its code needs. A [`Function`] is a Lambda that is not an HTTP route (the
//! WebSocket routes, the counter-log aggregator). `strata generate template` writes every function's
//! blocks from these and `strata generate openapi` the document; nothing else restates them.

use crate::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use strata_core::Stores;

/// The future of a [`Handler`]: the response, errors already turned into the contract's error JSON.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// A handler as a plain function pointer, so route tables can be `const` (made by [`handler!`](crate::handler)).
pub type Handler = for<'a> fn(&'a Stores, Request) -> HandlerFuture<'a>;

/// One operation of the API.
#[derive(Clone, Copy)]
pub struct Route {
    /// `GET`, `PUT`, ...; `ANY` only for the fallback.
    pub method: &'static str,
    /// In API Gateway syntax: `{name}` is one segment, a trailing `{name+}` takes the rest of the path.
    /// `$default` is the fallback for requests no route matches.
    pub path: &'static str,
    /// The Lambda function that serves this route on AWS (its `Handler` in `template.yaml`).
    pub function: &'static str,
    /// What answers the route's requests.
    pub handler: Handler,
    /// The Lambda function's deployment.
    pub deploy: Deploy,
    /// The operation of the OpenAPI document (summary, parameters, bodies, responses), written next to the
    /// handler; the document takes the path and method from this route. The fallback's is never read.
    pub openapi: fn() -> utoipa::openapi::path::Operation,
}

/// A Lambda function that is not an HTTP route.
#[derive(Clone, Copy)]
pub struct Function {
    /// The function's `Handler` in `template.yaml`.
    pub function: &'static str,
    /// What invokes it.
    pub trigger: Trigger,
    /// Its deployment.
    pub deploy: Deploy,
}

/// What invokes a [`Function`].
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    /// A route of the WebSocket API (`$connect`, `$disconnect`, `$default`), answered by this handler.
    /// The route, integration and permission resources are the WebSocket API's, in `template.yaml`.
    WebSocket {
        /// `$connect`, `$disconnect` or `$default`.
        route: &'static str,
        /// What answers it.
        handler: Handler,
    },
    /// The counter log's DynamoDB stream and its re-scan schedule (the events are written by the template
    /// generator, which knows the table and queue they name). Its entry point is not an HTTP handler.
    CounterLog,
}

/// How one function is deployed, beyond its trigger.
#[derive(Clone, Copy, Debug)]
pub struct Deploy {
    /// The stem of its resource ids: `<id>Function`, `<id>FunctionRole`, `<id>FunctionLogGroup`,
    /// `<id>ErrorsAlarm`, `<id>ThrottlesAlarm`.
    pub id: &'static str,
    /// Appended to the function's description (`GET /widgets/{serial}` for a route), when the route alone
    /// does not say what it does; the whole description for a [`Function`].
    pub note: &'static str,
    /// The scope a JWT needs to call it.
    pub access: Access,
    /// Its reserved-concurrency pool.
    pub pool: Pool,
    /// Every DynamoDB action the function's code calls, per table: its role grants exactly these (the
    /// least-privilege test drives every code path and compares).
    pub grants: &'static [Grant],
}

/// Which JWT scope a route asks for when the API uses JWT authorization (CONTRACT.md, who may call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The read scope (`JwtReadScope`).
    Read,
    /// The write scope (`JwtWriteScope`).
    Write,
    /// Changing a share class's authorized shares.
    Admin,
    /// Any of the three (the fallback, which only answers `404`).
    AnyScope,
    /// Not an HTTP route: authorization is the trigger's (the WebSocket `$connect`, the stream).
    None,
}

/// The reserved-concurrency pool a function draws from (template parameters `ReservedConcurrency*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Operations that only read.
    Reads,
    /// Operations that write.
    Writes,
    /// The line protocol over HTTP and WebSocket: the costliest per invocation, so the smallest pool.
    Commands,
}

/// DynamoDB actions on one table: `table` is its resource id in `template.yaml` (`KvTable`), `actions`
/// without the `dynamodb:` prefix.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    /// The table's resource id in `template.yaml`.
    pub table: &'static str,
    /// The actions, without the `dynamodb:` prefix.
    pub actions: &'static [&'static str],
}

/// The grants every operation that takes an `Idempotency-Key` needs (see [`crate::idempotency`]).
pub const IDEMPOTENCY: Grant = Grant {
    table: "IdempotencyTable",
    actions: &["PutItem", "UpdateItem", "DeleteItem"],
};

impl Deploy {
    /// A deployment whose description is its route alone (no [`Deploy::note`]).
    pub const fn new(
        id: &'static str,
        access: Access,
        pool: Pool,
        grants: &'static [Grant],
    ) -> Self {
        Self {
            id,
            note: "",
            access,
            pool,
            grants,
        }
    }

    /// The same deployment with a note in its description.
    pub const fn note(self, note: &'static str) -> Self {
        Self { note, ..self }
    }
}

impl Route {
    /// The function's description in `template.yaml`.
    pub fn description(&self) -> String {
        let path = self.path.replace('+', "");
        match (self.path, self.deploy.note) {
            ("$default", note) => note.to_owned(),
            (_, "") => format!("{} {path}", self.method),
            (_, note) if note.starts_with('?') => format!("{} {path}{note}", self.method),
            (_, note) => format!("{} {path} {note}", self.method),
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.path, self.function)
    }
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.function, self.deploy.id)
    }
}

/// Turns `async fn(&Stores, Request) -> Result<Response, strata_core::Error>` into a [`Handler`]: an error
/// becomes the contract's error JSON ([`crate::response::error`]) here, once for every handler.
///
/// `handler!(f, idempotency = "scope")` serves `f` behind `Idempotency-Key` handling, its keys scoped to
/// `scope` (see [`crate::idempotency::serve`]); `f` reads the scoped key with [`crate::idempotency::key`].
#[macro_export]
macro_rules! handler {
    ($f:path) => {{
        fn boxed<'a>(
            stores: &'a $crate::route::__Stores,
            req: $crate::Request,
        ) -> $crate::route::HandlerFuture<'a> {
            ::std::boxed::Box::pin(
                async move { $crate::response::from_result($f(stores, req).await) },
            )
        }
        boxed as $crate::route::Handler
    }};
    ($f:path, idempotency = $scope:expr) => {{
        fn boxed<'a>(
            stores: &'a $crate::route::__Stores,
            req: $crate::Request,
        ) -> $crate::route::HandlerFuture<'a> {
            ::std::boxed::Box::pin($crate::idempotency::serve(stores, req, $scope, $f))
        }
        boxed as $crate::route::Handler
    }};
    ($f:path, idempotency = $scope:expr, kept_by = $keeps:expr) => {{
        fn boxed<'a>(
            stores: &'a $crate::route::__Stores,
            req: $crate::Request,
        ) -> $crate::route::HandlerFuture<'a> {
            ::std::boxed::Box::pin($crate::idempotency::serve_kept(
                stores, req, $scope, $keeps, $f,
            ))
        }
        boxed as $crate::route::Handler
    }};
}

#[doc(hidden)]
pub use strata_core::Stores as __Stores;
