//! What the local server checks before it routes a request, in one service around the router:
//!
//! 1. a request a web page sent is refused: a foreign `Host` or `Origin` ([`crate::browser`]), whether or
//!    not the server has a token;
//! 2. `--auth-token`: every request, on every route (the fallback too), needs `Authorization: Bearer
//!    TOKEN`; without it `401 unauthorized` and nothing runs;
//! 3. with `allowed` (what `strata serve` always sets), what API Gateway refuses before any function
//!    runs: `HEAD` (a `GET` route does not take it: `404 route_not_found`, where axum would run the `GET`
//!    handler); and, where it matters on a local server that a browser reaches, a body that is not JSON
//!    where the operation reads JSON (`415`): a page can send `text/plain` or a form to another site
//!    without asking it first, but not JSON. Both come before the rate limiter: they cost no budget.
//!
//! One service rather than a `Router::layer` per check: a layer wraps every route in a boxed, cloned
//! service and a boxed future per request. Refusals are counted in the metrics under the operation the
//! request was for, or the fallback's; the local extras (`/metrics`, `/openapi.json`, `/kv/ws`) are not
//! operations and are not counted, as their answers never are.

use super::metrics::{Operations, count_refusal};
use super::router::to_axum;
use axum::response::Response;
use http::Method;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use strata_http::response::error;

/// The checks [`Front`] makes, each when configured.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// The addresses and names the server answers to; with them, what a web page sends is refused.
    pub allowed: Option<crate::browser::Allowed>,
    /// `--auth-token`.
    pub token: Option<crate::auth::AuthToken>,
    /// The local WebSocket's cap and idle timeout, handed to `GET /kv/ws`.
    pub websockets: Option<crate::line::WsLimits>,
}

/// The router behind [`Checks`].
#[derive(Clone, Debug)]
pub struct Front {
    router: axum::Router,
    checks: Arc<(Checks, Operations)>,
}

impl Front {
    pub fn new(router: axum::Router, checks: Checks) -> Self {
        Self {
            router,
            checks: Arc::new((checks, Operations::new())),
        }
    }
}

/// `router` behind the token check alone, as an axum router (what tests serve in-process).
pub fn authenticated(router: axum::Router, token: crate::auth::AuthToken) -> axum::Router {
    let checks = Checks {
        token: Some(token),
        ..Checks::default()
    };
    axum::Router::new().fallback_service(Front::new(router, checks))
}

impl tower::Service<axum::extract::Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: axum::extract::Request) -> Answer {
        let (checks, operations) = &*self.checks;
        if let Some(allowed) = &checks.allowed
            && let Err(e) = allowed
                .check_host(req.headers())
                .and_then(|()| allowed.check_origin(req.headers()))
        {
            tracing::warn!(code = %e.code, "refused a request a web page sent: {}", e.message);
            return Answer::refused(operations, &req, &e);
        }
        if req.uri().path() == "/kv/ws"
            && let Some(websockets) = &checks.websockets
        {
            req.extensions_mut().insert(websockets.clone());
        }
        let Some(token) = &checks.token else {
            return gateway_refused(checks, operations, &req)
                .unwrap_or_else(|| Answer::Routed(tower::Service::call(&mut self.router, req)));
        };
        let (token, checks, router) = (token.clone(), self.checks.clone(), self.router.clone());
        Answer::Checking(Box::pin(async move {
            let operations = &checks.1;
            let started = std::time::Instant::now();
            if let Some((refused, code)) = check_token(&token, &mut req).await {
                if let Some(operation) = operations.of(&req) {
                    strata_http::metrics::record(
                        operation,
                        started,
                        refused.status().as_u16(),
                        code.into(),
                    );
                }
                return refused;
            }
            if let Some(refused) = gateway_refused(&checks.0, operations, &req) {
                return refused.await.unwrap_or_else(|never| match never {});
            }
            tower::ServiceExt::oneshot(router, req)
                .await
                .unwrap_or_else(|never| match never {})
        }))
    }
}

/// What API Gateway refuses before any function runs, with `allowed` (see the module's comment).
fn gateway_refused(
    checks: &Checks,
    operations: &Operations,
    req: &axum::extract::Request,
) -> Option<Answer> {
    checks.allowed.as_ref()?;
    let refused = if req.method() == Method::HEAD {
        strata_api::system::route_not_found(req.method(), req.uri().path())
    } else if !axum::body::HttpBody::is_end_stream(req.body())
        && !crate::browser::is_json(req.headers())
        // Last: the only check that matches the path.
        && operations.reads_json(req)
    {
        crate::browser::unsupported_media_type(req.headers())
    } else {
        return None;
    };
    Some(Answer::refused(operations, req, &refused))
}

/// The token check: `None` when the request may go on (with the token in its extensions for `/kv/ws`,
/// whose `AUTH` command checks the same token); the refusal and its error code otherwise.
async fn check_token(
    token: &crate::auth::AuthToken,
    req: &mut axum::extract::Request,
) -> Option<(Response, &'static str)> {
    // A request without the header is no guess: refused at once, nothing recorded.
    let verdict = match crate::auth::AuthToken::bearer(req.headers()) {
        None => crate::auth::Verdict::Wrong,
        Some(candidate) => {
            let client = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip());
            token.verify(client, "http", candidate).await
        }
    };
    match verdict {
        crate::auth::Verdict::Valid => {
            req.extensions_mut().insert(token.clone());
            None
        }
        crate::auth::Verdict::Throttled(retry_after) => Some((
            to_axum(error(&crate::auth::throttled(retry_after))),
            crate::auth::THROTTLED_CODE,
        )),
        _ => Some((
            crate::auth::unauthorized(crate::auth::refusal(req.headers())),
            crate::auth::CODE,
        )),
    }
}

/// The future of [`Front`]: a refusal, the router's answer, or the token check and then the router's.
#[allow(missing_debug_implementations)] // The router's future is not `Debug`.
pub enum Answer {
    Refused(Option<Response>),
    Routed(axum::routing::future::RouteFuture<Infallible>),
    Checking(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Answer {
    /// `e` as the contract's error JSON, counted under the operation the request was for.
    fn refused<B>(operations: &Operations, req: &http::Request<B>, e: &strata_core::Error) -> Self {
        let started = std::time::Instant::now();
        let response = to_axum(error(e));
        count_refusal(operations.of(req), started, &response);
        Self::Refused(Some(response))
    }
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Refused(response) => Poll::Ready(Ok(response
                .take()
                .expect("an answer is polled once it is ready"))),
            Answer::Routed(routed) => Pin::new(routed).poll(cx),
            Answer::Checking(checking) => checking.as_mut().poll(cx).map(Ok),
        }
    }
}
