//! Records kept for idempotency and exactly-once, as an attack on the disk: each keyed request leaves
//! records behind. With a short `--retention-seconds` they must be gone after the window (swept, not merely
//! ignored), and a reused key must then behave as documented: a new request, never an earlier answer.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_embedded::{Space, Store};
use strata_tests::exhaustion::{disk_bytes, peak_rss_mib};
use strata_tests::server::Server;

/// Long enough to count the records while they are kept (a debug server restarts in about a second).
const RETENTION_SECONDS: &str = "5";

/// The records the embedded store keeps for idempotency and exactly-once, by keyspace, read from the data
/// directory of a stopped server.
fn kept_records(dir: &std::path::Path) -> [(Space, usize); 3] {
    let store = Store::open(dir).unwrap();
    [Space::Idempotency, Space::CounterRequests, Space::Requests]
        .map(|space| (space, store.count(space).unwrap()))
}

/// After `first`, stops the server, counts what is kept, and starts it again; until nothing is (at most
/// `within`). Each check leaves the server running for 3 s first: its sweeper's passes come every second
/// with a short retention, the first one a second after the start. Returns how long it took.
fn until_swept(server: &mut Server, first: Duration, within: Duration) -> Duration {
    let started = Instant::now();
    std::thread::sleep(first);
    loop {
        std::thread::sleep(Duration::from_secs(3));
        server.terminate(Duration::from_secs(30));
        let kept = kept_records(&server.data_dir);
        server.restart();
        if kept.iter().all(|(_, n)| *n == 0) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "records still kept {within:?} after the retention: {kept:?}"
        );
    }
}

struct Keyed<'a> {
    client: &'a reqwest::Client,
    server: &'a Server,
}

impl Keyed<'_> {
    async fn send(&self, method: &str, path: &str, key: &str, body: Value) -> (u16, bool, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .client
            .request(method, self.server.url(path))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, replayed, body)
    }
}

/// Every service that takes an `Idempotency-Key`, keyed, then the window passes: the records are gone from
/// disk, and each reused key is a new request as the README says.
#[tokio::test]
async fn after_the_retention_keyed_records_are_swept_and_a_reused_key_is_a_new_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        crate::STRATA,
        dir.path(),
        &["--retention-seconds", RETENTION_SECONDS],
    );
    let client = reqwest::Client::new();
    let k = Keyed {
        client: &client,
        server: &server,
    };
    let class = json!({"authorized": 100});
    let first = json!({"name": "first", "amount": 1, "class": "RT"});
    let second = json!({"name": "second", "amount": 1, "class": "RT"});
    let increment = json!({"key": "retained", "value": 1});
    let widget = json!({"serial_number": "W1", "name": "w", "ports": ["P"]});
    let link = json!({"peer": "W2", "port": "P"});
    let (created, ..) = k
        .send(
            "POST",
            "/widgets",
            "unkeyed-w2",
            json!({"serial_number": "W2", "name": "w2", "ports": ["P"]}),
        )
        .await;
    assert_eq!(created, 201);

    let (s, _, b) = k
        .send("PUT", "/share-classes/RT", "class", class.clone())
        .await;
    assert_eq!((s, &b["authorized"]), (200, &json!(100)));
    let (s, _, cert) = k.send("POST", "/certificates", "cert", first.clone()).await;
    assert_eq!((s, &cert["id"]), (201, &json!("RT-1")));
    let (s, _, b) = k.send("POST", "/increment", "inc", increment.clone()).await;
    assert_eq!((s, &b["value"]), (200, &json!(1)));
    let (s, ..) = k.send("POST", "/widgets", "widget", widget.clone()).await;
    assert_eq!(s, 201);
    let (s, ..) = k
        .send("POST", "/widgets/W1/associations", "link", link.clone())
        .await;
    assert!(s < 300, "{s}");
    let (s, _, tx) = k.send("POST", "/kv/transactions", "begin", json!({})).await;
    assert_eq!(s, 201);

    // Within the window: the same request replays, another under the same key is 422.
    let (s, replayed, b) = k.send("POST", "/certificates", "cert", first.clone()).await;
    assert_eq!((s, replayed, &b), (201, true, &cert));
    let (s, ..) = k
        .send("POST", "/certificates", "cert", second.clone())
        .await;
    assert_eq!(s, 422);
    let (s, replayed, b) = k.send("POST", "/increment", "inc", increment.clone()).await;
    assert_eq!((s, replayed, &b["value"]), (200, true, &json!(1)));
    let (s, ..) = k
        .send(
            "PUT",
            "/share-classes/RT",
            "class",
            json!({"authorized": 200}),
        )
        .await;
    assert_eq!(s, 422);
    let kept = {
        server.terminate(Duration::from_secs(30));
        let kept = kept_records(dir.path());
        server.restart();
        kept
    };
    assert!(kept.iter().all(|(_, n)| *n > 0), "{kept:?}");
    let before = disk_bytes(dir.path());

    let took = until_swept(
        &mut server,
        Duration::from_secs(RETENTION_SECONDS.parse::<u64>().unwrap()),
        Duration::from_secs(40),
    );
    let after = disk_bytes(dir.path());
    println!(
        "records kept before the sweep {kept:?}; all swept {:.1} s after the last check; disk {before} \
         bytes before, {after} after",
        took.as_secs_f64()
    );

    let k = Keyed {
        client: &client,
        server: &server,
    };
    // Certificate: another request under the key is no longer 422 but issued, a new certificate.
    let (s, replayed, b) = k
        .send("POST", "/certificates", "cert", second.clone())
        .await;
    assert_eq!(
        (s, replayed, &b["id"], &b["name"]),
        (201, false, &json!("RT-2"), &json!("second"))
    );
    // The key now belongs to that second issue, for a new window.
    let (s, replayed, b) = k.send("POST", "/certificates", "cert", first.clone()).await;
    assert_eq!((s, replayed), (422, false), "{b}");
    // Counter: the same increment counts again.
    let (s, replayed, b) = k.send("POST", "/increment", "inc", increment.clone()).await;
    assert_eq!((s, replayed, &b["value"]), (200, false, &json!(2)));
    // Share class: another body under the key is applied.
    let (s, replayed, b) = k
        .send(
            "PUT",
            "/share-classes/RT",
            "class",
            json!({"authorized": 200}),
        )
        .await;
    assert_eq!((s, replayed, &b["authorized"]), (200, false, &json!(200)));
    // Widget create: the same request runs again and finds the widget it made.
    let (s, replayed, b) = k.send("POST", "/widgets", "widget", widget.clone()).await;
    assert_eq!(
        (s, replayed, &b["error"]["code"]),
        (409, false, &json!("duplicate_serial_number"))
    );
    // Association: runs again and finds it made.
    let (s, replayed, b) = k
        .send("POST", "/widgets/W1/associations", "link", link.clone())
        .await;
    assert_eq!(
        (s, replayed, &b["error"]["code"]),
        (409, false, &json!("already_associated"))
    );
    // Transaction begin: a new transaction.
    let (s, replayed, b) = k.send("POST", "/kv/transactions", "begin", json!({})).await;
    assert_eq!((s, replayed), (201, false));
    assert_ne!(b["id"], tx["id"]);
}

/// The scaled variant of a million keyed requests: `STRATA_EXHAUST_KEYED_REQUESTS` increments (20,000 by
/// default), each with its own `Idempotency-Key`, at 32 at a time, against `STRATA_EXHAUST_BINARY` (this
/// build's `strata` by default). Each leaves an idempotency record and a counter marker on disk; memory
/// stays bounded while they pile up, and once the window has passed the sweeper has removed them all,
/// while the totals stay exact. `infra/scripts/exhaust-retention` runs it with a million on a release build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_requests_by_the_ten_thousand_are_swept_and_memory_stays_bounded() {
    let requests: usize = std::env::var("STRATA_EXHAUST_KEYED_REQUESTS")
        .map_or(20_000, |n| n.parse().expect("a number of requests"));
    let binary =
        std::env::var("STRATA_EXHAUST_BINARY").unwrap_or_else(|_| crate::STRATA.to_owned());
    let retention: u64 = std::env::var("STRATA_EXHAUST_RETENTION_SECONDS")
        .map_or(5, |s| s.parse().expect("a number of seconds"));
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &binary,
        dir.path(),
        &["--retention-seconds", &retention.to_string()],
    );
    let client = reqwest::Client::new();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (client, next, url) = (client.clone(), next.clone(), server.url("/increment"));
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= requests {
                    return;
                }
                let r = client
                    .post(&url)
                    .header("idempotency-key", format!("request-{n}"))
                    .json(&json!({"key": format!("keyed-{}", n % 100), "value": 1}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{:?}", r.text().await);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let took = started.elapsed();
    let peak = peak_rss_mib(server.pid());
    server.terminate(Duration::from_secs(30));
    let kept = kept_records(dir.path());
    let before = disk_bytes(dir.path());
    server.restart();
    let swept_in = until_swept(
        &mut server,
        Duration::from_secs(retention),
        Duration::from_secs(retention + 120),
    );
    let after = disk_bytes(dir.path());
    println!(
        "{requests} keyed requests in {:.1} s ({:.0}/s); peak RSS {peak:.0} MiB; records kept {kept:?}; \
         disk {before} bytes before the sweep, {after} after; swept {:.1} s after the load",
        took.as_secs_f64(),
        requests as f64 / took.as_secs_f64(),
        swept_in.as_secs_f64()
    );
    assert!(peak < 512.0, "peak RSS {peak:.0} MiB");
    // What the last window of the load left (all of it, with a retention longer than the load).
    assert!(kept[0].1 > 0 && kept[1].1 > 0, "{kept:?}");
    let mut total = 0;
    for counter in 0..100 {
        let r = client
            .get(server.url(&format!("/increment/keyed-{counter}")))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        total += body[format!("keyed-{counter}")].as_u64().unwrap();
    }
    assert_eq!(
        total as usize, requests,
        "every request counted exactly once"
    );
}
