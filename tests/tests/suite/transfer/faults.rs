//! Interrupted transfers: an import finished by `--resume`, and both directions through lost answers.

use super::*;

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
