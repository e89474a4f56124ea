//! Open transactions as an attack: many of them, each buffering megabytes, or simply very many. The
//! embedded store bounds their number and their buffered bytes together; past either, the documented
//! `503` with `retry-after`, and the server keeps serving everyone else.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_tests::exhaustion::{Bystander, peak_rss_mib};
use strata_tests::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The stated bound on the server's peak resident memory with default flags.
const PEAK_RSS_BOUND_MIB: f64 = 512.0;
/// Each attacking transaction writes this many values of [`VALUE_BYTES`]: 3.8 MB, under the 4 MB a
/// transaction may write.
const WRITES_PER_TX: usize = 19;
const VALUE_BYTES: usize = 200_000;

fn value_of(tx: usize, write: usize) -> String {
    let mark = format!("{tx:04}-{write:02}-");
    format!("{mark}{}", "v".repeat(VALUE_BYTES - mark.len()))
}

async fn begin(client: &reqwest::Client, server: &Server) -> reqwest::Response {
    client
        .post(server.url("/kv/transactions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

async fn put(
    client: &reqwest::Client,
    server: &Server,
    tx: &str,
    key: &str,
    value: &str,
) -> reqwest::Response {
    client
        .put(server.url(&format!("/kv/transactions/{tx}/keys/{key}")))
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap()
}

/// A `503` as documented: the error JSON with `code`, and `retry-after`.
async fn assert_busy(response: reqwest::Response, code: &str) {
    assert_eq!(response.status(), 503);
    assert!(
        response.headers().get("retry-after").is_some_and(|v| v
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1),
        "{:?}",
        response.headers()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
}

/// What became of one attacking transaction.
struct Attempt {
    index: usize,
    id: String,
    /// Writes it got in before the first refusal (all of them if never refused).
    written: usize,
}

/// 300 transactions of 3.8 MB each (1.1 GB in all), 32 at a time, against default flags: the first ones fill the
/// 256 MiB budget, every write past it is `503 transaction_memory_full`, the bystander is served all along,
/// the peak stays under 512 MiB, and every admitted transaction commits exactly what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_transactions_of_3_8_mb_are_bounded_and_the_admitted_ones_commit() {
    // `infra/scripts/exhaust-retention` may point it at another build.
    let binary =
        std::env::var("STRATA_EXHAUST_BINARY").unwrap_or_else(|_| crate::STRATA.to_owned());
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Server::start(&binary, dir.path(), &[]));
    let bystander = Bystander::start(&server.base);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for index in 0..300 {
        let (server, client, gate) = (server.clone(), client.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _turn = gate.acquire().await.unwrap();
            let r = begin(&client, &server).await;
            assert_eq!(r.status(), 201);
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            for write in 0..WRITES_PER_TX {
                let r = put(
                    &client,
                    &server,
                    &id,
                    &format!("tx{index:04}-{write:02}"),
                    &value_of(index, write),
                )
                .await;
                if r.status() != 200 {
                    // A client told to retry later stops here; its transaction stays open.
                    assert_busy(r, "transaction_memory_full").await;
                    return Attempt {
                        index,
                        id,
                        written: write,
                    };
                }
            }
            Attempt {
                index,
                id,
                written: WRITES_PER_TX,
            }
        }));
    }
    let mut attempts = Vec::new();
    for task in tasks {
        attempts.push(task.await.unwrap());
    }
    let attack = started.elapsed();
    let peak = peak_rss_mib(server.pid());
    let report = bystander.assert_served().await;
    let (admitted, refused): (Vec<_>, Vec<_>) = attempts
        .into_iter()
        .partition(|a| a.written == WRITES_PER_TX);
    println!(
        "300 × 3.8 MB transactions: {} admitted whole, {} refused (503 transaction_memory_full) after \
         {} writes in all; attack {:.1} s; peak RSS {peak:.0} MiB; bystander {} rounds, slowest {:?}",
        admitted.len(),
        refused.len(),
        refused.iter().map(|a| a.written).sum::<usize>(),
        attack.as_secs_f64(),
        report.rounds,
        report.slowest
    );
    assert!(
        peak < PEAK_RSS_BOUND_MIB,
        "peak RSS {peak:.0} MiB, over the {PEAK_RSS_BOUND_MIB} MiB bound"
    );
    // 256 MiB hold 70 whole transactions of 3.8 MB at most.
    assert!(
        (20..=71).contains(&admitted.len()),
        "{} admitted",
        admitted.len()
    );
    assert!(refused.len() >= 229, "{} refused", refused.len());

    // The refused ones are still open and unchanged; all but one give up.
    let (finisher, others) = refused.split_first().unwrap();
    for attempt in others {
        let r = client
            .post(server.url(&format!("/kv/transactions/{}/rollback", attempt.id)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Every admitted transaction commits all it wrote, exactly.
    for attempt in &admitted {
        commit_and_check(&client, &server, attempt).await;
    }
    // With their bytes given back, the last refused one finishes its writes and commits them all.
    for write in finisher.written..WRITES_PER_TX {
        let key = format!("tx{:04}-{write:02}", finisher.index);
        let r = put(
            &client,
            &server,
            &finisher.id,
            &key,
            &value_of(finisher.index, write),
        )
        .await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    commit_and_check(&client, &server, finisher).await;
    let peak = peak_rss_mib(server.pid());
    println!("after the commits: peak RSS {peak:.0} MiB");
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak RSS {peak:.0} MiB");
}

async fn commit_and_check(client: &reqwest::Client, server: &Server, attempt: &Attempt) {
    let r = client
        .post(server.url(&format!("/kv/transactions/{}/commit", attempt.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["writes"], WRITES_PER_TX);
    for write in [0, WRITES_PER_TX - 1] {
        let key = format!("tx{:04}-{write:02}", attempt.index);
        let r = client
            .get(server.url(&format!("/kv/keys/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{key}");
        assert!(
            r.json::<Value>().await.unwrap()["value"] == value_of(attempt.index, write),
            "{key} holds another value"
        );
    }
}

/// `--max-open-transactions 8`: the ninth `POST /kv/transactions` is `503 too_many_transactions` and
/// creates nothing; the line protocol's `START` gets an `Error` line; a finished transaction makes room.
#[tokio::test]
async fn past_the_open_transaction_cap_starting_one_is_503_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &["--max-open-transactions", "8"]);
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..8 {
        let r = begin(&client, &server).await;
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for _ in 0..3 {
        assert_busy(begin(&client, &server).await, "too_many_transactions").await;
    }
    // A keyed begin that was refused is not remembered: its retry runs once there is room.
    let keyed = || {
        client
            .post(server.url("/kv/transactions"))
            .header("idempotency-key", "begin-1")
            .json(&json!({}))
            .send()
    };
    assert_busy(keyed().await.unwrap(), "too_many_transactions").await;

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.line_port))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"START\n").await.unwrap();
    let reply: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(reply["status"], "Error", "{reply}");
    assert!(
        reply["mesg"]
            .as_str()
            .unwrap()
            .contains("8 transactions are open"),
        "{reply}"
    );
    // Until a COMMIT or ROLLBACK says it has seen the refusal, nothing runs: a client that pipelined
    // its transaction behind the START has none of it applied one by one.
    write
        .write_all(b"PUT piped 1\nGET piped\nCOMMIT\nGET piped\n")
        .await
        .unwrap();
    for n in 0..3 {
        let reply: Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(reply["status"], "Error", "{reply}");
        assert!(
            reply["mesg"]
                .as_str()
                .unwrap()
                .starts_with("No transaction: START was refused (8 transactions are open"),
            "{n}: {reply}"
        );
    }
    let reply: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(reply["mesg"], "Key not found!", "the PUT ran: {reply}");
    // The same over HTTP, in one request.
    let r = client
        .post(server.url("/kv/commands"))
        .header("content-type", "text/plain")
        .body("START\nPUT piped 1\nCOMMIT\nGET piped\n")
        .send()
        .await
        .unwrap();
    let replies = r.text().await.unwrap();
    let replies: Vec<&str> = replies.lines().collect();
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(replies[1].contains("START was refused"), "{replies:?}");
    assert!(replies[2].contains("START was refused"), "{replies:?}");
    assert_eq!(
        replies[3],
        r#"{"status": "Error", "mesg": "Key not found!"}"#
    );

    // The eight are untouched: each still takes a write; one rolled back makes room for one more.
    for id in &ids {
        assert_eq!(put(&client, &server, id, "k", "v").await.status(), 200);
    }
    let r = client
        .post(server.url(&format!("/kv/transactions/{}/rollback", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = keyed().await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("idempotent-replayed").is_none());
    write.write_all(b"START\nROLLBACK\n").await.unwrap();
    let reply: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(reply["status"], "Error", "the cap is full again: {reply}");
    let reply: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert!(
        reply["mesg"]
            .as_str()
            .unwrap()
            .contains("START was refused"),
        "{reply}"
    );
    let r = client
        .post(server.url(&format!("/kv/transactions/{}/commit", ids[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    write
        .write_all(b"START\nPUT line 1\nCOMMIT\n")
        .await
        .unwrap();
    for _ in 0..3 {
        let reply: Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(reply["status"], "Ok", "{reply}");
    }
}

/// `--tx-idle-timeout 3 --max-transaction-memory-mb 8`: three transactions write 3.8 MB each in turns until
/// the first refusal; the refused one is kept alive, the other two are left idle. With no transaction begun
/// meanwhile, the sweeper alone expires the idle two, and the refused write's retry is taken.
#[tokio::test]
async fn abandoned_transactions_are_swept_on_a_timer_and_their_bytes_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        crate::STRATA,
        dir.path(),
        &["--tx-idle-timeout", "3", "--max-transaction-memory-mb", "8"],
    );
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = begin(&client, &server).await;
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut refused = None;
    'fill: for write in 0..WRITES_PER_TX {
        for (index, id) in ids.iter().enumerate() {
            let r = put(
                &client,
                &server,
                id,
                &format!("k{write}"),
                &value_of(index, write),
            )
            .await;
            if r.status() != 200 {
                assert_busy(r, "transaction_memory_full").await;
                refused = Some((index, write));
                break 'fill;
            }
        }
    }
    let (survivor, refused_at) = refused.expect("8 MiB cannot hold three transactions of 3.8 MB");
    let idle: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != survivor)
        .map(|(_, id)| id)
        .collect();
    let survivor = &ids[survivor];
    // Only the survivor is touched (every operation restarts its idle timer); nothing begins.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let r = client
            .get(server.url(&format!("/kv/transactions/{survivor}/keys/k0")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for write in refused_at..WRITES_PER_TX {
        let r = put(
            &client,
            &server,
            survivor,
            &format!("k{write}"),
            &value_of(9, write),
        )
        .await;
        assert_eq!(r.status(), 200, "after the sweep: {:?}", r.text().await);
    }
    let r = client
        .post(server.url(&format!("/kv/transactions/{survivor}/commit")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["writes"], WRITES_PER_TX);
    for id in idle {
        let r = client
            .post(server.url(&format!("/kv/transactions/{id}/commit")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "an expired transaction is gone");
    }
}
