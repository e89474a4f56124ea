//! The HTTP side of `strata serve`.

use axum::extract::RawPathParams;
use axum::extract::rejection::RawPathParamsRejection;
use axum::routing::{MethodFilter, on};
use http::Method;
use lambda_http::RequestExt;
use lambda_http::aws_lambda_events::query_map::QueryMap;
use std::collections::HashMap;
use std::sync::Arc;
use strata_core::{Error, Stores};
use strata_http::MAX_BODY_BYTES;
use strata_http::request::body_too_large;
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
    match to_lambda(params, req).await {
        Ok(req) => to_axum((route.handler)(&stores, req).await),
        Err(e) => to_axum(error(&e)),
    }
}

/// The request as API Gateway (HTTP API, payload 2.0) would hand it to the Lambda: decoded path
/// parameters, query parameters, the whole body.
async fn to_lambda(
    params: Option<RawPathParams>,
    req: axum::extract::Request,
) -> Result<lambda_http::Request, Error> {
    let mut path = HashMap::new();
    for (name, raw) in params.iter().flat_map(|p| p.iter()) {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| {
                Error::invalid(
                    "invalid_path",
                    format!("path parameter `{name}` is not percent-encoded UTF-8"),
                )
            })?;
        path.insert(name.to_owned(), decoded.into_owned());
    }
    let query = query_map(req.uri().query().unwrap_or(""));
    let (parts, body) = req.into_parts();
    // One byte over the limit is enough to know the body is too large.
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES + 1)
        .await
        .map_err(|_| body_too_large())?;
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        lambda_http::Body::Binary(bytes.to_vec())
    };
    Ok(http::Request::from_parts(parts, body)
        .with_path_parameters(path)
        .with_query_string_parameters(query))
}

fn invalid_path() -> Error {
    Error::invalid("invalid_path", "the path is not percent-encoded UTF-8")
}

fn query_map(query: &str) -> QueryMap {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        map.entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    map.into()
}

fn to_axum(response: strata_http::Response) -> axum::response::Response {
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
