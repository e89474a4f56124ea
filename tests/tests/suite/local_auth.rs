//! `strata serve --auth-token TOKEN` (README "Securing the local server"): every HTTP route, `/metrics`,
//! `/openapi.json`, the fallback and the `/kv/ws` upgrade answer `401` JSON without the bearer token or
//! with a wrong one, and run nothing; with it they answer as usual. The line protocol over TCP refuses
//! every command before `AUTH <token>`, and closes after three wrong tokens. One scenario per service runs
//! through the protected server (the whole contract suite also runs behind the same token check
//! in-process: `authenticated::*` of every `contract!`).

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use strata_tests::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "local-auth-test-token-5f1d3c";

fn protected() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &["--auth-token", TOKEN]);
    (server, dir)
}

/// Every route of the API with its parameters filled in, the local extras, and a path no route matches.
fn every_route() -> Vec<(http::Method, String)> {
    let mut routes: Vec<(http::Method, String)> = strata::routes::all()
        .into_iter()
        .map(|r| {
            let path = r
                .path
                .split('/')
                .map(|s| if s.starts_with('{') { "p1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            (r.method.parse().unwrap(), path)
        })
        .collect();
    for path in ["/metrics", "/openapi.json", "/kv/ws", "/no/such/route"] {
        routes.push((http::Method::GET, path.to_owned()));
    }
    // A known path with a method it does not have (the fallback answers it).
    routes.push((http::Method::PATCH, "/health".to_owned()));
    routes
}

async fn assert_refused(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 401, "{what}");
    let headers = response.headers().clone();
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "{what}: {headers:?}"
    );
    assert!(headers.contains_key("x-request-id"), "{what}: {headers:?}");
    assert_eq!(headers["content-type"], "application/json", "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_token_and_serves_the_right_one() {
    let (server, _dir) = protected();
    let client = reqwest::Client::new();
    let wrong = [
        None,
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some("Bearer ".to_owned()),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ];
    for (method, path) in every_route() {
        let request = || {
            let mut request = client.request(method.clone(), server.url(&path));
            if method == http::Method::POST || method == http::Method::PUT {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            request
        };
        for authorization in &wrong {
            let mut attempt = request();
            if let Some(value) = authorization {
                attempt = attempt.header("authorization", value);
            }
            assert_refused(
                attempt.send().await.unwrap(),
                &format!("{method} {path} with {authorization:?}"),
            )
            .await;
        }
        let answer = request()
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert_ne!(status, 401, "{method} {path} with the token: {body}");
        assert!(
            !body.contains(r#""code":"unauthorized""#),
            "{method} {path}: {body}"
        );
    }
    // The scheme is case-insensitive, as HTTP has it.
    let r = client
        .get(server.url("/health"))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_refused_request_runs_nothing_and_is_counted() {
    let (server, _dir) = protected();
    let client = reqwest::Client::new();
    let auth = format!("Bearer {TOKEN}");
    for _ in 0..3 {
        let r = client
            .put(server.url("/kv/keys/stranger"))
            .body(r#"{"value": "was here"}"#)
            .send()
            .await
            .unwrap();
        assert_refused(r, "PUT without the token").await;
    }
    let r = client
        .post(server.url("/certificates"))
        .header("authorization", "Bearer guess")
        .body(r#"{"name": "Mallory", "amount": 10, "class": "CS"}"#)
        .send()
        .await
        .unwrap();
    assert_refused(r, "POST /certificates with a wrong token").await;
    let r = client
        .post(server.url("/kv/commands"))
        .header("content-type", "text/plain")
        .body("PUT stranger 1\n")
        .send()
        .await
        .unwrap();
    assert_refused(r, "POST /kv/commands without the token").await;
    let r = client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_refused(r, "the fallback").await;

    let r = client
        .get(server.url("/kv/keys/stranger"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing was written");
    let r: Value = client
        .get(server.url("/share-classes/CS"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["issued"], 0, "no certificate was issued: {r}");

    let metrics = client
        .get(server.url("/metrics"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |operation: &str| -> f64 {
        let wanted: HashMap<&str, String> = [
            ("operation", operation.to_owned()),
            ("status", "401".to_owned()),
            ("code", "unauthorized".to_owned()),
        ]
        .into();
        metrics
            .lines()
            .filter(|l| l.starts_with("strata_requests_total{"))
            .filter(|l| {
                wanted
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(count("kv-put"), 3.0, "{metrics}");
    assert_eq!(count("certificates-issue"), 1.0, "{metrics}");
    assert_eq!(count("kv-commands"), 1.0, "{metrics}");
    assert_eq!(count(strata::routes::FALLBACK.function), 1.0, "{metrics}");
}

/// One line-protocol connection over TCP.
struct Line {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Line {
    async fn connect(server: &Server) -> Self {
        let (read, writer) = tokio::net::TcpStream::connect(("127.0.0.1", server.line_port))
            .await
            .unwrap()
            .into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }

    /// The next reply line, or `None` once the server closed the connection.
    async fn reply(&mut self) -> Option<String> {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
            .await
            .expect("a reply or the end")
            .unwrap();
        (read > 0).then_some(line)
    }

    async fn call(&mut self, command: &str) -> String {
        self.send(&format!("{command}\n")).await;
        self.reply().await.expect("a reply")
    }
}

const OK: &str = "{\"status\": \"Ok\"}\n";
const REQUIRED: &str =
    "{\"status\": \"Error\", \"mesg\": \"Authentication required: send AUTH <token> first\"}\n";
const WRONG: &str = "{\"status\": \"Error\", \"mesg\": \"Authentication failed: wrong token\"}\n";

#[tokio::test]
async fn the_line_protocol_refuses_every_command_before_auth() {
    let (server, _dir) = protected();
    // The third command that is not AUTH closes the connection.
    for commands in [["START", "COMMIT", "DEL a"], ["FROB", "GET a", "PUT x 1"]] {
        let mut c = Line::connect(&server).await;
        for command in &commands[..2] {
            assert_eq!(c.call(command).await, REQUIRED, "{command}");
        }
        assert_eq!(
            c.call(commands[2]).await,
            "{\"status\": \"Error\", \"mesg\": \"Authentication required: send AUTH <token> first; closing the connection\"}\n"
        );
        assert_eq!(c.reply().await, None, "closed");
    }
    let mut c = Line::connect(&server).await;
    assert_eq!(c.call("PUT early 1").await, REQUIRED);
    assert_eq!(c.call("AUTH nope").await, WRONG);
    assert_eq!(c.call("GET a").await, REQUIRED, "still not authenticated");
    assert_eq!(c.call(&format!("AUTH {TOKEN}")).await, OK);
    assert_eq!(
        c.call("GET early").await,
        "{\"status\": \"Error\", \"mesg\": \"Key not found!\"}\n",
        "the PUT before AUTH wrote nothing"
    );
    assert_eq!(c.call("PUT a 3 * 3 = 9").await, OK);
    assert_eq!(
        c.call("GET a").await,
        "{\"status\": \"Ok\", \"result\": \"3 * 3 = 9\"}\n"
    );

    // Pipelined: AUTH and the commands behind it in one write, answered in order.
    let mut c = Line::connect(&server).await;
    c.send(&format!(
        "GET a\r\nauth {TOKEN}\r\nSTART\nPUT b 1\nCOMMIT\nGET b\n"
    ))
    .await;
    let mut replies = String::new();
    for _ in 0..6 {
        replies.push_str(&c.reply().await.unwrap());
    }
    let expected = [
        REQUIRED,
        OK,
        OK,
        OK,
        OK,
        "{\"status\": \"Ok\", \"result\": \"1\"}\n",
    ]
    .concat();
    assert_eq!(replies, expected);
}

#[tokio::test]
async fn three_wrong_tokens_close_the_line_connection() {
    let (server, _dir) = protected();
    let mut c = Line::connect(&server).await;
    assert_eq!(c.call("AUTH").await, {
        "{\"status\": \"Error\", \"mesg\": \"Usage: AUTH token\"}\n"
    });
    assert_eq!(c.call("AUTH one").await, WRONG);
    assert_eq!(c.call(&format!("AUTH {TOKEN}x")).await, WRONG);
    assert_eq!(
        c.call("AUTH three").await,
        "{\"status\": \"Error\", \"mesg\": \"Authentication failed 3 times; closing the connection\"}\n"
    );
    assert_eq!(c.reply().await, None, "the server closed the connection");
    // Another connection starts over.
    let mut c = Line::connect(&server).await;
    assert_eq!(c.call(&format!("AUTH {TOKEN}")).await, OK);
}

#[tokio::test]
async fn the_websocket_upgrade_needs_the_bearer_token() {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
    let (server, _dir) = protected();
    let url = server.base.replace("http://", "ws://") + "/kv/ws";
    for authorization in [None, Some("Bearer wrong")] {
        let mut request = url.as_str().into_client_request().unwrap();
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert("authorization", value.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{authorization:?}");
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap())
                    .expect("the error JSON");
                assert_eq!(body["error"]["code"], "unauthorized");
            }
            other => panic!("{authorization:?}: the upgrade was not refused: {other:?}"),
        }
    }
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut call = async |command: &str| {
        ws.send(tungstenite::Message::text(command)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .to_string()
    };
    // Authenticated by the upgrade: commands run at once; AUTH checks the same token.
    assert_eq!(call("PUT w 1").await, OK.trim_end());
    assert_eq!(call(&format!("AUTH {TOKEN}")).await, OK.trim_end());
    assert_eq!(call("AUTH wrong").await, WRONG.trim_end());
    assert_eq!(
        call("GET w").await,
        "{\"status\": \"Ok\", \"result\": \"1\"}"
    );
}

/// An authenticated client against the real protected server.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {TOKEN}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }
}

#[tokio::test]
async fn one_scenario_per_service_through_the_protected_server() {
    let (server, _dir) = protected();
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };
    // kv: single keys, a transaction, the line protocol over HTTP.
    let (s, b) = c
        .call("PUT", "/kv/keys/greeting", Some(json!({"value": "hi"})))
        .await;
    assert_eq!(
        (s, b),
        (200, json!({"key": "greeting", "value": "hi", "version": 1}))
    );
    let (s, b) = c.call("POST", "/kv/transactions", Some(json!({}))).await;
    assert_eq!(s, 201, "{b}");
    let tx = b["id"].as_str().unwrap().to_owned();
    let (s, _) = c
        .call(
            "PUT",
            &format!("/kv/transactions/{tx}/keys/balance"),
            Some(json!({"value": "100"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = c
        .call("POST", &format!("/kv/transactions/{tx}/commit"), None)
        .await;
    assert_eq!((s, &b["committed"]), (200, &json!(true)), "{b}");
    let (_, b) = c.call("GET", "/kv/keys/balance", None).await;
    assert_eq!(b["value"], "100");
    let r = c
        .http
        .post(format!("{}/kv/commands", c.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "text/plain")
        .body("GET balance\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"status\": \"Ok\", \"result\": \"100\"}\n"
    );

    // certificates: gapless numbers, idempotent issue.
    let issue = json!({"name": "Salt Bae", "amount": 10, "class": "CS"});
    let (s, first) = c.call("POST", "/certificates", Some(issue.clone())).await;
    assert_eq!((s, &first["id"]), (201, &json!("CS-1")), "{first}");
    let (s, second) = c.call("POST", "/certificates", Some(issue)).await;
    assert_eq!((s, &second["id"]), (201, &json!("CS-2")), "{second}");
    let (_, class) = c.call("GET", "/share-classes/CS", None).await;
    assert_eq!(class["issued"], 20, "{class}");

    // widgets: a pair of slots claimed, and released.
    for (serial, ports) in [("A", json!(["P", "R"])), ("B", json!(["P"]))] {
        let (s, b) = c
            .call(
                "POST",
                "/widgets",
                Some(json!({"serial_number": serial, "name": serial, "ports": ports})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = c
        .call(
            "POST",
            "/widgets/A/associations",
            Some(json!({"peer": "B", "port": "P"})),
        )
        .await;
    assert!((200..300).contains(&s), "{s} {b}");
    let (_, a) = c.call("GET", "/widgets/A", None).await;
    assert_eq!(a["free"], json!({"P": 0, "R": 1, "Q": 0}), "{a}");
    let (s, _) = c.call("DELETE", "/widgets/A/associations/P/B", None).await;
    assert_eq!(s, 204);

    // counters: exact totals.
    for value in [20, 22] {
        let (s, b) = c
            .call(
                "POST",
                "/increment",
                Some(json!({"key": "hello world", "value": value})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (_, b) = c.call("GET", "/increment/hello%20world", None).await;
    assert_eq!(b, json!({"hello world": 42}));
}

#[tokio::test]
async fn the_token_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        crate::STRATA,
        dir.path(),
        &[],
        &[("STRATA_AUTH_TOKEN".to_owned(), TOKEN.to_owned())],
    );
    let client = reqwest::Client::new();
    let r = client.get(server.url("/health")).send().await.unwrap();
    assert_refused(r, "GET /health without the token").await;
    let r = client
        .get(server.url("/health"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut c = Line::connect(&server).await;
    assert_eq!(c.call("GET a").await, REQUIRED);
    assert_eq!(c.call(&format!("AUTH {TOKEN}")).await, OK);
}

#[tokio::test]
async fn without_a_token_nothing_is_required_and_auth_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &[]);
    let r = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    let mut c = Line::connect(&server).await;
    assert_eq!(
        c.call("AUTH anything").await,
        "{\"status\": \"Error\", \"mesg\": \"No authentication is configured on this server (strata serve --auth-token)\"}\n"
    );
    assert_eq!(c.call("PUT a 1").await, OK);
}

/// The warning comes first at start, before the store opens: here the data directory cannot be created,
/// so the server stops before it binds anything (no listener beyond loopback is ever opened).
#[test]
fn listening_beyond_loopback_without_a_token_is_warned_about() {
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(crate::STRATA)
            .args(["serve", "--listen", "0.0.0.0:0", "--line-listen"])
            .arg("127.0.0.1:0")
            .args(["--data-dir", "/dev/null/strata-data"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("STRATA_AUTH_TOKEN")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "the data directory is impossible");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        text
    };
    let warned = run(&[]);
    assert!(
        warned.contains("WARN")
            && warned.contains("HTTP on 0.0.0.0:0")
            && warned.contains("without --auth-token"),
        "{warned}"
    );
    assert!(!warned.contains("line protocol on"), "{warned}");
    let quiet = run(&["--auth-token", TOKEN]);
    assert!(!quiet.contains("without --auth-token"), "{quiet}");
    // Refused at start: a token under 16 characters is easy to guess.
    let short = run(&["--auth-token", "fifteen-chars-x"]);
    assert!(short.contains("16 to 4096 characters, not 15"), "{short}");
    let bad = run(&["--auth-token", "two words of a longer token"]);
    assert!(bad.contains("visible ASCII"), "{bad}");
}
