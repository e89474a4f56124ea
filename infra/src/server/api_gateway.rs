//! What API Gateway does that the local server does too: the request as the Lambda gets it (decoded
//! path parameters, query parameters, the whole body within the read timeout), and the refusals it
//! gives before any function runs (`HEAD`, a body that is not JSON where JSON is read).

use super::metrics::{count_refusal, operation_of, operations};
use super::router::to_axum;
use axum::extract::RawPathParams;
use http::Method;
use lambda_http::RequestExt;
use lambda_http::aws_lambda_events::query_map::QueryMap;
use std::collections::HashMap;
use std::sync::Arc;
use strata_core::{Error, Kind};
use strata_http::MAX_BODY_BYTES;
use strata_http::request::body_too_large;
use strata_http::response::error;

/// Inside the token check, what API Gateway does before a function runs: no `HEAD` (a `GET` route does
/// not take it: `404 route_not_found`, where axum would run the `GET` handler), and, where it matters
/// on a local server that a browser reaches, only JSON on operations that read JSON (`415`; a page can
/// send `text/plain` or a form to another site without asking it first, but not JSON). Apply it after
/// every route is added.
pub fn as_on_aws(router: axum::Router) -> axum::Router {
    let json = crate::browser::json_operations();
    let operations = Arc::new(operations());
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let started = std::time::Instant::now();
            let (json, operations) = (json.clone(), operations.clone());
            async move {
                match only_json_no_head(&json, &req) {
                    Some(refused) => {
                        count_refusal(operation_of(&operations, &req), started, &refused);
                        refused
                    }
                    None => next.run(req).await,
                }
            }
        },
    ))
}

/// The answer API Gateway would give before any function runs, if any.
fn only_json_no_head(
    json: &crate::browser::JsonOperations,
    req: &axum::extract::Request,
) -> Option<axum::response::Response> {
    let headers = req.headers();
    if req.method() == Method::HEAD {
        return Some(to_axum(error(&strata_api::system::route_not_found(
            req.method(),
            req.uri().path(),
        ))));
    }
    let reads_json = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|path| json.contains(path.as_str(), req.method()));
    if reads_json
        && !axum::body::HttpBody::is_end_stream(req.body())
        && !crate::browser::is_json(headers)
    {
        return Some(to_axum(error(&crate::browser::unsupported_media_type(
            headers,
        ))));
    }
    None
}

/// The request as API Gateway (HTTP API, payload 2.0) would hand it to the Lambda: decoded path
/// parameters, query parameters, the whole body.
pub(super) async fn to_lambda(
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
    let query = req.uri().query().map(query_map);
    let (parts, body) = req.into_parts();
    // A request that says it has no body (a GET without `content-length`, `content-length: 0`) has nothing
    // to wait for: no timer, no collecting.
    let bytes = if axum::body::HttpBody::is_end_stream(&body) {
        bytes::Bytes::new()
    } else {
        // One byte over the limit is enough to know the body is too large. A body that does not arrive in
        // time would hold its connection (and a connection permit) as long as the client likes.
        let timeout = crate::http_listener::read_timeout();
        tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES + 1))
            .await
            .map_err(|_| body_timeout(timeout))?
            .map_err(|_| body_too_large())?
    };
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        // No copy when the body arrived as one buffer of its own.
        lambda_http::Body::Binary(Vec::from(bytes))
    };
    let mut req = http::Request::from_parts(parts, body);
    // Each is an extension, boxed; a handler reads an absent one as empty (`*_ref()` gives `None`).
    if !path.is_empty() {
        req = req.with_path_parameters(path);
    }
    if let Some(query) = query {
        req = req.with_query_string_parameters(query);
    }
    Ok(req)
}

/// `408 request_timeout`.
fn body_timeout(timeout: std::time::Duration) -> Error {
    Error::new(
        Kind::Timeout,
        "request_timeout",
        format!(
            "the request body did not arrive within {} s",
            timeout.as_secs()
        ),
    )
}

pub(super) fn invalid_path() -> Error {
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
