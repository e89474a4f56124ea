//! strata's API: every operation of the four services in one table, and the handlers that belong to no
//! service.
//!
//! # Layout
//!
//! - [`routes`], [`FALLBACK`], [`functions`]: every HTTP route, the answer to requests no route matches,
//!   and every Lambda function (routes first), each as its service declares it (`strata_http::route`). The
//!   local server mounts the routes, the Lambda binary dispatches on them, `strata generate template`
//!   writes the template's function blocks from them.
//! - [`system`]: `GET /health` and the not-found fallback.
//! - [`lambda`]: the entry point of the one Lambda binary (`src/main.rs`): the function named by the
//!   runtime's `_HANDLER` (the template's `Handler`), served by its declared handler.

pub mod lambda;
pub mod system;

use strata_http::handler;
use strata_http::route::{Access, Deploy, Function, Pool, Route, Trigger};

/// The routes that belong to no service.
pub const SYSTEM_ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/health",
    function: "health",
    handler: handler!(system::health),
    openapi: system::health_openapi,
    deploy: Deploy::new("Health", Access::Read, Pool::Reads, &[]),
}];

/// Answers every request that no route matches (API Gateway's `$default` route), in the contract's JSON.
pub const FALLBACK: Route = Route {
    method: "ANY",
    path: "$default",
    function: "not-found",
    handler: handler!(system::not_found),
    // Not an operation of the document: the fallback answers what no route matches.
    openapi: strata_http::openapi::Operation::new,
    deploy: Deploy::new("NotFound", Access::AnyScope, Pool::Reads, &[])
        .note("Answers requests that match no route with the API's JSON 404"),
};

/// Every route the API serves (the fallback aside), in declaration order.
pub fn routes() -> Vec<Route> {
    [
        SYSTEM_ROUTES,
        strata_kv::ROUTES,
        strata_certificates::ROUTES,
        strata_counters::ROUTES,
        strata_widgets::ROUTES,
    ]
    .concat()
}

/// Every Lambda function: each route's (the fallback's included), then the WebSocket routes' and the
/// aggregator's. The deployment of a route is a [`Function`] triggered by its HTTP route.
pub fn functions() -> Vec<Deployed> {
    let http = routes().into_iter().chain([FALLBACK]).map(Deployed::Route);
    let other = strata_kv::WEBSOCKET
        .iter()
        .copied()
        .chain([strata_counters::AGGREGATOR])
        .map(Deployed::Function);
    http.chain(other).collect()
}

/// One Lambda function, as declared.
#[derive(Clone, Copy, Debug)]
pub enum Deployed {
    Route(Route),
    Function(Function),
}

impl Deployed {
    /// The function's name: its `Handler` in the template, and the last segment of its log group.
    pub fn name(&self) -> &'static str {
        match self {
            Deployed::Route(r) => r.function,
            Deployed::Function(f) => f.function,
        }
    }

    pub fn deploy(&self) -> &Deploy {
        match self {
            Deployed::Route(r) => &r.deploy,
            Deployed::Function(f) => &f.deploy,
        }
    }

    /// The function's description in the template.
    pub fn description(&self) -> String {
        match self {
            Deployed::Route(r) => r.description(),
            Deployed::Function(f) => f.deploy.note.to_owned(),
        }
    }

    /// The HTTP handler, for every function but the aggregator.
    pub fn handler(&self) -> Option<strata_http::route::Handler> {
        match self {
            Deployed::Route(r) => Some(r.handler),
            Deployed::Function(Function {
                trigger: Trigger::WebSocket { handler, .. },
                ..
            }) => Some(*handler),
            Deployed::Function(_) => None,
        }
    }
}

/// The function of this name, if the API has one.
pub fn function(name: &str) -> Option<Deployed> {
    functions().into_iter().find(|f| f.name() == name)
}
