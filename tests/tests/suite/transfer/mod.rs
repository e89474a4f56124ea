//! `strata export`, `strata import` and `strata backup` (docs/export-format.md), through the real command:
//! a round trip embedded → DynamoDB Local → embedded, bad files refused with nothing written, and a backup
//! of a running server under load that restores to exactly the acknowledged writes up to its moment.

mod faults;
mod refusals;
mod server;

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
