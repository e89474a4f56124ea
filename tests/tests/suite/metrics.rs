//! Observability of the real `strata serve` process: the request metrics at `GET /metrics` move by exactly
//! the requests made (domain refusals and the rate limiter's 429s included), every response carries an
//! `x-request-id`, and JSON log lines name the request they belong to.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata_tests::server::{Server, free_port};

/// One series: metric name and its labels.
type Series = (String, BTreeMap<String, String>);

/// Parses Prometheus text (what strata writes: no escaped quotes or commas inside label values).
fn parse(text: &str) -> HashMap<Series, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("label=value");
                let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                (
                    key.to_owned(),
                    value.expect("quoted label value").to_owned(),
                )
            })
            .collect();
        assert!(
            samples.insert((name.to_owned(), labels), value).is_none(),
            "duplicate series: {line}"
        );
    }
    samples
}

async fn scrape(client: &reqwest::Client, server: &Server) -> HashMap<Series, f64> {
    let r = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        r.headers()
    );
    parse(&r.text().await.unwrap())
}

fn series(name: &str, operation: &str, status: u16, code: &str) -> Series {
    let labels = [
        ("operation", operation.to_owned()),
        ("status", status.to_string()),
        ("code", code.to_owned()),
    ];
    (
        name.to_owned(),
        labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    )
}

/// What moved between two scrapes, for the series named `prefix...`.
fn moved(
    before: &HashMap<Series, f64>,
    after: &HashMap<Series, f64>,
    names: &[&str],
) -> BTreeMap<Series, f64> {
    after
        .iter()
        .filter(|((name, _), _)| names.contains(&name.as_str()))
        .map(|(series, value)| (series.clone(), value - before.get(series).unwrap_or(&0.0)))
        .filter(|(_, delta)| *delta != 0.0)
        .collect()
}

/// Sends a request and checks its status and error code.
async fn expect(request: reqwest::RequestBuilder, status: u16, code: Option<&str>) -> Value {
    let r = request.send().await.unwrap();
    let got = r.status().as_u16();
    assert!(
        r.headers().contains_key("x-request-id"),
        "no x-request-id: {:?}",
        r.headers()
    );
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    if let Some(code) = code {
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_answer_by_operation_status_and_code() {
    let dir = tempfile::tempdir().unwrap();
    // Four requests per route and client, then 429 (the test runs far faster than the refill).
    let server = Server::start(crate::STRATA, dir.path(), &["--rate-limit", "4/600"]);
    let client = reqwest::Client::new();
    let url = |path: &str| server.url(path);

    // Something recorded before the first scrape, so the deltas below start from existing series too.
    expect(client.get(url("/health")), 200, None).await;
    let before = scrape(&client, &server).await;
    assert_eq!(
        before.get(&series("strata_requests_total", "health", 200, "none")),
        Some(&1.0),
        "{before:?}"
    );

    // Certificates: one issue refused for want of shares, one issued.
    expect(
        client
            .put(url("/share-classes/OBS"))
            .json(&json!({"authorized": 10})),
        200,
        None,
    )
    .await;
    let issue = |amount: u64| {
        client
            .post(url("/certificates"))
            .json(&json!({"name": "Ada", "amount": amount, "class": "OBS"}))
    };
    expect(issue(20), 409, Some("insufficient_shares")).await;
    expect(issue(5), 201, None).await;

    // Widgets: three created, a duplicate refused, one association, one refused for want of a slot.
    for serial in ["w1", "w2", "w3"] {
        let widget = json!({"serial_number": serial, "name": "n", "ports": ["P"]});
        expect(client.post(url("/widgets")).json(&widget), 201, None).await;
    }
    let duplicate = json!({"serial_number": "w1", "name": "n", "ports": ["P"]});
    expect(
        client.post(url("/widgets")).json(&duplicate),
        409,
        Some("duplicate_serial_number"),
    )
    .await;
    let associate = |peer: &str| {
        client
            .post(url("/widgets/w1/associations"))
            .json(&json!({"peer": peer, "port": "P"}))
    };
    expect(associate("w2"), 201, None).await;
    expect(associate("w3"), 409, Some("no_free_slot")).await;

    // Key/value: a transaction reads a key someone else then writes; its commit is a conflict.
    let tx = expect(
        client.post(url("/kv/transactions")).json(&json!({})),
        201,
        None,
    )
    .await;
    let tx = tx["id"].as_str().unwrap().to_owned();
    expect(
        client.get(url(&format!("/kv/transactions/{tx}/keys/c"))),
        404,
        Some("key_not_found"),
    )
    .await;
    expect(
        client
            .put(url("/kv/keys/c"))
            .json(&json!({"value": "first"})),
        200,
        None,
    )
    .await;
    expect(
        client
            .put(url(&format!("/kv/transactions/{tx}/keys/d")))
            .json(&json!({"value": "v"})),
        200,
        None,
    )
    .await;
    expect(
        client.post(url(&format!("/kv/transactions/{tx}/commit"))),
        409,
        Some("conflict"),
    )
    .await;

    // The rate limiter: four reads answered, the fifth refused before any handler runs.
    for _ in 0..4 {
        expect(
            client.get(url("/kv/keys/absent")),
            404,
            Some("key_not_found"),
        )
        .await;
    }
    expect(
        client.get(url("/kv/keys/absent")),
        429,
        Some("rate_limited"),
    )
    .await;
    // A path no route matches.
    expect(client.get(url("/nowhere")), 404, Some("route_not_found")).await;
    // Refused before any handler runs, as a web page's requests are: counted under their operation.
    expect(
        client
            .get(url("/kv/keys/absent"))
            .header("origin", "https://elsewhere.example"),
        403,
        Some("origin_not_allowed"),
    )
    .await;
    expect(
        client
            .post(url("/widgets"))
            .header("content-type", "text/plain")
            .body("{}"),
        415,
        Some("unsupported_media_type"),
    )
    .await;
    expect(client.head(url("/health")), 404, None).await;

    let after = scrape(&client, &server).await;
    let counters = [
        "strata_requests_total",
        "strata_conflicts_total",
        "strata_insufficient_shares_total",
        "strata_slot_refusals_total",
        "strata_throttles_total",
    ];
    let expected: BTreeMap<Series, f64> = [
        (
            "strata_requests_total",
            "share-classes-put",
            200,
            "none",
            1.0,
        ),
        (
            "strata_requests_total",
            "certificates-issue",
            409,
            "insufficient_shares",
            1.0,
        ),
        (
            "strata_conflicts_total",
            "certificates-issue",
            409,
            "insufficient_shares",
            1.0,
        ),
        (
            "strata_insufficient_shares_total",
            "certificates-issue",
            409,
            "insufficient_shares",
            1.0,
        ),
        (
            "strata_requests_total",
            "certificates-issue",
            201,
            "none",
            1.0,
        ),
        ("strata_requests_total", "widgets-create", 201, "none", 3.0),
        (
            "strata_requests_total",
            "widgets-create",
            409,
            "duplicate_serial_number",
            1.0,
        ),
        (
            "strata_conflicts_total",
            "widgets-create",
            409,
            "duplicate_serial_number",
            1.0,
        ),
        (
            "strata_requests_total",
            "widgets-associate",
            201,
            "none",
            1.0,
        ),
        (
            "strata_requests_total",
            "widgets-associate",
            409,
            "no_free_slot",
            1.0,
        ),
        (
            "strata_conflicts_total",
            "widgets-associate",
            409,
            "no_free_slot",
            1.0,
        ),
        (
            "strata_slot_refusals_total",
            "widgets-associate",
            409,
            "no_free_slot",
            1.0,
        ),
        ("strata_requests_total", "kv-tx-begin", 201, "none", 1.0),
        (
            "strata_requests_total",
            "kv-tx-get",
            404,
            "key_not_found",
            1.0,
        ),
        ("strata_requests_total", "kv-put", 200, "none", 1.0),
        ("strata_requests_total", "kv-tx-put", 200, "none", 1.0),
        (
            "strata_requests_total",
            "kv-tx-commit",
            409,
            "conflict",
            1.0,
        ),
        (
            "strata_conflicts_total",
            "kv-tx-commit",
            409,
            "conflict",
            1.0,
        ),
        ("strata_requests_total", "kv-get", 404, "key_not_found", 4.0),
        ("strata_requests_total", "kv-get", 429, "rate_limited", 1.0),
        ("strata_throttles_total", "kv-get", 429, "rate_limited", 1.0),
        (
            "strata_requests_total",
            "not-found",
            404,
            "route_not_found",
            2.0,
        ),
        (
            "strata_requests_total",
            "kv-get",
            403,
            "origin_not_allowed",
            1.0,
        ),
        (
            "strata_requests_total",
            "widgets-create",
            415,
            "unsupported_media_type",
            1.0,
        ),
    ]
    .into_iter()
    .map(|(name, operation, status, code, delta)| (series(name, operation, status, code), delta))
    .collect();
    // Exactly these moved, by exactly these amounts: nothing else (not the scrapes themselves) counts.
    assert_eq!(moved(&before, &after, &counters), expected);

    // One latency observation per answer, in seconds, in the same series.
    let requests = moved(&before, &after, &["strata_requests_total"]);
    let durations: BTreeMap<Series, f64> =
        moved(&before, &after, &["strata_request_duration_seconds_count"])
            .into_iter()
            .map(|((_, labels), delta)| (("strata_requests_total".to_owned(), labels), delta))
            .collect();
    assert_eq!(durations, requests);
    let sum = |s: &Series| after[s] - before.get(s).unwrap_or(&0.0);
    let commit_seconds = sum(&series(
        "strata_request_duration_seconds_sum",
        "kv-tx-commit",
        409,
        "conflict",
    ));
    assert!(
        commit_seconds > 0.0 && commit_seconds < 10.0,
        "{commit_seconds}"
    );
    // Real histogram buckets, not a summary.
    let mut inf = series(
        "strata_request_duration_seconds_bucket",
        "kv-get",
        404,
        "key_not_found",
    );
    inf.1.insert("le".to_owned(), "+Inf".to_owned());
    assert_eq!(after.get(&inf), Some(&4.0));
}

/// The process reports its own CPU time (what `strata bench` turns into CPU per operation), memory and
/// threads; the CPU time grows with the work done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_reports_its_cpu_time_memory_and_threads() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, data.path(), &[]);
    let client = reqwest::Client::new();
    let cpu = |samples: &HashMap<Series, f64>| {
        samples[&("process_cpu_seconds_total".to_owned(), BTreeMap::new())]
    };
    let before = scrape(&client, &server).await;
    for name in [
        "process_resident_memory_bytes",
        "process_threads",
        "process_open_fds",
    ] {
        let value = before[&(name.to_owned(), BTreeMap::new())];
        assert!(value > 0.0, "{name} {value}");
    }
    // Enough requests to cost well over the 10 ms resolution of the kernel's CPU accounting.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let r = client.get(server.url("/health")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let after = scrape(&client, &server).await;
    assert!(
        cpu(&after) > cpu(&before) + 0.01,
        "process_cpu_seconds_total {} → {}",
        cpu(&before),
        cpu(&after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_and_name_the_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (port, line_port) = (free_port(), free_port());
    let log = dir.path().join("strata.log");
    let mut child = Command::new(crate::STRATA)
        .args(["--log-format", "json", "serve"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--line-listen", &format!("127.0.0.1:{line_port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        // One line per answered request comes at debug.
        .env("RUST_LOG", "warn,strata::requests=debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "strata did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = reqwest::Client::new();

    // A request without an id gets a fresh one; two requests never share one.
    let ids: Vec<String> = futures_util::future::join_all((0..2).map(|_| async {
        let r = client.get(format!("{base}/health")).send().await.unwrap();
        r.headers()["x-request-id"].to_str().unwrap().to_owned()
    }))
    .await;
    assert_ne!(ids[0], ids[1]);
    assert!(ids.iter().all(|id| id.len() > 16), "{ids:?}");
    // A client's own id is kept and echoed.
    let r = client
        .get(format!("{base}/kv/keys/nothing-here"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    for id in ids.iter().map(String::as_str).chain(["trace-me-42"]) {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|line| line["span"]["request_id"] == id)
            .collect();
        assert_eq!(mine.len(), 1, "one line for request {id}:\n{text}");
        assert_eq!(mine[0]["span"]["name"], "request");
    }
    let traced = lines
        .iter()
        .find(|line| line["span"]["request_id"] == "trace-me-42")
        .unwrap();
    assert_eq!(
        (
            &traced["span"]["method"],
            &traced["span"]["path"],
            &traced["fields"]["status"]
        ),
        (&json!("GET"), &json!("/kv/keys/nothing-here"), &json!(404))
    );
}

/// What a Lambda Runtime API stand-in saw: each invocation's answer, by request id.
#[derive(Default)]
struct Runtime {
    answers: std::sync::Mutex<Vec<(String, Value)>>,
    answered: tokio::sync::Notify,
}

/// Serves `events` (request id, API Gateway event) to the Lambda that polls it, one per `next`, then keeps
/// the next poll waiting, as Lambda does between invocations.
async fn runtime_api(events: Vec<(String, String)>) -> (String, std::sync::Arc<Runtime>) {
    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    type Shared = (
        std::sync::Arc<Runtime>,
        std::sync::Arc<tokio::sync::Mutex<std::vec::IntoIter<(String, String)>>>,
    );
    async fn next(State((_, events)): State<Shared>) -> axum::response::Response {
        let event = events.lock().await.next();
        let Some((id, body)) = event else {
            std::future::pending::<()>().await;
            unreachable!()
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 30_000;
        axum::response::Response::builder()
            .header("lambda-runtime-aws-request-id", id)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:strata-KvGet",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            )
            .body(axum::body::Body::from(body))
            .unwrap()
    }
    async fn answer(
        State((runtime, _)): State<Shared>,
        Path((id, _kind)): Path<(String, String)>,
        body: String,
    ) -> http::StatusCode {
        let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
        runtime.answers.lock().unwrap().push((id, body));
        runtime.answered.notify_one();
        http::StatusCode::ACCEPTED
    }
    let runtime = std::sync::Arc::new(Runtime::default());
    let shared: Shared = (
        runtime.clone(),
        std::sync::Arc::new(tokio::sync::Mutex::new(events.into_iter())),
    );
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_writes_one_emf_line_per_invocation_and_its_request_id_on_every_log_line() {
    let event = strata_tests::events::text("kv-get");
    let ids = ["invocation-1", "invocation-2"];
    let (api, runtime) = runtime_api(
        ids.iter()
            .map(|id| (id.to_string(), event.clone()))
            .collect(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let stdout = dir.path().join("stdout");
    let mut lambda = Command::new(env!("CARGO_BIN_EXE_lambda-under-test"));
    for table in strata::template::Template::load().tables() {
        lambda.env(&table.env_var, format!("obs-{}", table.logical_id));
    }
    // DynamoDB nowhere: every read fails as unavailable, which the handler logs (a warning) and answers 503.
    let mut child = lambda
        .env("_HANDLER", "kv-get")
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "strata-KvGet")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        // Warnings only: the invocation's span must still be there.
        .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
        .env_remove("RUST_LOG")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .spawn()
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while runtime.answers.lock().unwrap().len() < ids.len() {
            runtime.answered.notified().await;
        }
    })
    .await;
    let _ = child.kill();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&stdout).unwrap();
    assert!(
        waited.is_ok(),
        "the Lambda did not answer both invocations:\n{text}"
    );
    for (id, answer) in runtime.answers.lock().unwrap().iter() {
        assert_eq!(answer["statusCode"], 503, "{id}: {answer}");
    }

    let lines: Vec<Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}\n{text}"))
        })
        .collect();
    for id in ids {
        // Its metrics: one EMF line.
        let emf: Vec<&Value> = lines
            .iter()
            .filter(|line| line.get("_aws").is_some() && line["requestId"] == id)
            .collect();
        assert_eq!(emf.len(), 1, "{id}:\n{text}");
        let emf = emf[0];
        let directive = &emf["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "strata");
        assert_eq!(
            (&emf["operation"], &emf["status"], &emf["code"]),
            (
                &json!("strata-KvGet"),
                &json!("503"),
                &json!("store_unavailable")
            ),
            "{emf}"
        );
        assert_eq!(emf["strata_requests_total"], 1, "{emf}");
        assert_eq!(
            emf["strata_request_duration_seconds"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Its log lines (the store's warnings): each names it.
        let logs: Vec<&Value> = lines
            .iter()
            .filter(|line| line.get("_aws").is_none() && line["span"]["requestId"] == id)
            .collect();
        assert!(
            logs.iter().any(|line| line["level"] == "WARN"),
            "no warning logged for {id}:\n{text}"
        );
    }
    // Nothing logged while serving escapes its request.
    for line in lines.iter().filter(|line| line.get("_aws").is_none()) {
        if line["level"] == "WARN" || line["level"] == "ERROR" {
            assert!(
                ids.contains(&line["span"]["requestId"].as_str().unwrap_or("")),
                "a line without its request id: {line}"
            );
        }
    }
}
