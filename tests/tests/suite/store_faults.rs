//! The stores when the storage under them fails: the local server on a data directory that fills up (a real
//! tmpfs, filled with a ballast file), and DynamoDB that throttles or cannot be reached (wire-level: a
//! loopback server answering DynamoDB's real throttling error, and a closed port).

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use strata_tests::server::Server;

/// A tmpfs of `size_mb` MiB mounted on a fresh directory, unmounted on drop. Needs root (`mount`): without
/// it the test fails, with the reason, rather than passing without having tested anything.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mb: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount(8) runs");
        assert!(
            out.status.success(),
            "the full-disk tests need root to mount a small tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn ballast(&self) -> PathBuf {
        self.path().join("ballast")
    }

    /// Fills the file system to the last byte: big chunks, then smaller ones until not even 512 bytes fit.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ballast())
            .unwrap();
        let mut chunk = 1 << 20;
        while chunk >= 512 {
            match file.write(&vec![0xAB; chunk]) {
                Ok(n) if n == chunk => {}
                Ok(_) => chunk /= 2,
                Err(e) if e.raw_os_error() == Some(28) => chunk /= 2, // ENOSPC
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }

    /// Space returns.
    fn free(&self) {
        std::fs::remove_file(self.ballast()).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server of a failed test may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// One HTTP answer: status, `retry-after`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Answer {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("the server answers");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

/// A refusal must be exactly this: `503 store_unavailable` with a `retry-after`.
fn assert_refused(a: &Answer, what: &str) {
    assert_eq!(a.status, 503, "{what}: {}", a.body);
    assert_eq!(a.body["error"]["code"], "store_unavailable", "{what}");
    assert!(a.retry_after.is_some(), "{what}: 503 without retry-after");
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn put(&self, key: &str, value: &str) -> Answer {
        call(
            &self.http,
            reqwest::Method::PUT,
            format!("{}/kv/keys/{key}", self.base),
            Some(json!({ "value": value })),
        )
        .await
    }

    async fn get(&self, path: &str) -> Answer {
        call(
            &self.http,
            reqwest::Method::GET,
            format!("{}{path}", self.base),
            None,
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        call(
            &self.http,
            reqwest::Method::POST,
            format!("{}{path}", self.base),
            Some(body),
        )
        .await
    }

    async fn issue(&self, name: &str) -> Answer {
        self.post(
            "/certificates",
            json!({"name": name, "amount": 1, "class": "CS"}),
        )
        .await
    }

    async fn increment(&self) -> Answer {
        self.post("/increment", json!({"key": "hits", "value": 1}))
            .await
    }
}

/// What the clients were told, key by key: `Some(value)` acknowledged (2xx), `None` refused (503).
type Told = BTreeMap<String, Option<String>>;

/// Writers on distinct keys, each recording what it was told, until `stop`.
fn start_writers(
    client: &Arc<Client>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Told>> {
    (0..4)
        .map(|writer| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut told = Told::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (
                        format!("w{writer}-{i}"),
                        format!("{writer}:{i}:{}", "v".repeat(2000)),
                    );
                    let a = client.put(&key, &value).await;
                    match a.status {
                        200 => told.insert(key, Some(value)),
                        503 => {
                            assert_refused(&a, "a write while the disk is full");
                            told.insert(key, None)
                        }
                        other => panic!("a write answered {other}: {}", a.body),
                    };
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                told
            })
        })
        .collect()
}

/// Every acknowledged write is there with its value, and no refused write is.
async fn assert_exactly_acknowledged(client: &Client, told: &Told, when: &str) {
    for (key, value) in told {
        let a = client.get(&format!("/kv/keys/{key}")).await;
        match value {
            Some(value) => {
                assert_eq!(a.status, 200, "{when}: acknowledged {key} is missing");
                assert_eq!(a.body["value"], *value.as_str(), "{when}: {key}");
            }
            None => assert_eq!(a.status, 404, "{when}: refused {key} is visible"),
        }
    }
}

/// Certificates of class CS are exactly 1..=n, and the class says n were issued.
async fn assert_gapless(client: &Client, n: u64, when: &str) {
    let listed = client.get("/certificates?class=CS&limit=1000").await;
    let numbers: Vec<u64> = listed.body["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=n).collect::<Vec<_>>(), "{when}");
    let class = client.get("/share-classes/CS").await;
    assert_eq!(class.body["issued"], n, "{when}");
    assert_eq!(class.body["next_number"], n + 1, "{when}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_with_503_keeps_reads_and_recovers_without_restart() {
    let disk = Tmpfs::mount(48);
    let data = disk.path().join("data");
    let mut server = Server::start(crate::STRATA, &data, &["--counter-mode", "eventual"]);
    let client = Arc::new(Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    });
    let (mut issued, mut counted) = (0u64, 0u64);
    for i in 0..3 {
        assert_eq!(client.issue(&format!("before {i}")).await.status, 201);
        issued += 1;
        assert_eq!(client.increment().await.status, 202);
        counted += 1;
    }

    // Writers run while the disk fills up under them.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&client, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    disk.fill();
    // The journal's last page may still have room for a write or two; then the disk refuses.
    let mut probes = Told::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        let (key, value) = (format!("probe-{i}"), "x".repeat(4000));
        let a = client.put(&key, &value).await;
        if a.status == 503 {
            assert_refused(&a, "a write on a full disk");
            probes.insert(key, None);
            break;
        }
        assert_eq!(a.status, 200, "{}", a.body);
        probes.insert(key, Some(value));
        assert!(
            Instant::now() < deadline,
            "writes still succeed on a full disk"
        );
    }

    // While the disk is full: every write is refused, with nothing written; reads answer.
    for i in 0..5 {
        assert_refused(
            &client.issue(&format!("refused {i}")).await,
            "an issue on a full disk",
        );
        assert_refused(&client.increment().await, "an increment on a full disk");
        assert_refused(
            &client.put("refused", "never").await,
            "a put on a full disk",
        );
    }
    let class = client.get("/share-classes/CS").await;
    assert_eq!(
        (class.status, &class.body["issued"]),
        (200, &json!(issued)),
        "refused issues used no number"
    );
    assert_eq!(client.get("/kv/keys/refused").await.status, 404);
    assert_eq!(client.get("/health").await.status, 200);
    assert_eq!(
        client
            .get(&format!("/certificates/CS-{issued}"))
            .await
            .status,
        200
    );

    // Space returns: writes succeed again, on the same server process.
    disk.free();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = client.issue("after").await;
        if a.status == 201 {
            issued += 1;
            assert_eq!(
                a.body["number"], issued,
                "the number after the fault follows on, no gap"
            );
            break;
        }
        assert_refused(&a, "an issue while the store recovers");
        assert!(
            Instant::now() < deadline,
            "writes did not recover after space returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.increment().await.status, 202);
    counted += 1;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut told = Told::new();
    for w in writers {
        told.extend(w.await.unwrap());
    }
    let acknowledged = told.values().filter(|v| v.is_some()).count();
    let refused = told.len() - acknowledged;
    assert!(
        refused > 0,
        "no writer saw the fault (acknowledged {acknowledged})"
    );
    assert!(
        acknowledged > 0,
        "no writer got through (refused {refused})"
    );
    told.extend(probes);
    told.insert("refused".into(), None);

    assert_exactly_acknowledged(&client, &told, "after recovery").await;
    assert_gapless(&client, issued, "after recovery").await;

    // kill -9 and restart: the store is exactly the acknowledged writes.
    server.kill9();
    server.restart();
    let client = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };
    assert_exactly_acknowledged(&client, &told, "after kill -9").await;
    assert_gapless(&client, issued, "after kill -9").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let total = client.get("/increment/hits").await.body["hits"].as_u64();
        if total == Some(counted) {
            break;
        }
        assert!(
            total.unwrap_or(0) < counted,
            "counted {total:?}, acknowledged {counted}"
        );
        assert!(
            Instant::now() < deadline,
            "counted {total:?}, acknowledged {counted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback HTTP server that answers every request with DynamoDB's throttling error, counting requests.
async fn throttling_dynamodb() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: headers, then content-length bytes of body.
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    buf.drain(..end + 4 + length);
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#;
                    let response = format!(
                        "HTTP/1.1 400 Bad Request\r\nx-amzn-ErrorType: ProvisionedThroughputExceededException\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, seen)
}

/// The DynamoDB stores the way `strata serve --store dynamodb` and the Lambdas build them, on `endpoint`.
async fn dynamodb_app(endpoint: &str) -> strata_tests::fixture::App {
    let sdk = strata_tests::dynamodb::sdk_config(endpoint).await;
    let client = strata_dynamo::config::client(&sdk);
    let tables =
        strata_dynamo::config::Tables::from_lookup(|name| Some(format!("t-{name}"))).unwrap();
    strata_tests::fixture::App::new(strata_dynamo::stores(
        client,
        tables,
        &strata_core::Settings::default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_throttling_is_429_with_retry_after_after_a_bounded_number_of_attempts() {
    let (endpoint, seen) = throttling_dynamodb().await;
    let app = dynamodb_app(&endpoint).await;
    for (method, path, body) in [
        ("GET", "/kv/keys/k", None),
        ("PUT", "/kv/keys/k", Some(json!({"value": "v"}))),
        ("POST", "/increment", Some(json!({"key": "k", "value": 1}))),
    ] {
        let before = seen.load(Ordering::SeqCst);
        let started = Instant::now();
        let r = app.call(method.parse().unwrap(), path, body.as_ref()).await;
        assert_eq!(r.status.as_u16(), 429, "{method} {path}: {}", r.body);
        assert_eq!(
            r.body["error"]["code"], "store_throttled",
            "{method} {path}"
        );
        assert!(r.headers.contains_key("retry-after"), "{method} {path}");
        let attempts = seen.load(Ordering::SeqCst) - before;
        assert!(
            (1..=strata_dynamo::config::MAX_ATTEMPTS as usize).contains(&attempts),
            "{method} {path}: {attempts} attempts, at most {} configured",
            strata_dynamo::config::MAX_ATTEMPTS
        );
        assert!(
            attempts > 1,
            "{method} {path}: a throttled request is retried before giving up"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{method} {path}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_unreachable_is_503_within_a_bounded_time() {
    // A port that was free a moment ago: nothing listens, the connection is refused.
    let port = strata_tests::server::free_port();
    let app = dynamodb_app(&format!("http://127.0.0.1:{port}")).await;
    for (method, path, body) in [
        ("GET", "/kv/keys/k", None),
        ("PUT", "/kv/keys/k", Some(json!({"value": "v"}))),
        (
            "POST",
            "/certificates",
            Some(json!({"name": "n", "amount": 1, "class": "CS"})),
        ),
    ] {
        let started = Instant::now();
        let r = app.call(method.parse().unwrap(), path, body.as_ref()).await;
        assert_eq!(r.status.as_u16(), 503, "{method} {path}: {}", r.body);
        assert_eq!(
            r.body["error"]["code"], "store_unavailable",
            "{method} {path}"
        );
        assert!(r.headers.contains_key("retry-after"), "{method} {path}");
        assert!(
            started.elapsed() < strata_dynamo::config::OPERATION_TIMEOUT + Duration::from_secs(2),
            "{method} {path}: {:?}",
            started.elapsed()
        );
    }
}

strata_tests::contract!(a_refused_commit_leaves_the_transaction_open_and_a_retry_commits_it);

/// README: "A conflict (409) ends the transaction; a 503 at commit does not, so the commit can be retried."
async fn a_refused_commit_leaves_the_transaction_open_and_a_retry_commits_it(
    f: strata_tests::fixture::Fixture,
) {
    use http::StatusCode;
    let (f, faults) = f.with_commit_faults();
    let app = &f.app;
    assert_eq!(
        app.put("/kv/keys/a", json!({"value": "old"})).await.status,
        StatusCode::OK
    );
    let tx = app.post("/kv/transactions", json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = |k: &str| format!("/kv/transactions/{tx}/keys/{k}");
    assert_eq!(app.get(&key("a")).await.body["value"], "old");
    app.put(&key("a"), json!({"value": "new"})).await;
    app.put(&key("b"), json!({"value": "b"})).await;
    let commit = format!("/kv/transactions/{tx}/commit");

    faults.refuse_next(1);
    let r = app.post(&commit, json!({})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.code(), "store_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    // nothing was written, and the transaction is still open with everything it did
    assert_eq!(app.get("/kv/keys/a").await.body["value"], "old");
    assert_eq!(app.get("/kv/keys/b").await.status, StatusCode::NOT_FOUND);
    let r = app.get(&key("a")).await;
    assert_eq!(
        (r.status, &r.body["value"]),
        (StatusCode::OK, &json!("new")),
        "the transaction is still open after a 503 at commit: {}",
        r.body
    );

    let r = app.post(&commit, json!({})).await;
    assert_eq!(
        (r.status, &r.body),
        (
            StatusCode::OK,
            &json!({"id": tx, "committed": true, "writes": 2})
        )
    );
    assert_eq!(app.get("/kv/keys/a").await.body["value"], "new");
    assert_eq!(app.get("/kv/keys/a").await.body["version"], 2);
    assert_eq!(app.get("/kv/keys/b").await.body["version"], 1);
    assert_eq!(
        app.post(&commit, json!({})).await.code(),
        "transaction_not_found"
    );

    // a conflict still ends it
    let tx = app.post("/kv/transactions", json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get(&format!("/kv/transactions/{tx}/keys/a")).await;
    app.put("/kv/keys/a", json!({"value": "meanwhile"})).await;
    let commit = format!("/kv/transactions/{tx}/commit");
    assert_eq!(app.post(&commit, json!({})).await.code(), "conflict");
    assert_eq!(
        app.post(&commit, json!({})).await.code(),
        "transaction_not_found"
    );
}

/// The writer made a commit durable but its answer never came back (the reply path failed, or the caller
/// gave up): the commit is reported committed, and a retry neither fails nor applies it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_commit_whose_answer_was_lost_is_reported_committed_and_applied_once() {
    use http::StatusCode;
    let f = strata_tests::fixture::Fixture::embedded().await;
    let store = f.embedded.as_ref().unwrap().0.clone();
    let app = &f.app;
    let tx = app.post("/kv/transactions", json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.put(
        &format!("/kv/transactions/{tx}/keys/c"),
        json!({"value": "once"}),
    )
    .await;
    let commit = format!("/kv/transactions/{tx}/commit");
    store.inject_lost_answers(1);
    let r = app.post(&commit, json!({})).await;
    assert_eq!(
        (r.status, &r.body),
        (
            StatusCode::OK,
            &json!({"id": tx, "committed": true, "writes": 1})
        ),
        "a durable commit is reported committed"
    );
    assert_eq!(app.get("/kv/keys/c").await.body["version"], 1);
    let r = app.post(&commit, json!({})).await;
    assert!(
        r.status == StatusCode::OK || r.code() == "transaction_not_found",
        "{}",
        r.body
    );
    assert_eq!(
        app.get("/kv/keys/c").await.body["version"],
        1,
        "applied once"
    );
}
