//! Against a running server: a backup under load, and the export endpoint streaming one export at a time.

use super::*;

/// Writers put keys one after another (each its own sequence) and issue certificates while `strata backup
/// --server` and `strata export --server` run. The backup holds every write acknowledged before it began,
/// each writer's keys as a prefix of what it wrote (nothing after a missing one: one moment), nothing that
/// was never sent; its certificates keep every invariant; and `strata serve --data-dir` serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_exactly_the_writes_acknowledged_up_to_its_moment() {
    let work = tempfile::tempdir().unwrap();
    let mut server = Server::start(crate::STRATA, &work.path().join("live"), &[]);
    let base = server.base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let http = reqwest::Client::new();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (http, stop, acked, base) =
                (http.clone(), stop.clone(), acked[w].clone(), base.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let r = http
                        .put(format!("{base}/kv/keys/w{w}-{i:08}"))
                        .json(&json!({"value": format!("v{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    i += 1;
                    acked.store(i, Ordering::SeqCst);
                    let r = http
                        .post(format!("{base}/certificates"))
                        .json(&json!({"class": "CS", "name": "n", "amount": 1 + i % 9}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let backup = work.path().join("backup");
    let export = work.path().join("live.jsonl");
    let started = Instant::now();
    let out = ok(
        &[
            "backup",
            "--server",
            &base,
            "--to",
            backup.to_str().unwrap(),
        ],
        &[],
    );
    ok(
        &[
            "export",
            "--server",
            &base,
            "--output",
            export.to_str().unwrap(),
        ],
        &[],
    );
    let after: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(out.contains("backed up"), "{out}");
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "the writers wrote during the backup ({before:?} → {after:?}, {:?})",
        started.elapsed()
    );
    // The export under load: one snapshot, every invariant holds.
    assert!(check(&records(&export)).is_empty());

    server.terminate(Duration::from_secs(10));
    let store = strata_embedded::Store::open(&backup).unwrap();
    let restored = store.transfer().export(&Service::ALL).await.unwrap();
    drop(store);
    assert!(check(&restored).is_empty(), "{:?}", check(&restored));
    let mut last = Vec::new();
    for w in 0..3 {
        let prefix = format!("w{w}-");
        let keys: Vec<&str> = restored
            .iter()
            .filter_map(|r| match r {
                Record::Kv { key, .. } if key.starts_with(&prefix) => Some(key.as_str()),
                _ => None,
            })
            .collect();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(*key, format!("{prefix}{i:08}"), "writer {w}: a gap");
        }
        let n = keys.len() as u64;
        assert!(
            n >= before[w] && n <= after[w] + 1,
            "writer {w}: {n} keys, {} acknowledged before the backup, {} after",
            before[w],
            after[w]
        );
        last.push(format!("{prefix}{:08}", n - 1));
    }
    let restored_server = Server::start(crate::STRATA, &backup, &[]);
    for key in last {
        let r = http
            .get(restored_server.url(&format!("/kv/keys/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{key} is served from the backup");
    }
}

/// The peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// `GET /admin/export` streams: the server's peak memory grows by much less than the store's size while
/// it serves an export of it (a body built whole would hold the records and the file, twice the store);
/// one export runs at a time (a second gets `503 export_in_progress` with `retry-after`); and a server with
/// `--rate-limit` counts exports too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_endpoint_streams_one_at_a_time_under_the_rate_limit() {
    let work = tempfile::tempdir().unwrap();
    // A small block cache: what fills it is the cache's, not the export's (it is a bound of its own).
    let server = Server::start(
        crate::STRATA,
        &work.path().join("live"),
        &["--cache-mb", "16"],
    );
    let http = reqwest::Client::new();
    // 96 MiB of values: far more than fjall's block cache (32 MiB) and the export's pages in flight.
    let value = "v".repeat(256 * 1024);
    let keys = 384;
    for i in 0..keys {
        let r = http
            .put(server.url(&format!("/kv/keys/big-{i:04}")))
            .json(&json!({ "value": value }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let store_bytes = (keys * value.len()) as u64;
    // Resets the peak to the present (Linux's clear_refs: `5`).
    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").unwrap();
    let before = peak_rss(server.pid());

    let mut first = http.get(server.url("/admin/export")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    // While the first is being read (its body not taken yet), a second is refused.
    let second = http.get(server.url("/admin/export")).send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "5");
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "export_in_progress", "{body}");

    // The first, read slowly and counted as it comes, is whole.
    let mut file = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = first.chunk().await.unwrap() {
        chunks += 1;
        file.extend_from_slice(&chunk);
        if chunks % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let grown = peak_rss(server.pid()).saturating_sub(before);
    let read = read(&file[..]).unwrap();
    assert_eq!(read.records.len(), keys);
    assert!(chunks > 2, "{chunks} chunks");
    assert!(
        grown < store_bytes / 2,
        "the server's peak grew by {grown} bytes exporting {store_bytes} bytes of values"
    );
    drop(file);

    // Once it is done, the next one runs (its permit is released when its last page is sent).
    let mut status = 0;
    for _ in 0..50 {
        let r = http
            .get(server.url("/admin/export?services=counters"))
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    drop(server);

    // Under `--rate-limit`, an export is a request like any other.
    let limited = Server::start(
        crate::STRATA,
        &work.path().join("limited"),
        &["--rate-limit", "1/60"],
    );
    let r = http.get(limited.url("/admin/export")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    let r = http.get(limited.url("/admin/export")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
}
