//! What is refused: bad files (with their line, nothing written), a DynamoDB export that breaks an
//! invariant, an export endpoint asked without the token.

use super::*;

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
