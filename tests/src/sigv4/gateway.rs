//! A gateway that plays API Gateway's part for a stack deployed with `AuthMode=iam`: it checks each
//! request's SigV4 signature ([`super::verify`]), answers `403` with API Gateway's body when it does not
//! match, and forwards the others to a `strata serve`. It can change a request on its way, as an attacker
//! would, and records what it received.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// What the gateway changes in a request before checking it: a request altered on its way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tamper {
    /// `honest` in the body becomes `forged`.
    Body,
    /// An `x` is added to the path.
    Path,
    /// Another `Idempotency-Key`.
    IdempotencyKey,
}

/// One request the gateway received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// `None` when the signature was refused; else strata's status.
    pub status: Option<u16>,
    pub idempotency_key_signed: Option<bool>,
    pub amz_date: Option<String>,
}

#[derive(Debug, Default)]
pub struct Gateway {
    pub base: String,
    pub upstream: String,
    pub tamper: Option<Tamper>,
    /// Answer the next verified request `503` with `retry-after: 1` instead of forwarding it.
    pub unavailable_once: bool,
    pub received: Vec<Received>,
}

/// Starts the gateway in front of `upstream`; returns its base URL and its state.
pub async fn gateway(upstream: &str) -> (String, Arc<Mutex<Gateway>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(Gateway {
        base: base.clone(),
        upstream: upstream.to_owned(),
        ..Gateway::default()
    }));
    let http = reqwest::Client::new();
    let shared = state.clone();
    crate::server::serve_http1(listener, move |req| {
        check(shared.clone(), http.clone(), req)
    });
    (base, state)
}

fn answer(status: u16, body: String) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap()
}

/// API Gateway's part for one request: verify, then forward to strata (or refuse with `403`).
async fn check(
    state: Arc<Mutex<Gateway>>,
    http: reqwest::Client,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().clone();
    let mut path = req.uri().path_and_query().unwrap().to_string();
    let mut headers = req.headers().clone();
    let mut body = req.into_body().collect().await.unwrap().to_bytes();
    let (upstream, tamper) = {
        let state = state.lock().unwrap();
        (state.upstream.clone(), state.tamper)
    };
    match tamper {
        Some(Tamper::Body) => {
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(text.contains("honest"), "{text}");
            body = Bytes::from(text.replacen("honest", "forged", 1));
        }
        Some(Tamper::Path) => path.push('x'),
        Some(Tamper::IdempotencyKey) => {
            assert!(headers.contains_key("idempotency-key"));
            headers.insert("idempotency-key", "another-key".parse().unwrap());
        }
        None => {}
    }
    let signed_headers = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("SignedHeaders=").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_owned();
    let mut received = Received {
        method: method.to_string(),
        path: path.clone(),
        status: None,
        idempotency_key_signed: headers
            .contains_key("idempotency-key")
            .then(|| signed_headers.split(';').any(|h| h == "idempotency-key")),
        amz_date: headers
            .get("x-amz-date")
            .map(|v| v.to_str().unwrap().to_owned()),
    };
    if let Err(why) = super::verify(method.as_str(), &path, &headers, &body) {
        state.lock().unwrap().received.push(received);
        return Ok(answer(403, json!({ "message": why }).to_string()));
    }
    if std::mem::take(&mut state.lock().unwrap().unavailable_once) {
        received.status = Some(503);
        state.lock().unwrap().received.push(received);
        let mut response = answer(
            503,
            json!({"error": {"code": "store_unavailable", "message": "the store did not answer"}})
                .to_string(),
        );
        response
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
        return Ok(response);
    }
    let mut request = http.request(method, format!("{upstream}{path}")).body(body);
    for name in ["content-type", "idempotency-key"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let strata = request.send().await.unwrap();
    let status = strata.status().as_u16();
    let strata_headers = strata.headers().clone();
    let strata_body = strata.bytes().await.unwrap();
    received.status = Some(status);
    state.lock().unwrap().received.push(received);
    let mut response = hyper::Response::builder().status(status);
    for (name, value) in &strata_headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    Ok(response.body(Full::from(strata_body)).unwrap())
}

pub fn received(state: &Arc<Mutex<Gateway>>) -> Vec<Received> {
    std::mem::take(&mut state.lock().unwrap().received)
}
