//! What API Gateway does that the local server does too: the request as the Lambda gets it (decoded
//! path parameters, query parameters, the whole body within the read timeout). Its refusals before any
//! function runs are in front of the router ([`super::front`]).

use axum::extract::RawPathParams;
use lambda_http::RequestExt;
use lambda_http::aws_lambda_events::query_map::QueryMap;
use std::collections::HashMap;
use strata_core::{Error, Kind};
use strata_http::MAX_BODY_BYTES;
use strata_http::request::body_too_large;

/// The request as API Gateway (HTTP API, payload 2.0) would hand it to the Lambda: decoded path
/// parameters, query parameters, the whole body.
pub(super) async fn to_lambda(
    params: Option<RawPathParams>,
    req: axum::extract::Request,
) -> Result<lambda_http::Request, Error> {
    // Built as the map the extension holds: `HashMap<String, String>` would be copied into it.
    let mut path: HashMap<String, Vec<String>> = HashMap::new();
    for (name, raw) in params.iter().flat_map(|p| p.iter()) {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| {
                Error::invalid(
                    "invalid_path",
                    format!("path parameter `{name}` is not percent-encoded UTF-8"),
                )
            })?;
        path.insert(name.to_owned(), vec![decoded.into_owned()]);
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
