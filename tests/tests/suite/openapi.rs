//! The OpenAPI document (`infra/openapi.json`, served at `GET /openapi.json`) against the route table and
//! the router.
//!
//! The rule: every route of `routes::all()` is one operation with the same method, the same path template
//! (API Gateway's greedy `{name+}` is OpenAPI's `{name}`) and its Lambda binary as `operationId`; nothing
//! else is documented except the local server's own operations in [`LOCAL_EXTRAS`], each marked
//! `x-strata-local-only`. The fallback (`$default`, `404 route_not_found`) is not an operation, and the
//! line protocol over WebSocket (`GET /kv/ws`) is not HTTP requests and responses, so neither is one.
//!
//! What the document says about each operation is checked against what the handlers do, through the
//! router: which operations read a body, which honour `Idempotency-Key`, and that each operation's
//! documented example gets a documented status and media type, and that behind `--auth-token` each gets the
//! documented `401` without the token. `infra/scripts/schemathesis` goes further
//! (generated requests against the running server, every response checked against its schema).

use axum::body::Body;
use http::Request;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use strata::routes;
use strata_tests::fixture::Fixture;
use strata_tests::server::Server;
use tower::ServiceExt;

/// Operations of the local server that are not routes of the API on AWS: (method, path).
const LOCAL_EXTRAS: &[(&str, &str)] = &[("GET", "/openapi.json"), ("GET", "/metrics")];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn document() -> Value {
    serde_json::from_str(strata::openapi::DOCUMENT).expect("infra/openapi.json is JSON")
}

/// API Gateway's greedy `{key+}` is `{key}` in OpenAPI.
fn openapi_path(path: &str) -> String {
    path.replace("+}", "}")
}

/// A local `$ref` (`#/components/...`) resolved, or the value itself.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{reference} is not a local reference"));
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} does not resolve"));
            resolve(doc, target)
        }
        None => value,
    }
}

struct Operation<'a> {
    method: String,
    path: String,
    op: &'a Value,
    /// Path-item and operation parameters, resolved.
    parameters: Vec<&'a Value>,
}

impl Operation<'_> {
    fn id(&self) -> &str {
        self.op["operationId"].as_str().unwrap_or("")
    }

    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn local_only(&self) -> bool {
        self.op["x-strata-local-only"] == Value::Bool(true)
    }

    fn statuses(&self) -> BTreeSet<u16> {
        self.op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("{}: status {s:?}", self.name()))
            })
            .collect()
    }

    fn takes_idempotency_key(&self) -> bool {
        self.parameters.iter().any(|p| {
            p["in"] == "header"
                && p["name"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case("idempotency-key")
        })
    }

    /// The request path built from the parameters' documented examples, with the query.
    fn example_uri(&self) -> String {
        let mut path = self.path.clone();
        let mut query = Vec::new();
        for p in &self.parameters {
            let name = p["name"].as_str().unwrap();
            let example = match &p["example"] {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            let encoded = percent_encode(&example);
            match p["in"].as_str().unwrap() {
                "path" => path = path.replace(&format!("{{{name}}}"), &encoded),
                "query" => query.push(format!("{name}={encoded}")),
                _ => {}
            }
        }
        if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }

    /// The documented example body and its media type.
    fn example_body(&self, doc: &Value) -> Option<(String, Vec<u8>)> {
        let content = resolve(doc, &self.op["requestBody"])["content"].as_object()?;
        let (media, spec) = content.iter().next()?;
        let body = match &spec["example"] {
            Value::String(text) => text.clone().into_bytes(),
            example => serde_json::to_vec(example).unwrap(),
        };
        Some((media.clone(), body))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let shared: Vec<&Value> = item["parameters"]
            .as_array()
            .map(|ps| ps.iter().map(|p| resolve(doc, p)).collect())
            .unwrap_or_default();
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            let mut parameters = shared.clone();
            if let Some(own) = op["parameters"].as_array() {
                parameters.extend(own.iter().map(|p| resolve(doc, p)));
            }
            found.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                op,
                parameters,
            });
        }
    }
    found
}

#[test]
fn every_route_is_one_operation_and_nothing_else_is_documented() {
    let doc = document();
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3.1."),
        "an OpenAPI 3.1 document"
    );
    let routes: BTreeMap<(String, String), String> = routes::all()
        .into_iter()
        .map(|r| {
            (
                (r.method.to_owned(), openapi_path(r.path)),
                r.function.to_owned(),
            )
        })
        .collect();
    let extras: BTreeSet<(String, String)> = LOCAL_EXTRAS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let mut documented = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for op in operations(&doc) {
        let at = (op.method.clone(), op.path.clone());
        assert!(
            ids.insert(op.id().to_owned()),
            "{}: operationId repeats",
            op.name()
        );
        assert!(!op.id().is_empty(), "{}: no operationId", op.name());
        if op.local_only() {
            assert!(
                extras.contains(&at),
                "{} is marked local-only but is not one of the local server's extras",
                op.name()
            );
        } else {
            let function = routes
                .get(&at)
                .unwrap_or_else(|| panic!("{} is documented but is not a route", op.name()));
            assert_eq!(
                op.id(),
                function,
                "{}: operationId is the binary",
                op.name()
            );
        }
        documented.insert(at);
    }
    let undocumented: Vec<_> = routes.keys().filter(|r| !documented.contains(*r)).collect();
    assert!(
        undocumented.is_empty(),
        "routes not documented: {undocumented:?}"
    );
    let missing: Vec<_> = extras.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "local extras not documented: {missing:?}"
    );
    for (method, path) in routes.keys() {
        let op = operations(&doc)
            .into_iter()
            .find(|o| (&o.method, &o.path) == (method, path))
            .unwrap();
        assert!(
            !op.local_only(),
            "{} is a route of the API, not local-only",
            op.name()
        );
    }
}

#[test]
fn every_operation_describes_parameters_bodies_and_every_response() {
    let doc = document();
    let error_schema = "#/components/schemas/Error";
    for op in operations(&doc) {
        let name = op.name();
        assert!(
            op.op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: summary"
        );
        // Path parameters: exactly the template's, required, with a schema.
        let in_template: BTreeSet<String> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let declared: BTreeSet<String> = op
            .parameters
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{name}: path parameters are required");
                assert!(p["schema"].is_object(), "{name}: {p} has no schema");
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(in_template, declared, "{name}: path parameters");
        if let Some(body) = op.op.get("requestBody") {
            let content = resolve(&doc, body)["content"].as_object().expect("content");
            for (media, spec) in content {
                assert!(
                    spec["schema"].is_object(),
                    "{name}: {media} body has no schema"
                );
            }
        }
        let statuses = op.statuses();
        assert!(
            statuses.iter().any(|s| (200..300).contains(s)),
            "{name}: no success response"
        );
        for status in &statuses {
            let response = resolve(&doc, &op.op["responses"][status.to_string()]);
            let content = response["content"].as_object();
            if *status == 204 {
                assert!(content.is_none(), "{name}: 204 has no body");
                continue;
            }
            let content = content.unwrap_or_else(|| panic!("{name}: {status} has no content"));
            for (media, spec) in content {
                assert!(
                    spec["schema"].is_object(),
                    "{name}: {status} {media}: no schema"
                );
                if *status >= 400 {
                    assert_eq!(
                        (media.as_str(), spec["schema"]["$ref"].as_str()),
                        ("application/json", Some(error_schema)),
                        "{name}: {status} is the shared error JSON"
                    );
                }
            }
        }
        // Every route of the API is rate limited when a limit is configured.
        assert!(op.local_only() || statuses.contains(&429), "{name}: 429");
        // Every request, the local extras' too, needs the bearer token when one is configured.
        assert_eq!(
            op.op["responses"]["401"]["$ref"], "#/components/responses/Unauthorized",
            "{name}: 401"
        );
        if !op.parameters.iter().any(|p| p["in"] != "header") && op.op.get("requestBody").is_none()
        {
            continue;
        }
        // Anything with input can be invalid input.
        assert!(statuses.contains(&400), "{name}: 400");
        if op.op.get("requestBody").is_some() {
            assert!(statuses.contains(&413), "{name}: 413 for bodies over 1 MiB");
            // The local server's read timeout applies to every body.
            assert_eq!(
                op.op["responses"]["408"]["$ref"], "#/components/responses/RequestTimeout",
                "{name}: 408"
            );
        }
        assert_eq!(
            op.takes_idempotency_key(),
            statuses.contains(&422),
            "{name}: 422 exactly where Idempotency-Key is taken"
        );
        if op.path != "/kv/commands" {
            // Every store operation can meet a fault or an unavailable store.
            assert!(
                statuses.contains(&500) && statuses.contains(&503),
                "{name}: 500 and 503"
            );
        }
    }
    // Every reference anywhere resolves.
    fn walk(doc: &Value, value: &Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(doc, value);
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    walk(&doc, &doc);
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

async fn send(router: &axum::Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

fn error_code(answer: &Answer) -> String {
    serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_router_serves_the_document() {
    let f = Fixture::embedded().await;
    let router = strata::server::router(Arc::new(f.stores.clone()));
    let request = Request::get("/openapi.json").body(Body::empty()).unwrap();
    let served = send(&router, request).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<Value>(&served.body).unwrap(),
        document()
    );
}

/// The real `strata serve` answers every local extra (some, like `/metrics`, are added around the router).
#[tokio::test]
async fn the_local_server_answers_every_local_extra() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &[]);
    let client = reqwest::Client::new();
    for (method, path) in LOCAL_EXTRAS {
        let response = client
            .request(method.parse().unwrap(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
    }
    let served: Value = client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, document());
}

/// Which operations read a body and which honour `Idempotency-Key`, asked of the handlers themselves.
#[tokio::test]
async fn bodies_and_idempotency_keys_are_documented_exactly_where_handlers_take_them() {
    let doc = document();
    let f = Fixture::embedded().await;
    let router = strata::server::router(Arc::new(f.stores.clone()));
    // The local extras are not all in the router; the real server answers them (test above).
    for op in operations(&doc).into_iter().filter(|op| !op.local_only()) {
        let name = op.name();
        let uri = op.example_uri();
        // Neither JSON nor UTF-8: every handler that reads the body refuses it, before any lookup.
        let request = Request::builder()
            .method(op.method.as_str())
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from(vec![0xff, b'{']))
            .unwrap();
        let answer = send(&router, request).await;
        let reads_body = answer.status == 400
            && ["invalid_json", "invalid_body"].contains(&error_code(&answer).as_str());
        assert_eq!(
            op.op.get("requestBody").is_some(),
            reads_body,
            "{name}: a request body is documented exactly when the handler reads one ({} {})",
            answer.status,
            error_code(&answer)
        );
        // An invalid key is refused first by every operation that honours the header.
        let request = Request::builder()
            .method(op.method.as_str())
            .uri(&uri)
            .header("idempotency-key", "not a valid key")
            .body(Body::empty())
            .unwrap();
        let answer = send(&router, request).await;
        assert_eq!(
            op.takes_idempotency_key(),
            answer.status == 400 && error_code(&answer) == "invalid_idempotency_key",
            "{name}: Idempotency-Key is documented exactly when the handler honours it ({} {})",
            answer.status,
            error_code(&answer)
        );
    }
}

/// Each operation's documented example, sent in document order to a fresh store, gets a status and media
/// type the document lists for it, and reaches its handler (never the fallback).
#[tokio::test]
async fn documented_examples_get_documented_answers() {
    let doc = document();
    let f = Fixture::embedded().await;
    let router = strata::server::router(Arc::new(f.stores.clone()));
    // The local extras are not all in the router; the real server answers them (test above).
    for op in operations(&doc).into_iter().filter(|op| !op.local_only()) {
        let name = op.name();
        let mut request = Request::builder()
            .method(op.method.as_str())
            .uri(op.example_uri());
        let body = match op.example_body(&doc) {
            Some((media, body)) => {
                request = request.header("content-type", media);
                body
            }
            None => Vec::new(),
        };
        let answer = send(&router, request.body(Body::from(body)).unwrap()).await;
        assert_ne!(error_code(&answer), "route_not_found", "{name}: not routed");
        assert!(
            op.statuses().contains(&answer.status),
            "{name}: {} is not documented: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        let response = resolve(&doc, &op.op["responses"][answer.status.to_string()]);
        match response["content"].as_object() {
            None => assert!(
                answer.body.is_empty(),
                "{name}: {} has a body",
                answer.status
            ),
            Some(content) => {
                let got = answer.content_type.clone().unwrap_or_default();
                let essence = got.split(';').next().unwrap_or("").trim();
                assert!(
                    content.contains_key(essence),
                    "{name}: {} answered {got:?}, documented {:?}",
                    answer.status,
                    content.keys().collect::<Vec<_>>()
                );
                if essence == "application/json" {
                    let body: Value = serde_json::from_slice(&answer.body).unwrap();
                    if answer.status >= 400 {
                        assert!(
                            body["error"]["code"].is_string()
                                && body["error"]["message"].is_string(),
                            "{name}: {body}"
                        );
                    }
                }
            }
        }
    }
}

/// The bearer token of `strata serve --auth-token`: a security scheme, optional for the document as a whole
/// (no token configured, nothing is required), and the `401` it answers, with its `www-authenticate`.
#[test]
fn the_local_bearer_token_is_documented() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&"http".into(), &"bearer".into())
    );
    let described = scheme["description"].as_str().unwrap();
    assert!(
        described.contains("Local server only") && described.contains("--auth-token"),
        "{described}"
    );
    assert_eq!(
        doc["security"],
        serde_json::json!([{}, {"bearerAuth": []}]),
        "either nothing or the bearer token"
    );
    let unauthorized = resolve(&doc, &doc["components"]["responses"]["Unauthorized"]);
    assert!(unauthorized["headers"]["www-authenticate"].is_object());
}

/// Each operation's documented example, behind the token check of `--auth-token` and sent without the
/// token, gets the documented `401`: the error JSON and a `www-authenticate` its pattern accepts.
#[tokio::test]
async fn without_the_token_every_documented_example_gets_the_documented_401() {
    let doc = document();
    let f = Fixture::embedded().await;
    let token = strata::auth::AuthToken::parse("openapi-test-token-0123456789").unwrap();
    let router =
        strata::server::authenticated(strata::server::router(Arc::new(f.stores.clone())), token);
    let header = resolve(&doc, &doc["components"]["headers"]["WwwAuthenticate"]);
    let pattern = header["schema"]["pattern"].as_str().unwrap();
    assert_eq!(pattern, "^Bearer( |$)", "checked by hand below");
    for op in operations(&doc).into_iter().filter(|op| !op.local_only()) {
        let name = op.name();
        let mut request = Request::builder()
            .method(op.method.as_str())
            .uri(op.example_uri());
        let body = match op.example_body(&doc) {
            Some((media, body)) => {
                request = request.header("content-type", media);
                body
            }
            None => Vec::new(),
        };
        let request = request.body(Body::from(body)).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let answer = send(
            &router,
            Request::builder()
                .method(op.method.as_str())
                .uri(op.example_uri())
                .header("authorization", "Bearer not-the-token")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), 401, "{name}");
        assert!(
            challenge == "Bearer" || challenge.starts_with("Bearer "),
            "{name}: {challenge}"
        );
        assert_eq!(
            (answer.status, answer.content_type.as_deref()),
            (401, Some("application/json")),
            "{name}"
        );
        assert_eq!(error_code(&answer), "unauthorized", "{name}");
    }
}
