//! What a stranger can make of a local server, from outside (CONTRACT.md, "Who may call"): a web page the
//! developer opens (a cross-site `text/plain` POST, a foreign-`Origin` WebSocket, a rebinding `Host`, an
//! HTTP request to the line port), someone guessing the token, and the answers only AWS's side gives
//! (`HEAD`, a non-upgrade `GET /kv/ws`).

use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;
use strata_tests::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "strangers-test-token-8e2a41";

fn start(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), extra);
    (server, dir)
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("the contract's error JSON");
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// The page's request runs nothing: the key it wrote is not there.
async fn victim_absent(server: &Server) {
    let r = reqwest::get(server.url("/kv/keys/victim")).await.unwrap();
    assert_eq!(r.status(), 404, "a refused request wrote nothing");
}

/// A page on another site posts the line protocol as `text/plain` (a "simple" request: no preflight), and
/// a form to a JSON route.
#[tokio::test]
async fn a_cross_site_post_is_refused_and_runs_nothing() {
    let (server, _dir) = start(&[]);
    let client = reqwest::Client::new();
    let page = client
        .post(server.url("/kv/commands"))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body("PUT victim pwned\nGET victim\n")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(page).await, (403, "origin_not_allowed".into()));
    victim_absent(&server).await;
    // The same from a page of a local dev server on another port.
    let page = client
        .put(server.url("/kv/keys/victim"))
        .header("origin", "http://localhost:5173")
        .header("content-type", "application/json")
        .body(r#"{"value": "pwned"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(page).await, (403, "origin_not_allowed".into()));
    victim_absent(&server).await;
    // Without an Origin (a program, or an old browser), a JSON route still takes only JSON.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = client
            .put(server.url("/kv/keys/victim"))
            .body(r#"{"value": "pwned"}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let r = request.send().await.unwrap();
        assert_eq!(
            error_code(r).await,
            (415, "unsupported_media_type".into()),
            "{content_type:?}"
        );
    }
    victim_absent(&server).await;
    let form = client
        .post(server.url("/widgets"))
        .header("content-type", "text/plain")
        .body(r#"{"serial_number": "A", "name": "alpha", "ports": ["P"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(form).await,
        (415, "unsupported_media_type".into())
    );
    // The server's own origin, and programs sending JSON, are served.
    let own = client
        .put(server.url("/kv/keys/mine"))
        .header("origin", server.base.as_str())
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"value": "ok"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let commands = client
        .post(server.url("/kv/commands"))
        .header("content-type", "text/plain")
        .body("GET mine\n")
        .send()
        .await
        .unwrap();
    assert_eq!(commands.status(), 200);
    assert_eq!(
        commands.text().await.unwrap(),
        "{\"status\": \"Ok\", \"result\": \"ok\"}\n"
    );
}

/// A page opens the line protocol's WebSocket: the browser sends its own `Origin`.
#[tokio::test]
async fn a_foreign_origin_cannot_open_the_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (server, _dir) = start(&[]);
    let url = server.url("/kv/ws").replacen("http", "ws", 1);
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "origin_not_allowed");
        }
        other => panic!("the upgrade was not refused: {:?}", other.map(|_| ())),
    }
    // Its own origin, and no origin, upgrade.
    for origin in [Some(server.base.clone()), None] {
        let mut request = url.as_str().into_client_request().unwrap();
        if let Some(origin) = &origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("{origin:?}: {e}"));
        futures_util::SinkExt::send(&mut socket, "GET nothing".into())
            .await
            .unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            "{\"status\": \"Error\", \"mesg\": \"Key not found!\"}"
        );
    }
}

/// DNS rebinding: the page's own name resolves to 127.0.0.1, so the browser sends that name as `Host`.
#[tokio::test]
async fn a_rebinding_host_is_refused_unless_allowed() {
    let (server, _dir) = start(&[]);
    let client = reqwest::Client::new();
    for path in ["/admin/export", "/health", "/kv/keys/a", "/no/such/route"] {
        let r = client
            .get(server.url(path))
            .header("host", "attacker.example:3000")
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (403, "host_not_allowed".into()),
            "{path}"
        );
    }
    for host in [
        format!("localhost:{}", server.base.rsplit(':').next().unwrap()),
        server.base.trim_start_matches("http://").to_owned(),
    ] {
        let r = client
            .get(server.url("/health"))
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    // Behind a reverse proxy, its name is allowed by name.
    let (proxied, _dir) = start(&["--allow-host", "strata.example"]);
    let r = client
        .get(proxied.url("/admin/export"))
        .header("host", "strata.example")
        .header("origin", "https://strata.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(proxied.url("/health"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "host_not_allowed".into()));
}

/// A page posts to the line port: the browser's request line comes first, the body's lines after the
/// headers. The connection is closed at the first line, so the body never runs.
#[tokio::test]
async fn an_http_request_to_the_line_port_runs_nothing() {
    let (server, _dir) = start(&[]);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.line_port))
        .await
        .unwrap();
    let body = "PUT victim pwned\n";
    stream
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: https://evil.example\r\n\
                 Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                server.line_port,
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("closed by the server")
        .unwrap();
    assert_eq!(
        answer,
        "{\"status\": \"Error\", \"mesg\": \"This is the key/value line protocol, not HTTP; closing the connection\"}\n"
    );
    victim_absent(&server).await;
}

/// API Gateway routes no `HEAD` (a `GET` route does not take it), and every answer of the local server is
/// the contract's JSON, a `GET /kv/ws` that is no upgrade included.
#[tokio::test]
async fn head_is_no_route_and_every_error_is_json() {
    let (server, _dir) = start(&[]);
    let client = reqwest::Client::new();
    for path in ["/health", "/kv/keys/a", "/openapi.json", "/kv/ws"] {
        let r = client.head(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "HEAD {path}");
    }
    let r = client.get(server.url("/kv/ws")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "GET /kv/ws without an upgrade"
    );
    assert_eq!(error_code(r).await, (400, "not_a_websocket".into()));
}

/// Wrong tokens from one address are slowed, whatever the number of connections: of a flood at once, what
/// would wait its turn too long is refused unchecked (`429 too_many_auth_failures` over HTTP; over TCP the
/// `AUTH` is answered so and the connection closed), and the failures are counted.
#[tokio::test]
async fn guessing_the_token_is_slowed_per_address_and_counted() {
    let (server, _dir) = start(&["--auth-token", TOKEN]);
    let client = reqwest::Client::new();
    let guesses = (0..40).map(|n| {
        client
            .get(server.url("/health"))
            .header("authorization", format!("Bearer guess-guess-guess-{n}"))
            .send()
    });
    let mut codes = std::collections::BTreeMap::<(u16, String), usize>::new();
    for answer in futures_util::future::join_all(guesses).await {
        *codes.entry(error_code(answer.unwrap()).await).or_default() += 1;
    }
    assert!(
        codes.contains_key(&(429, "too_many_auth_failures".to_owned())),
        "a flood of guesses at once is not slowed: {codes:?}"
    );
    assert!(
        codes
            .get(&(401, "unauthorized".to_owned()))
            .copied()
            .unwrap_or(0)
            >= 10,
        "{codes:?}"
    );
    // Over TCP, reconnecting for each guess does not help either.
    let attempts = (0..30).map(|_| async {
        let mut line = tokio::net::TcpStream::connect(("127.0.0.1", server.line_port))
            .await
            .unwrap();
        line.write_all(b"AUTH guess-guess-guess-guess\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(20), line.read(&mut buffer))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    });
    let answers = futures_util::future::join_all(attempts).await;
    assert!(
        answers
            .iter()
            .any(|a| a.contains("Too many wrong tokens from this address")),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|a| a.contains("Authentication failed: wrong token")),
        "{answers:?}"
    );
    // The right token gets in once the address has waited its turn.
    let metrics = loop {
        let r = client
            .get(server.url("/metrics"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        if r.status() != 429 {
            break r;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    let count = |listener: &str, outcome: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("strata_auth_failures_total")
                    && l.contains(&format!("listener=\"{listener}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("http", "wrong") >= 10.0, "{text}");
    assert!(count("http", "refused") >= 1.0, "{text}");
    assert!(count("line", "wrong") >= 1.0, "{text}");
    assert!(count("line", "refused") >= 1.0, "{text}");
}
