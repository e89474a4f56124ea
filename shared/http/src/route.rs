//! Routes, declared once per service and shared by the Lambdas, the local server and the tests.

use crate::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use strata_core::Stores;

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// A handler as a plain function pointer, so route tables can be `const`.
pub type Handler = for<'a> fn(&'a Stores, Request) -> HandlerFuture<'a>;

/// One operation of the API.
#[derive(Clone, Copy)]
pub struct Route {
    /// `GET`, `PUT`, ...; `ANY` only for the fallback.
    pub method: &'static str,
    /// In API Gateway syntax: `{name}` is one segment, a trailing `{name+}` takes the rest of the path.
    /// `$default` is the fallback for requests no route matches.
    pub path: &'static str,
    /// The Lambda binary (and `template.yaml` function) that serves this route on AWS.
    pub function: &'static str,
    pub handler: Handler,
    /// The operation of the OpenAPI document (summary, parameters, bodies, responses), written next to the
    /// handler; the document takes the path and method from this route. The fallback's is never read.
    pub openapi: fn() -> utoipa::openapi::path::Operation,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.path, self.function)
    }
}

/// Turns `async fn(&Stores, Request) -> Response` into a [`Handler`].
#[macro_export]
macro_rules! handler {
    ($f:path) => {{
        fn boxed<'a>(
            stores: &'a $crate::route::__Stores,
            req: $crate::Request,
        ) -> $crate::route::HandlerFuture<'a> {
            ::std::boxed::Box::pin($f(stores, req))
        }
        boxed as $crate::route::Handler
    }};
}

#[doc(hidden)]
pub use strata_core::Stores as __Stores;
