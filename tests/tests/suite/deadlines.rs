//! Deadlines against a slow DynamoDB: the fault proxy in front of DynamoDB Local holds every call for 10 s
//! (longer than any deadline here), and the host must still get the contract's `503 store_unavailable` with
//! `retry-after` in time.
//!
//! - The real Lambda binary (`functions/api/src/main.rs`, built as `lambda-under-test`) serving `kv-put`
//!   (`_HANDLER`, as the template sets it) under a minimal Lambda Runtime API: the invocation's deadline
//!   (`Lambda-Runtime-Deadline-Ms`) is 3 s ahead, and the function must post its answer before it. And
//!   deadlines that cannot be the invocation's (a duration, as `cargo lambda watch` sends, an epoch long past
//!   or decades ahead, `0`): the function serves with its own budget and warns once.
//! - The real `strata serve --store dynamodb`: a request answers within its budget
//!   (`strata_http::REQUEST_BUDGET`), not later.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_tests::fault_proxy::{FaultConfig, FaultProxy};
use strata_tests::server::Server;
use tokio::sync::{mpsc, oneshot};

/// Longer than every deadline here: a call held this long never answers in time.
const SLOW: Duration = Duration::from_secs(10);

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// What `next` sends as an invocation's `Lambda-Runtime-Deadline-Ms`.
enum Deadline {
    /// As Lambda does: the function's timeout after `next` hands the event over, in milliseconds since the
    /// Unix epoch.
    After(Duration),
    /// This value as it is, as emulators have sent (a duration, an epoch long past or far ahead).
    Header(String),
}

/// One invocation handed to the function.
struct Invocation {
    id: String,
    event: String,
    deadline: Deadline,
}

/// What the function posted for an invocation.
#[derive(Debug)]
struct Answer {
    /// `response` or `error`.
    kind: String,
    body: Value,
    /// The invocation's deadline, as sent in `Lambda-Runtime-Deadline-Ms` (0 when that was not a number).
    deadline_ms: u64,
    /// When the answer arrived (milliseconds since the Unix epoch).
    at_ms: u64,
    /// From handing the event over to the answer.
    took: Duration,
}

#[derive(Default)]
struct Emulated {
    /// Per request id: its deadline and when its event was handed over.
    handed: Mutex<HashMap<String, (u64, Instant)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    init_error: Mutex<Option<String>>,
    /// `next` calls so far: the first one ends the function's init.
    polls: std::sync::atomic::AtomicU64,
}

type Shared = (
    Arc<Emulated>,
    Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>>,
);

/// A minimal Lambda Runtime API (`/2018-06-01/runtime/...`): `next` hands over the invocations queued by
/// [`RuntimeApi::invoke`], one at a time, with the headers Lambda sends (request id, deadline, function
/// ARN, trace id), and keeps the poll waiting while none is queued; `response` and `error` are captured
/// with the time they arrived.
struct RuntimeApi {
    address: String,
    queue: mpsc::UnboundedSender<Invocation>,
    emulated: Arc<Emulated>,
}

impl RuntimeApi {
    async fn start() -> Self {
        async fn next(State((emulated, queue)): State<Shared>) -> axum::response::Response {
            emulated
                .polls
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Some(invocation) = queue.lock().await.recv().await else {
                std::future::pending::<()>().await;
                unreachable!()
            };
            let header = match invocation.deadline {
                Deadline::After(timeout) => epoch_ms(SystemTime::now() + timeout).to_string(),
                Deadline::Header(value) => value,
            };
            let deadline_ms = header.parse().unwrap_or(0);
            emulated
                .handed
                .lock()
                .unwrap()
                .insert(invocation.id.clone(), (deadline_ms, Instant::now()));
            axum::response::Response::builder()
                .header("lambda-runtime-aws-request-id", &invocation.id)
                .header("lambda-runtime-deadline-ms", header)
                .header(
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:strata-KvPut",
                )
                .header(
                    "lambda-runtime-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                )
                .header("content-type", "application/json")
                .body(axum::body::Body::from(invocation.event))
                .unwrap()
        }
        async fn answer(
            State((emulated, _)): State<Shared>,
            Path((id, kind)): Path<(String, String)>,
            body: String,
        ) -> http::StatusCode {
            let at_ms = epoch_ms(SystemTime::now());
            let Some((deadline_ms, handed)) = emulated.handed.lock().unwrap().get(&id).copied()
            else {
                return http::StatusCode::BAD_REQUEST;
            };
            let answer = Answer {
                kind,
                body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
                deadline_ms,
                at_ms,
                took: handed.elapsed(),
            };
            if let Some(waiting) = emulated.waiting.lock().unwrap().remove(&id) {
                let _ = waiting.send(answer);
            }
            http::StatusCode::ACCEPTED
        }
        async fn init_error(State((emulated, _)): State<Shared>, body: String) -> http::StatusCode {
            *emulated.init_error.lock().unwrap() = Some(body);
            http::StatusCode::ACCEPTED
        }
        let (queue, invocations) = mpsc::unbounded_channel();
        let emulated = Arc::new(Emulated::default());
        let shared: Shared = (
            emulated.clone(),
            Arc::new(tokio::sync::Mutex::new(invocations)),
        );
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            address,
            queue,
            emulated,
        }
    }

    /// Queues one invocation and waits for the function's answer (`None` if none came within `wait`).
    async fn invoke(
        &self,
        id: &str,
        event: &str,
        timeout: Duration,
        wait: Duration,
    ) -> Option<Answer> {
        self.invoke_with(id, event, Deadline::After(timeout), wait)
            .await
    }

    /// [`Self::invoke`] with the deadline header given.
    async fn invoke_with(
        &self,
        id: &str,
        event: &str,
        deadline: Deadline,
        wait: Duration,
    ) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        self.emulated
            .waiting
            .lock()
            .unwrap()
            .insert(id.to_owned(), tx);
        self.queue
            .send(Invocation {
                id: id.to_owned(),
                event: event.to_owned(),
                deadline,
            })
            .unwrap();
        tokio::time::timeout(wait, rx)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// Tables under a fresh prefix in the run's DynamoDB Local, named as `create_tables` names them
/// (`<prefix><LogicalId>`).
async fn fresh_prefix() -> String {
    let prefix = format!("dl{}-", uuid::Uuid::new_v4().simple());
    let client = strata::dynamodb_local::local_client(strata_tests::dynamodb::endpoint()).await;
    strata::dynamodb_local::create_tables(&client, &prefix)
        .await
        .expect("tables are created");
    prefix
}

/// The Lambda process; killed (by its own handle) when dropped.
struct Lambda {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Lambda {
    /// Starts `binary` with the template's environment (its `Globals`: the table names, as `<prefix><LogicalId>`,
    /// and the settings), the variables Lambda sets, and DynamoDB at `endpoint`.
    fn start(binary: &str, api: &str, prefix: &str, endpoint: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut command = Command::new(binary);
        for table in strata::template::Template::load().tables() {
            command.env(&table.env_var, format!("{prefix}{}", table.logical_id));
        }
        let child = command
            .env("COUNTER_MODE", "strong")
            .env("KV_TX_IDLE_TIMEOUT_SECONDS", "300")
            .env("DEFAULT_SHARE_CLASSES", "CS=2600000,PS=750000")
            .env("_HANDLER", "kv-put")
            .env("AWS_LAMBDA_RUNTIME_API", api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "strata-KvPut")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
            .env_remove("RUST_LOG")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", endpoint)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("the Lambda binary starts");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Lambda {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The contract's answer to a store that did not answer in time, as an API Gateway v2 response.
fn assert_store_unavailable(answer: &Value, what: &str) {
    assert_eq!(answer["statusCode"], 503, "{what}: {answer}");
    let headers = answer["headers"].as_object().expect("headers");
    let retry_after = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.clone());
    assert!(
        retry_after
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{what}: 503 without a retry-after of whole seconds: {answer}"
    );
    let body: Value =
        serde_json::from_str(answer["body"].as_str().expect("a text body")).expect("a JSON body");
    assert_eq!(body["error"]["code"], "store_unavailable", "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_answers_503_before_its_invocation_deadline_when_dynamodb_is_slow() {
    let started = Instant::now();
    let prefix = fresh_prefix().await;
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        7,
        FaultConfig::healthy(),
    )
    .await;
    let api = RuntimeApi::start().await;
    let lambda = Lambda::start(
        env!("CARGO_BIN_EXE_lambda-under-test"),
        &api.address,
        &prefix,
        &proxy.url,
    );
    let event = strata_tests::events::text("kv-put");
    // The template's function timeout for the healthy invocations; a short one for the slow one.
    let (template_timeout, timeout) = (Duration::from_secs(10), Duration::from_secs(3));

    // DynamoDB healthy: the event is stored, in time.
    let healthy = api
        .invoke(
            "healthy-1",
            &event,
            template_timeout,
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|| panic!("no answer to the first invocation:\n{}", lambda.log()));
    assert_eq!(healthy.kind, "response", "{healthy:?}\n{}", lambda.log());
    assert_eq!(
        healthy.body["statusCode"],
        200,
        "{healthy:?}\n{}",
        lambda.log()
    );
    assert!(healthy.at_ms < healthy.deadline_ms, "{healthy:?}");

    // Every DynamoDB call held for 10 s: the function gives up at its deadline less the answer margin and
    // answers the contract's 503 while the invocation is still running.
    proxy.set(FaultConfig::healthy().with_slow(SLOW, None));
    let slow = api
        .invoke("slow-1", &event, timeout, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no answer to the slow invocation:\n{}", lambda.log()));
    println!(
        "slow invocation answered {} ms before its deadline ({:?} after the event was handed over); proxy: {}",
        slow.deadline_ms as i64 - slow.at_ms as i64,
        slow.took,
        proxy.stats()
    );
    assert_eq!(slow.kind, "response", "{slow:?}\n{}", lambda.log());
    assert!(
        slow.at_ms < slow.deadline_ms,
        "the answer came {} ms after the invocation's deadline ({:?} after the event was handed over, \
         timeout {timeout:?})",
        slow.at_ms - slow.deadline_ms,
        slow.took
    );
    // It used its time: given up at the deadline less the margin, not at the first sign of trouble.
    let margin = strata_http::lambda::ANSWER_MARGIN;
    assert!(
        slow.took + Duration::from_millis(300) >= timeout - margin,
        "answered after only {:?}",
        slow.took
    );
    assert_store_unavailable(&slow.body, "the slow invocation");
    assert!(proxy.stats().slowed > 0, "{}", proxy.stats());

    // And it is still serving: the next invocation, with DynamoDB healthy again, is stored.
    proxy.set(FaultConfig::healthy());
    let after = api
        .invoke(
            "healthy-2",
            &event,
            template_timeout,
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|| panic!("no answer after the slow invocation:\n{}", lambda.log()));
    assert_eq!(after.body["statusCode"], 200, "{after:?}\n{}", lambda.log());
    assert!(
        api.emulated.init_error.lock().unwrap().is_none(),
        "{}",
        lambda.log()
    );
    println!("took {:.1} s", started.elapsed().as_secs_f64());
}

/// Deadlines that cannot be the invocation's, as emulators have sent them: `cargo lambda watch`'s duration
/// (`600000`, which read as an epoch lies in 1970), an epoch an hour past, one in 2072 (as SAM CLI once
/// sent), and `0`. The function answers with its own budget instead of giving up before calling DynamoDB,
/// and warns once per process, naming the first such value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_uses_its_own_budget_when_the_invocation_deadline_cannot_be_its_own() {
    let prefix = fresh_prefix().await;
    let api = RuntimeApi::start().await;
    let lambda = Lambda::start(
        env!("CARGO_BIN_EXE_lambda-under-test"),
        &api.address,
        &prefix,
        strata_tests::dynamodb::endpoint(),
    );
    let event = strata_tests::events::text("kv-put");
    let wait = Duration::from_secs(30);
    let deadline_warnings = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|line| line.contains("\"WARN\"") && line.contains("lambda-runtime-deadline-ms"))
            .map(str::to_owned)
            .collect()
    };

    // AWS's shape: trusted, no warning.
    let aws = api
        .invoke("aws", &event, Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|| panic!("no answer:\n{}", lambda.log()));
    assert_eq!(aws.body["statusCode"], 200, "{aws:?}\n{}", lambda.log());
    assert_eq!(deadline_warnings(&lambda.log()), Vec::<String>::new());

    let now = epoch_ms(SystemTime::now());
    let year_2072 = epoch_ms(UNIX_EPOCH + Duration::from_secs(3_221_225_472));
    for (what, header) in [
        ("duration", "600000".to_owned()),
        ("hour-past", (now - 3_600_000).to_string()),
        ("year-2072", year_2072.to_string()),
        ("zero", "0".to_owned()),
    ] {
        let answer = api
            .invoke_with(what, &event, Deadline::Header(header.clone()), wait)
            .await
            .unwrap_or_else(|| panic!("no answer to {what} ({header}):\n{}", lambda.log()));
        assert_eq!(answer.kind, "response", "{what}: {answer:?}");
        assert_eq!(
            answer.body["statusCode"],
            200,
            "deadline {header} ({what}): {answer:?}\n{}",
            lambda.log()
        );
    }
    let warnings = deadline_warnings(&lambda.log());
    assert_eq!(warnings.len(), 1, "one warning per process: {warnings:#?}");
    assert!(warnings[0].contains("600000"), "{warnings:?}");
    assert!(api.emulated.init_error.lock().unwrap().is_none());
}

/// The function opens its DynamoDB connection during init (one free `DescribeEndpoints`), so the first
/// request after a cold start does not pay the handshake; infra/scripts/cold-starts times it over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_calls_dynamodb_during_init_before_its_first_invocation() {
    let prefix = fresh_prefix().await;
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        7,
        FaultConfig::healthy(),
    )
    .await;
    let api = RuntimeApi::start().await;
    let lambda = Lambda::start(
        env!("CARGO_BIN_EXE_lambda-under-test"),
        &api.address,
        &prefix,
        &proxy.url,
    );
    let waited = Instant::now();
    while api.emulated.polls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no `next` within 30 s:\n{}",
            lambda.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Init is over and no invocation was handed over yet.
    let stats = proxy.stats();
    assert_eq!(
        stats.by_operation.values().sum::<u64>(),
        1,
        "one DynamoDB call during init: {stats}"
    );
    assert_eq!(stats.requests("DescribeEndpoints"), 1, "{stats}");

    let event = strata_tests::events::text("kv-put");
    let answer = api
        .invoke(
            "after-init",
            &event,
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|| panic!("no answer:\n{}", lambda.log()));
    assert_eq!(
        answer.body["statusCode"],
        200,
        "{answer:?}\n{}",
        lambda.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_answers_503_within_its_request_budget_when_dynamodb_is_slow() {
    let started = Instant::now();
    let prefix = fresh_prefix().await;
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        7,
        FaultConfig::healthy(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let server = Server::start_with_env(
        crate::STRATA,
        dir.path(),
        &["--store", "dynamodb", "--table-prefix", &prefix],
        &env,
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let put = || {
        client
            .put(server.url("/kv/keys/slow"))
            .json(&json!({"value": "v"}))
            .timeout(Duration::from_secs(60))
            .send()
    };
    let healthy = put().await.unwrap();
    assert_eq!(healthy.status(), 200);

    proxy.set(FaultConfig::healthy().with_slow(SLOW, None));
    let sent = Instant::now();
    let r = put().await.expect("the server answers");
    let took = sent.elapsed();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    println!(
        "PUT answered {status} after {took:?} (budget {:?}); proxy: {}",
        strata_http::REQUEST_BUDGET,
        proxy.stats()
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(
        retry_after.is_some_and(|v| v.parse::<u64>().is_ok()),
        "503 without a retry-after of whole seconds"
    );
    assert!(
        took >= Duration::from_secs(9) && took <= Duration::from_secs(11),
        "answered after {took:?}, not at its budget of {:?}",
        strata_http::REQUEST_BUDGET
    );
    println!("took {:.1} s", started.elapsed().as_secs_f64());
}
