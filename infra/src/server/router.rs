//! The router: each route of the API calls its handler with the request API Gateway would have delivered;
//! plus `GET /kv/ws` and `GET /openapi.json`, the local extras.

use super::api_gateway::{invalid_path, to_lambda};
use axum::extract::RawPathParams;
use axum::extract::rejection::RawPathParamsRejection;
use axum::routing::{MethodFilter, on};
use http::Method;
use std::sync::Arc;
use strata_core::Stores;
use strata_http::response::error;
use strata_http::route::Route;

/// The router: every route of [`crate::routes::all`], plus the fallback for unknown paths and methods.
pub fn router(stores: Arc<Stores>) -> axum::Router {
    let mut router = axum::Router::new();
    for route in crate::routes::all() {
        let method = Method::from_bytes(route.method.as_bytes()).expect("route methods are valid");
        let filter = MethodFilter::try_from(method).expect("route methods are standard");
        let stores = stores.clone();
        router = router.route(
            &axum_path(route.path),
            on(
                filter,
                move |params: Result<RawPathParams, RawPathParamsRejection>,
                      req: axum::extract::Request| {
                    call(stores, route, Some(params), req)
                },
            ),
        );
    }
    // The local stand-in for the API Gateway WebSocket API (not a route of the HTTP API).
    let ws_stores = stores.clone();
    router = router.route(
        "/kv/ws",
        axum::routing::get(
            move |token: Option<axum::Extension<crate::auth::AuthToken>>,
                  limits: Option<axum::Extension<crate::line::WsLimits>>,
                  client: Option<
                axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>,
            >,
                  upgrade| {
                crate::line::websocket(
                    ws_stores,
                    token.map(|t| t.0),
                    limits.map(|l| l.0),
                    client.map(|c| c.0.0.ip()),
                    upgrade,
                )
            },
        ),
    );
    // The API's OpenAPI document (local server only; on AWS it is a file of the repository).
    router = router.route("/openapi.json", axum::routing::get(crate::openapi::serve));
    let fallback = {
        let stores = stores.clone();
        move |req: axum::extract::Request| call(stores, crate::routes::FALLBACK, None, req)
    };
    // API Gateway sends a wrong method on a known path to `$default` as well; answer the same way.
    router
        .fallback(fallback.clone())
        .method_not_allowed_fallback(fallback)
}

/// API Gateway's `{name+}` (rest of the path) is axum's `{*name}`.
pub fn axum_path(path: &str) -> String {
    path.split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix("+}")) {
                Some(name) => format!("{{*{name}}}"),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(
    stores: Arc<Stores>,
    route: Route,
    params: Option<Result<RawPathParams, RawPathParamsRejection>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    // axum refuses a path whose parameters are not valid UTF-8 once decoded; answer in the contract's JSON.
    let params = match params.transpose() {
        Ok(params) => params,
        Err(_) => return to_axum(error(&invalid_path())),
    };
    let started = std::time::Instant::now();
    let response = match to_lambda(params, req).await {
        Ok(req) => {
            strata_core::deadline::within(
                strata_http::REQUEST_BUDGET,
                (route.handler)(&stores, req),
            )
            .await
        }
        Err(e) => error(&e),
    };
    strata_http::response::log_error(&response);
    strata_http::metrics::observe(route.function, started, &response);
    to_axum(response)
}

pub(crate) fn to_axum(response: strata_http::Response) -> axum::response::Response {
    response.map(|body| match body {
        lambda_http::Body::Empty => axum::body::Body::empty(),
        lambda_http::Body::Text(text) => axum::body::Body::from(text),
        lambda_http::Body::Binary(bytes) => axum::body::Body::from(bytes),
        // `Body` is non-exhaustive upstream; no handler produces anything else.
        _ => axum::body::Body::empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::axum_path;

    #[test]
    fn greedy_parameters_become_wildcards() {
        assert_eq!(axum_path("/kv/keys/{key+}"), "/kv/keys/{*key}");
        assert_eq!(
            axum_path("/widgets/{serial}/associations"),
            "/widgets/{serial}/associations"
        );
    }
}
