//! `strata export`, `strata import` and `strata backup` (docs/export-format.md), through the real command:
//! a round trip embedded → DynamoDB Local → embedded, bad files refused with nothing written, and a backup
//! of a running server under load that restores to exactly the acknowledged writes up to its moment.

use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strata_core::Settings;
use strata_core::certificates::{ClassCode, IssueRequest};
use strata_core::counters::CounterKey;
use strata_core::kv::{Key, Value};
use strata_core::transfer::{Record, Service, Transfer, check, read};
use strata_core::widgets::{Port, Widget};
use strata_tests::server::Server;

/// Runs `strata <args>` with `env`; its status, stdout and stderr.
fn strata(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let out = Command::new(crate::STRATA)
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .expect("strata runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str], env: &[(String, String)]) -> String {
    let (success, stdout, stderr) = strata(args, env);
    assert!(success, "strata {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn records(file: &Path) -> Vec<Record> {
    let file = read(std::io::BufReader::new(std::fs::File::open(file).unwrap()))
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    file.records
}

fn dynamodb_env() -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", strata_tests::dynamodb::endpoint()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}

/// Fills an embedded store through its ports: `scale` keys (a third deleted), certificates in two classes
/// (some under an Idempotency-Key), widgets in pairs with associations, counters (one with a keyed
/// increment).
async fn fill(dir: &Path, scale: u64) {
    let store = strata_embedded::Store::open(dir).unwrap();
    let stores = store.stores(&Settings::default());
    for i in 0..scale {
        let key = Key::parse(&format!("key-{i:06}")).unwrap();
        for v in 0..=(i % 3) {
            let value = Value::parse(format!("value {i} {v} ü")).unwrap();
            stores.kv.put(&key, &value).await.unwrap();
        }
        if i % 3 == 1 {
            stores.kv.delete(&key).await.unwrap();
        }
    }
    for i in 0..scale {
        let class = ClassCode::parse(if i % 2 == 0 { "CS" } else { "PS" }).unwrap();
        let request = IssueRequest {
            class,
            name: format!("holder {i}"),
            amount: 1 + i % 50,
        };
        let id = format!("issue-{i}");
        let id = (i % 5 == 0).then_some(id.as_str());
        stores.ledger.issue(&request, id).await.unwrap();
    }
    for i in 0..scale / 2 {
        let (a, b) = (format!("w{i:05}a"), format!("w{i:05}b"));
        for serial in [&a, &b] {
            let widget = Widget {
                serial: serial.clone(),
                name: format!("widget {serial}"),
                ports: vec![Port::P, Port::R, Port::R],
                associations: vec![],
            };
            stores.widgets.create(&widget).await.unwrap();
        }
        stores.widgets.associate(&a, &b, Port::R).await.unwrap();
    }
    for i in 0..scale / 4 {
        let key = CounterKey::parse(&format!("counter {i}")).unwrap();
        stores.counters.increment(&key, i + 1, None).await.unwrap();
    }
    let keyed = CounterKey::parse("keyed").unwrap();
    stores
        .counters
        .increment(&keyed, 7, Some("inc-key"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_through_dynamodb_keeps_every_record_and_the_numbering_goes_on() {
    let work = tempfile::tempdir().unwrap();
    let (source, back) = (work.path().join("source"), work.path().join("back"));
    fill(&source, 60).await;
    let first = work.path().join("first.jsonl");
    let second = work.path().join("second.jsonl");
    let third = work.path().join("third.jsonl");
    let out = ok(
        &[
            "export",
            "--data-dir",
            source.to_str().unwrap(),
            "--output",
            first.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.contains("records/s"), "{out}");
    let exported = records(&first);
    assert!(check(&exported).is_empty());
    for kind in [
        "kv",
        "class",
        "certificate",
        "certificate_request",
        "widget",
        "counter",
        "counter_request",
    ] {
        assert!(
            exported.iter().any(|r| r.kind() == kind),
            "no {kind} record"
        );
    }
    assert!(
        exported
            .iter()
            .any(|r| matches!(r, Record::Kv { value: None, .. })),
        "tombstones are exported"
    );

    let env = dynamodb_env();
    let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
    let dynamo = ["--store", "dynamodb", "--table-prefix", &prefix];
    let with = |extra: &[&str]| -> Vec<String> {
        dynamo.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let args = with(&["--create-tables", "--input", first.to_str().unwrap()]);
    let mut import: Vec<&str> = vec!["import"];
    import.extend(args.iter().map(String::as_str));
    ok(&import, &env);
    // Not into a store that holds data, unless resuming; resuming writes nothing new.
    let (success, _, stderr) = strata(&import, &env);
    assert!(
        !success && stderr.contains("already holds data"),
        "{stderr}"
    );
    import.push("--resume");
    let out = ok(&import, &env);
    assert!(out.contains(" 0 written"), "{out}");

    let args = with(&["--output", second.to_str().unwrap()]);
    let mut export: Vec<&str> = vec!["export"];
    export.extend(args.iter().map(String::as_str));
    ok(&export, &env);
    assert_eq!(
        records(&second),
        exported,
        "the DynamoDB export equals the first"
    );

    ok(
        &[
            "import",
            "--data-dir",
            back.to_str().unwrap(),
            "--input",
            second.to_str().unwrap(),
        ],
        &[],
    );
    ok(
        &[
            "export",
            "--data-dir",
            back.to_str().unwrap(),
            "--output",
            third.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(records(&third), exported, "and back on the embedded store");

    // On DynamoDB the numbering continues where the source left it, and versions keep growing.
    let client = strata::dynamodb_local::local_client(strata_tests::dynamodb::endpoint()).await;
    let tables = strata::dynamodb_local::create_tables(&client, &prefix)
        .await
        .unwrap();
    let stores = strata_dynamo::stores(client, tables, &Settings::default());
    let next = exported
        .iter()
        .find_map(|r| match r {
            Record::Class {
                class, next_number, ..
            } if class == "CS" => Some(*next_number),
            _ => None,
        })
        .unwrap();
    let request = IssueRequest {
        class: ClassCode::parse("CS").unwrap(),
        name: "after".into(),
        amount: 1,
    };
    assert_eq!(
        stores.ledger.issue(&request, None).await.unwrap().number,
        next
    );
    // A keyed issue made before the export is the same certificate, not a new one.
    let replay = IssueRequest {
        class: ClassCode::parse("CS").unwrap(),
        name: "holder 0".into(),
        amount: 1,
    };
    let again = stores.ledger.issue(&replay, Some("issue-0")).await.unwrap();
    assert_eq!(again.number, 1);
    for (key, expected) in [("key-000002", 4), ("key-000001", 4)] {
        // key-000002 was written three times; key-000001 twice and deleted.
        let key = Key::parse(key).unwrap();
        let version = stores
            .kv
            .put(&key, &Value::parse("new".into()).unwrap())
            .await
            .unwrap();
        assert_eq!(version, expected, "{key:?}");
    }
    // The keyed increment counts nothing more.
    let keyed = CounterKey::parse("keyed").unwrap();
    stores
        .counters
        .increment(&keyed, 7, Some("inc-key"))
        .await
        .unwrap();
    assert_eq!(stores.counters.get(&keyed).await.unwrap(), Some(7));
    let w = stores.widgets.get("w00000a").await.unwrap().unwrap();
    assert_eq!(w.associations, vec![(Port::R, "w00000b".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_with_the_line_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    fill(&source, 12).await;
    let good = work.path().join("good.jsonl");
    ok(
        &[
            "export",
            "--data-dir",
            source.to_str().unwrap(),
            "--output",
            good.to_str().unwrap(),
        ],
        &[],
    );
    let text = std::fs::read_to_string(&good).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let broken_line = lines
        .iter()
        .position(|l| l.contains("\"type\":\"certificate\""))
        .unwrap();
    let cases: Vec<(&str, String, String)> = vec![
        (
            "truncated mid-line",
            text[..text.len() - 10].to_owned(),
            format!("line {}", lines.len()),
        ),
        (
            "truncated at a line",
            lines[..lines.len() - 3].join("\n") + "\n",
            "counts".to_owned(),
        ),
        (
            "a certificate of 0 shares",
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    if i == broken_line {
                        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v["amount"] = json!(0);
                        v.to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n",
            format!("line {}: certificate record", broken_line + 1),
        ),
        (
            "a version from the future",
            text.replacen("\"version\":1", "\"version\":99", 1),
            "line 1: format version 99 is newer".to_owned(),
        ),
    ];
    for (what, contents, expected) in cases {
        let file = work.path().join("bad.jsonl");
        std::fs::write(&file, contents).unwrap();
        let target = work
            .path()
            .join(format!("target-{}", what.replace(' ', "-")));
        let (success, stdout, stderr) = strata(
            &[
                "import",
                "--data-dir",
                target.to_str().unwrap(),
                "--input",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(!success, "{what}: accepted\n{stdout}");
        assert!(stderr.contains(&expected), "{what}: {stderr}");
        assert!(stderr.contains("nothing imported"), "{what}: {stderr}");
        assert!(!target.exists(), "{what}: the target was not even opened");
    }
    // The same on DynamoDB: the tables stay empty.
    let env = dynamodb_env();
    let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
    let file = work.path().join("future.jsonl");
    std::fs::write(&file, text.replacen("\"version\":1", "\"version\":2", 1)).unwrap();
    let (success, _, stderr) = strata(
        &[
            "import",
            "--store",
            "dynamodb",
            "--table-prefix",
            &prefix,
            "--create-tables",
            "--input",
            file.to_str().unwrap(),
        ],
        &env,
    );
    assert!(!success && stderr.contains("newer"), "{stderr}");
    let client = strata::dynamodb_local::local_client(strata_tests::dynamodb::endpoint()).await;
    let tables = strata::dynamodb_local::create_tables(&client, &prefix)
        .await
        .unwrap();
    let port =
        strata_dynamo::transfer::DynamoTransfer::new(client, tables, Settings::default().retention);
    assert!(!port.holds_any(&Service::ALL).await.unwrap());
}

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

/// The long variant: `STRATA_TRANSFER_SCALE` (default 1.0) times 100,000 keys, 50,000 certificates in 3
/// classes, 100,000 widgets with 50,000 associations and 10,000 counters, generated as records, loaded into
/// an embedded store and taken embedded → DynamoDB Local → embedded by the real command, with records/s and
/// the file size of each step printed. Run with `--run-ignored only` (and `--no-capture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: a large data set through DynamoDB Local"]
async fn long_a_large_round_trip_prints_its_throughput() {
    let scale: f64 = std::env::var("STRATA_TRANSFER_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |base: f64| (base * scale).max(2.0) as u64;
    let mut records = Vec::new();
    for i in 0..n(100_000.0) {
        records.push(Record::Kv {
            key: format!("key-{i:07}"),
            version: 1 + i % 5,
            value: (i % 10 != 0).then(|| format!("value {i}")),
        });
    }
    let per_class = n(50_000.0) / 3;
    for class in ["CS", "PS", "XS"] {
        for number in 1..=per_class {
            records.push(Record::Certificate {
                class: class.into(),
                number,
                name: format!("holder {number}"),
                amount: 1 + number % 100,
                issued_at_ms: 1_700_000_000_000 + number,
            });
        }
        let issued: u64 = (1..=per_class).map(|k| 1 + k % 100).sum();
        records.push(Record::Class {
            class: class.into(),
            authorized: issued * 2,
            issued,
            next_number: per_class + 1,
        });
    }
    for i in 0..n(100_000.0) / 2 {
        let (a, b) = (format!("w{i:07}a"), format!("w{i:07}b"));
        for (me, peer) in [(&a, &b), (&b, &a)] {
            records.push(Record::Widget {
                serial: me.clone(),
                name: format!("widget {me}"),
                ports: "PRQ".into(),
                associations: vec![("Q".into(), peer.clone())],
            });
        }
    }
    for i in 0..n(10_000.0) {
        records.push(Record::Counter {
            key: format!("counter {i}"),
            total: i * 3,
            refused: 0,
        });
    }
    strata_core::transfer::canonical(&mut records);
    assert!(check(&records).is_empty());
    let work = tempfile::tempdir().unwrap();
    let (source, back) = (work.path().join("source"), work.path().join("back"));
    {
        let store = strata_embedded::Store::open(&source).unwrap();
        store.transfer().import(records.clone()).await.unwrap();
    }
    let first = work.path().join("first.jsonl");
    let second = work.path().join("second.jsonl");
    let env = dynamodb_env();
    let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
    let timed = |what: &str, args: &[&str], env: &[(String, String)]| {
        let started = Instant::now();
        let out = ok(args, env);
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{what}: {} records in {seconds:.1} s = {:.0} records/s | {}",
            records.len(),
            records.len() as f64 / seconds,
            out.trim()
        );
    };
    let (s, f1, f2, b) = (
        source.to_str().unwrap(),
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        back.to_str().unwrap(),
    );
    let dynamo = ["--store", "dynamodb", "--table-prefix", prefix.as_str()];
    timed(
        "export embedded",
        &["export", "--data-dir", s, "--output", f1],
        &[],
    );
    println!(
        "file size: {} bytes",
        std::fs::metadata(&first).unwrap().len()
    );
    let import: Vec<&str> = ["import"]
        .into_iter()
        .chain(dynamo)
        .chain(["--create-tables", "--input", f1])
        .collect();
    timed("import dynamodb", &import, &env);
    let export: Vec<&str> = ["export"]
        .into_iter()
        .chain(dynamo)
        .chain(["--output", f2])
        .collect();
    timed("export dynamodb", &export, &env);
    timed(
        "import embedded",
        &["import", "--data-dir", b, "--input", f2],
        &[],
    );
    assert_eq!(self::records(&second), records);
}

/// DynamoDB has no snapshot: an export that finds a broken invariant (here a one-sided association, as a
/// scan racing an association could see) lists it and writes no file, unless `--allow-inconsistent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_export_that_breaks_an_invariant_is_refused() {
    let env = dynamodb_env();
    let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
    let client = strata::dynamodb_local::local_client(strata_tests::dynamodb::endpoint()).await;
    let tables = strata::dynamodb_local::create_tables(&client, &prefix)
        .await
        .unwrap();
    let port = strata_dynamo::transfer::DynamoTransfer::new(
        client.clone(),
        tables.clone(),
        Settings::default().retention,
    );
    // Written as records, so each side is its own item: `a` names `b`, `b` does not name `a`.
    let widget = |serial: &str, peers: &[&str]| Record::Widget {
        serial: serial.into(),
        name: serial.into(),
        ports: "P".into(),
        associations: peers
            .iter()
            .map(|p| ("P".to_owned(), p.to_string()))
            .collect(),
    };
    port.import(vec![widget("a", &["b"]), widget("b", &[])])
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("out.jsonl");
    let args = [
        "export",
        "--store",
        "dynamodb",
        "--table-prefix",
        &prefix,
        "--services",
        "widgets",
        "--output",
        file.to_str().unwrap(),
    ];
    let (success, _, stderr) = strata(&args, &env);
    assert!(!success, "{stderr}");
    assert!(stderr.contains("not the other way"), "{stderr}");
    assert!(stderr.contains("nothing written"), "{stderr}");
    assert!(!file.exists());
    let mut args = args.to_vec();
    args.push("--allow-inconsistent");
    ok(&args, &env);
    assert!(file.exists());
    // Such a file is refused by every import.
    let target = work.path().join("target");
    let (success, _, stderr) = strata(
        &[
            "import",
            "--data-dir",
            target.to_str().unwrap(),
            "--input",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!success && stderr.contains("invariants"), "{stderr}");
}

/// `GET /admin/export` is behind `--auth-token` like every route: `strata export --server` needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_endpoint_needs_the_token() {
    let work = tempfile::tempdir().unwrap();
    let token = "a-long-enough-export-token-0123456789";
    let server = Server::start(
        crate::STRATA,
        &work.path().join("live"),
        &["--auth-token", token],
    );
    let file = work.path().join("out.jsonl");
    let args = [
        "export",
        "--server",
        &server.base,
        "--output",
        file.to_str().unwrap(),
    ];
    let (success, _, stderr) = strata(&args, &[]);
    assert!(!success && stderr.contains("401"), "{stderr}");
    assert!(!file.exists());
    ok(&args, &[("STRATA_AUTH_TOKEN".to_owned(), token.to_owned())]);
    assert!(read(std::io::BufReader::new(std::fs::File::open(&file).unwrap())).is_ok());
}

/// An import that stopped half-way (as a crash leaves it: some records written, the rest not) is finished
/// by `--resume`: the missing records are written, those there are accepted, nothing is duplicated, and the
/// result is the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_import_is_finished_by_resume_without_duplicates() {
    let work = tempfile::tempdir().unwrap();
    let (source, target) = (work.path().join("source"), work.path().join("target"));
    fill(&source, 30).await;
    let file = work.path().join("all.jsonl");
    ok(
        &[
            "export",
            "--data-dir",
            source.to_str().unwrap(),
            "--output",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let all = records(&file);
    {
        let store = strata_embedded::Store::open(&target).unwrap();
        let half: Vec<Record> = all.iter().step_by(2).cloned().collect();
        store.transfer().import(half).await.unwrap();
    }
    let import = [
        "import",
        "--data-dir",
        target.to_str().unwrap(),
        "--input",
        file.to_str().unwrap(),
    ];
    let (success, _, stderr) = strata(&import, &[]);
    assert!(
        !success && stderr.contains("already holds data"),
        "{stderr}"
    );
    let mut resume = import.to_vec();
    resume.push("--resume");
    let out = ok(&resume, &[]);
    let written = all.len() - all.len().div_ceil(2);
    assert!(
        out.contains(&format!(
            "{written} written, {} already there",
            all.len().div_ceil(2)
        )),
        "{out}"
    );
    let store = strata_embedded::Store::open(&target).unwrap();
    let now = store.transfer().export(&Service::ALL).await.unwrap();
    assert_eq!(now, all);
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

/// Runs `strata <args>` off the runtime's threads (the fault proxy runs on them).
async fn strata_async(args: Vec<String>, env: Vec<(String, String)>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        strata(&args, &env)
    })
    .await
    .unwrap()
}

/// `strata import --store dynamodb` and `strata export --store dynamodb` through lost answers: puts applied
/// whose answer is a `500` or is cut mid-body, and scans (the export's pages, several per table here) whose
/// answers are lost the same ways. The import, resumed until it succeeds, and the export end with every
/// record exactly once: the file read back equals the file written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_and_export_on_dynamodb_survive_lost_answers_with_every_record_once() {
    use strata_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    fill(&source, 60).await;
    {
        // Values big enough that the key/value table's scan takes several 1 MB pages.
        let store = strata_embedded::Store::open(&source).unwrap();
        let stores = store.stores(&Settings::default());
        let big = Value::parse("b".repeat(200 * 1024)).unwrap();
        for i in 0..12 {
            let key = Key::parse(&format!("big-{i:02}")).unwrap();
            stores.kv.put(&key, &big).await.unwrap();
        }
    }
    let first = work.path().join("first.jsonl");
    ok(
        &[
            "export",
            "--data-dir",
            source.to_str().unwrap(),
            "--output",
            first.to_str().unwrap(),
        ],
        &[],
    );
    let exported = records(&first);

    let lost = [FaultKind::AppliedThen500, FaultKind::ResetMidAnswer];
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        29,
        FaultConfig::split(0.1, &lost).on(&["PutItem"]),
    )
    .await;
    let mut env = dynamodb_env();
    env[0].1 = proxy.url.clone();
    let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
    let dynamo = |extra: &[&str]| -> Vec<String> {
        ["--store", "dynamodb", "--table-prefix", &prefix]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let mut import = vec!["import".to_owned()];
    import.extend(dynamo(&[
        "--create-tables",
        "--input",
        first.to_str().unwrap(),
    ]));
    let mut runs = 0;
    loop {
        runs += 1;
        let (success, stdout, stderr) = strata_async(import.clone(), env.clone()).await;
        if success {
            break;
        }
        // Only ever a store that did not answer, never a conflict with its own writes.
        assert!(
            runs < 10 && !stderr.contains("import_conflict") && stderr.contains("--resume"),
            "import run {runs}:\n{stdout}\n{stderr}"
        );
        if runs == 1 {
            import.push("--resume".to_owned());
        }
    }
    let stats = proxy.stats();
    for kind in lost {
        assert!(stats.faults_of(kind) > 0, "no {} injected", kind.name());
    }

    // The export's scans and its key/value batch reads lose answers the same ways; each page or batch is
    // retried from where it was. A proxy of its own: its draws depend on the export's reads alone, which
    // run one after another.
    drop(proxy);
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        7,
        FaultConfig::split(0.5, &lost).on(&["Scan"]),
    )
    .await;
    env[0].1 = proxy.url.clone();
    let second = work.path().join("second.jsonl");
    let mut export = vec!["export".to_owned()];
    export.extend(dynamo(&["--output", second.to_str().unwrap()]));
    let (success, stdout, stderr) = strata_async(export, env.clone()).await;
    assert!(success, "{stdout}\n{stderr}");
    let stats = proxy.stats();
    for kind in lost {
        assert!(
            stats.faults_of(kind) > 0,
            "no {} injected on scans",
            kind.name()
        );
    }
    let scans = stats.requests("Scan");
    assert!(scans > 12, "{scans} scans: several pages");
    assert_eq!(records(&second), exported, "every record once, as written");

    // The key/value values are read back in batches after the keys' scan: a batch whose answer is lost
    // is asked again.
    for kind in lost {
        proxy.set(
            FaultConfig::only(kind, 1.0)
                .on(&["BatchGetItem"])
                .at_most(1),
        );
        proxy.reset_stats();
        let third = work.path().join(format!("third-{}.jsonl", kind.name()));
        let mut export = vec!["export".to_owned()];
        export.extend(dynamo(&["--output", third.to_str().unwrap()]));
        let (success, stdout, stderr) = strata_async(export, env.clone()).await;
        assert!(success, "{stdout}\n{stderr}");
        let stats = proxy.stats();
        assert_eq!(
            stats
                .faults_by_operation
                .get(&(kind, "BatchGetItem".to_owned())),
            Some(&1),
            "{stats}"
        );
        assert_eq!(records(&third), exported, "every record once, as written");
    }
}
