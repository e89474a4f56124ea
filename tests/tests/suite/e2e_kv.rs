//! The key/value API through the real `strata serve` process: durability across `kill -9` and SIGTERM.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_tests::server::Server;

async fn put(client: &reqwest::Client, url: &str, value: &str) -> Result<Value, reqwest::Error> {
    let r = client
        .put(url)
        .json(&json!({ "value": value }))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "PUT {url}");
    r.json().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_http_round_trip_limits_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &[]);
    let client = reqwest::Client::new();
    let body = put(&client, &server.url("/kv/keys/a"), "3 * 3 = 9 — ü")
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"key": "a", "value": "3 * 3 = 9 — ü", "version": 1})
    );
    let r = client.get(server.url("/kv/keys/a")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"key":"a","value":"3 * 3 = 9 — ü","version":1}"#
    );

    // a body over 1 MiB is refused with the contract's JSON, whatever its framing
    let huge = format!(
        "{{\"value\":\"{}\"}}",
        "v".repeat(strata_http::MAX_BODY_BYTES)
    );
    let r = client
        .put(server.url("/kv/keys/a"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "body_too_large"
    );

    let r = client
        .get(server.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "route_not_found"
    );
    let r = client.get(server.url("/kv/keys/a")).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["version"],
        1,
        "refused requests changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(crate::STRATA, dir.path(), &[]);
    let client = reqwest::Client::new();
    // key -> highest round acknowledged; each client writes its own keys in increasing rounds
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..20 {
        let (client, acked, base) = (client.clone(), acked.clone(), server.base.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0u64.. {
                let key = format!("c{c}-k{}", round % 7);
                match put(
                    &client,
                    &format!("{base}/kv/keys/{key}"),
                    &round.to_string(),
                )
                .await
                {
                    Ok(_) => {
                        acked.lock().unwrap().insert(key, round);
                    }
                    Err(_) => return round, // the server is gone
                }
            }
            unreachable!()
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    let mut writes = 0;
    for task in tasks {
        writes += task.await.unwrap();
    }
    assert!(writes > 100, "the load ran ({writes} writes)");
    server.restart();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for (key, round) in &acked {
        let r = client
            .get(server.url(&format!("/kv/keys/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "{key} was acknowledged but is gone after kill -9"
        );
        let stored: u64 = r.json::<Value>().await.unwrap()["value"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // an unacknowledged later write may have landed too; an acknowledged one can never be missing
        assert!(
            stored >= *round,
            "{key}: acknowledged round {round}, found {stored}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(crate::STRATA, dir.path(), &[]);
    let client = reqwest::Client::new();
    put(&client, &server.url("/kv/keys/kept"), "yes")
        .await
        .unwrap();
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    server.restart();
    let r = client
        .get(server.url("/kv/keys/kept"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["value"], "yes");
}

/// Each transaction sets all of a group of keys to its round number; after `kill -9` mid-stream and a
/// restart, every group holds one round (all or nothing), at least the last acknowledged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_are_all_or_nothing_across_kill_9() {
    const KEYS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(crate::STRATA, dir.path(), &[]);
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for group in 0..8 {
        let (client, acked, base) = (client.clone(), acked.clone(), server.base.clone());
        tasks.push(tokio::spawn(async move {
            let run = async {
                for round in 1u64.. {
                    let r: Value = client
                        .post(format!("{base}/kv/transactions"))
                        .json(&json!({}))
                        .send()
                        .await?
                        .json()
                        .await?;
                    let tx = r["id"]
                        .as_str()
                        .unwrap_or_else(|| panic!("begin: {r}"))
                        .to_owned();
                    for k in 0..KEYS {
                        client
                            .put(format!("{base}/kv/transactions/{tx}/keys/g{group}-k{k}"))
                            .json(&json!({"value": round.to_string()}))
                            .send()
                            .await?;
                    }
                    let r = client
                        .post(format!("{base}/kv/transactions/{tx}/commit"))
                        .send()
                        .await?;
                    assert_eq!(r.status(), 200);
                    acked.lock().unwrap().insert(group, round);
                }
                Ok::<(), reqwest::Error>(())
            };
            let _ = run.await; // ends when the server is killed
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for task in tasks {
        task.await.unwrap();
    }
    server.restart();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 8, "every group committed before the kill");
    for (group, round) in acked {
        let mut seen = Vec::new();
        for k in 0..KEYS {
            let r: Value = client
                .get(server.url(&format!("/kv/keys/g{group}-k{k}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            seen.push(r["value"].as_str().unwrap().parse::<u64>().unwrap());
        }
        assert!(
            seen.iter().all(|v| *v == seen[0]),
            "group {group} is half committed: {seen:?}"
        );
        assert!(
            seen[0] >= round,
            "group {group}: acknowledged round {round}, found {}",
            seen[0]
        );
    }
}
