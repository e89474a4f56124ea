//! Certificates: one certificate per issue whatever write loses its answer, gapless numbers, capped
//! pending entries, expired idempotency records, long listings.

use super::*;

async fn put_class(app: &App, class: &str, authorized: u64) {
    let r = app
        .put(
            &format!("/share-classes/{class}"),
            json!({"authorized": authorized}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// The whole listing of a class (one page of up to 1,000).
async fn listing(app: &App, class: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/certificates?class={class}&limit=1000"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["certificates"].as_array().unwrap().clone()
}

fn assert_gapless(certificates: &[Value], what: &str) {
    let numbers: Vec<u64> = certificates
        .iter()
        .map(|c| c["number"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "{what}: gapless from 1");
}

/// Each of an issue's writes (intent, allocation, certificate, the key's record, the slot's removal) with
/// its answer lost after it applied, as a `500` and as an answer held past the attempt's timeout: the SDK's
/// retry finds the write done, and the issue makes exactly one certificate; the numbering stays gapless,
/// the class item keeps no slot, and the same key at the ledger gets the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_issue_with_a_lost_answer_on_each_of_its_writes_makes_one_certificate() {
    let t = setup().await;
    put_class(t.app(), "CS", 1000).await;
    let ledger_table = t.through.tables.ledger.clone();
    // (write, operation, text only its request body holds, keyed issues only)
    let writes = [
        ("intent", "PutItem", "#", false),
        ("allocation", "UpdateItem", ":cap", false),
        ("certificate", "PutItem", "cert#CS", false),
        ("record", "UpdateItem", ":number", true),
        ("removal", "UpdateItem", "REMOVE #pnum", false),
    ];
    let mut issued = Vec::new();
    for (write, operation, text, keyed_only) in writes {
        for kind in [FaultKind::AppliedThen500, FaultKind::AppliedThenDelayed] {
            for keyed in [false, true] {
                if keyed_only && !keyed {
                    continue;
                }
                // The intent's key is `int#…` or `req#…`: its body is told apart by that.
                let text = match (write, keyed) {
                    ("intent", false) => "int#",
                    ("intent", true) => "req#",
                    _ => text,
                };
                let name = format!("{write} {kind} keyed={keyed}");
                let key = format!("k-{write}-{kind}");
                t.proxy.reset_stats();
                t.proxy.set(
                    FaultConfig::only(kind, 1.0)
                        .on(&[operation])
                        .on_tables(&[&ledger_table])
                        .matching(text)
                        .at_most(1),
                );
                let body = json!({"name": name, "amount": 1, "class": "CS"});
                let r = t
                    .app()
                    .send(request(
                        Method::POST,
                        "/certificates",
                        keyed.then_some(key.as_str()),
                        &body,
                    ))
                    .await;
                t.proxy.set(FaultConfig::healthy());
                assert_eq!(t.proxy.stats().faults_of(kind), 1, "{name}: the fault hit");
                assert_eq!(r.status, StatusCode::CREATED, "{name}: {:?}", r.body);
                assert_eq!(r.body["name"], name.as_str());
                let number = r.body["number"].as_u64().unwrap();
                if keyed {
                    // The ledger's own record of the key (no HTTP record in front of it).
                    let again = t
                        .through
                        .fixture
                        .stores
                        .ledger
                        .issue(
                            &strata_core::certificates::IssueRequest {
                                class: strata_core::certificates::ClassCode::parse("CS").unwrap(),
                                name: name.clone(),
                                amount: 1,
                            },
                            Some(&format!("certificates-issue:{key}")),
                        )
                        .await
                        .unwrap();
                    assert_eq!(again.number, number, "{name}: the same certificate again");
                }
                issued.push((number, name));
            }
        }
    }
    let all = listing(t.app(), "CS").await;
    assert_gapless(&all, "CS");
    assert_eq!(
        all.len(),
        issued.len(),
        "one certificate per issue: {all:?}"
    );
    for (number, name) in &issued {
        assert_eq!(all[*number as usize - 1]["name"], name.as_str(), "{all:?}");
    }
    let class = t.app().get("/share-classes/CS").await.body;
    assert_eq!(class["issued"], issued.len(), "{class:?}");
    let item = t
        .through
        .direct
        .get_item()
        .table_name(&ledger_table)
        .key("pk", AttributeValue::S("class#CS".into()))
        .key("n", AttributeValue::N("0".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        item["pnum"].as_m().unwrap().len(),
        0,
        "every issue removed its slot: {item:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_issue_with_a_delayed_allocation_answer_makes_one_certificate_while_listed() {
    let t = setup().await;
    put_class(t.app(), "CS", 1000).await;
    t.proxy.set(
        FaultConfig::only(FaultKind::AppliedThenDelayed, 1.0)
            .on(&["UpdateItem"])
            .at_most(1),
    );
    let app = t.app().clone();
    let issue = tokio::spawn(async move {
        app.post(
            "/certificates",
            json!({"name": "delayed", "amount": 3, "class": "CS"}),
        )
        .await
    });
    // The allocation reaches DynamoDB at once; its answer comes 3.5 s later, after the SDK's retry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut reads = 0;
    while started.elapsed() < Duration::from_millis(3800) && !issue.is_finished() {
        let r = t.app().get("/certificates?class=CS").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let class = t.app().get("/share-classes/CS").await;
        assert_eq!(class.status, StatusCode::OK, "{:?}", class.body);
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = issue.await.unwrap();
    t.proxy.set(FaultConfig::healthy());
    println!(
        "{} {:?} after {reads} listings\n{}",
        r.status,
        r.body,
        t.proxy.stats()
    );
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThenDelayed), 1);
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let all = listing(t.app(), "CS").await;
    let ours = all.iter().filter(|c| c["name"] == "delayed").count();
    assert_eq!(ours, 1, "one certificate for the one request: {all:?}");
    assert_gapless(&all, "CS");
    let class = t.app().get("/share-classes/CS").await.body;
    assert_eq!(
        (&class["issued"], &class["next_number"]),
        (&json!(3), &json!(2)),
        "{class:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_issue_whose_certificate_write_fails_answers_201_and_the_certificate_appears() {
    let t = setup().await;
    let app = t.app();
    put_class(app, "CS", 1000).await;
    // The certificate's own write (its item is `cert#CS`) fails, after the number is allocated.
    t.proxy.set(
        FaultConfig::only(FaultKind::Before500, 1.0)
            .on(&["PutItem"])
            .matching("cert#CS"),
    );
    let r = app
        .post(
            "/certificates",
            json!({"name": "kept", "amount": 5, "class": "CS"}),
        )
        .await;
    t.proxy.set(FaultConfig::healthy());
    assert!(t.proxy.stats().faults_of(FaultKind::Before500) >= 1);
    assert_eq!(
        (r.status, &r.body["id"], &r.body["name"], &r.body["amount"]),
        (
            StatusCode::CREATED,
            &json!("CS-1"),
            &json!("kept"),
            &json!(5)
        ),
        "the number is allocated, so the certificate is issued: {:?}",
        r.body
    );
    let got = app.get("/certificates/CS-1").await;
    assert_eq!(
        (got.status, &got.body["name"], &got.body["amount"]),
        (StatusCode::OK, &json!("kept"), &json!(5)),
        "{:?}",
        got.body
    );
    let all = listing(app, "CS").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_gapless(&all, "CS");
    let class = app.get("/share-classes/CS").await.body;
    assert_eq!(class["issued"], 5, "{class:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_pending_entries_are_capped_while_certificate_writes_fail() {
    let cap = strata_dynamo::ledger::MAX_PENDING;
    let t = setup().await;
    put_class(t.app(), "CS", 100_000).await;
    t.proxy.set(
        FaultConfig::only(FaultKind::Before500, 1.0)
            .on(&["PutItem"])
            .matching("cert#CS"),
    );
    // 16 in flight at a time: enough to fill the cap quickly, not so many that DynamoDB Local, shared by the
    // whole run, slows every other test past its attempt timeouts.
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..70 {
        let app = t.app().clone();
        let in_flight = in_flight.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await.unwrap();
            let started = Instant::now();
            let r = app
                .post(
                    "/certificates",
                    json!({"name": format!("holder {i}"), "amount": 1, "class": "CS"}),
                )
                .await;
            println!(
                "issue {i}: {} after {:?}: {}",
                r.status,
                started.elapsed(),
                r.body
            );
            (i, r)
        }));
    }
    let mut issued = BTreeSet::new();
    let mut refused = 0;
    for task in tasks {
        let (i, r) = task.await.unwrap();
        match r.status {
            StatusCode::CREATED => {
                issued.insert(r.body["id"].as_str().unwrap().to_owned());
            }
            _ => {
                assert_unavailable(&r, &format!("issue {i}"));
                refused += 1;
            }
        }
    }
    println!(
        "{} answered 201, {refused} answered 503\n{}",
        issued.len(),
        t.proxy.stats()
    );
    assert!(issued.len() <= cap, "{} answered 201", issued.len());
    assert_eq!(issued.len() + refused, 70);
    // The class item as DynamoDB holds it.
    let class = t
        .through
        .direct
        .get_item()
        .table_name(&t.through.tables.ledger)
        .key("pk", AttributeValue::S("class#CS".into()))
        .key("n", AttributeValue::N("0".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the class item");
    let pending = class
        .get("pnum")
        .and_then(|p| p.as_m().ok())
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(pending, cap, "the class item is full");
    // Full, it still takes 1 WRU a write: under 1 KB (DynamoDB's item size: names and values).
    let size: usize = class.iter().map(|(k, v)| k.len() + dynamo_size(v)).sum();
    assert!(size < 1024, "the class item is {size} bytes: {class:?}");
    t.proxy.set(FaultConfig::healthy());
    let all = listing(t.app(), "CS").await;
    assert_gapless(&all, "CS");
    let listed: BTreeSet<String> = all
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        issued.is_subset(&listed),
        "every 201 certificate is listed: missing {:?}",
        issued.difference(&listed).collect::<Vec<_>>()
    );
    // An issue may also answer 503 "outcome unknown" after its number was allocated (under this load an
    // allocation can outlast its attempt): listed then, but never more than the cap allowed to allocate.
    assert!(all.len() <= cap, "{} numbers allocated", all.len());
}

/// Deletes every idempotency record, as the table's TTL does when they expire: what remains is the
/// ledger's own record of the key.
async fn expire_idempotency_records(t: &Setup) {
    let direct = &t.through.direct;
    let table = &t.through.tables.idempotency;
    let items = direct
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert!(!items.is_empty(), "the key's record is there");
    for item in items {
        direct
            .delete_item()
            .table_name(table)
            .key("id", item["id"].clone())
            .send()
            .await
            .unwrap();
    }
}

/// A keyed issue, then its idempotency record gone.
async fn issued_with_key_then_record_expired(t: &Setup, body: &Value) {
    let r = t
        .app()
        .send(request(Method::POST, "/certificates", Some("k-1"), body))
        .await;
    assert_eq!(
        (r.status, &r.body["id"]),
        (StatusCode::CREATED, &json!("CS-1"))
    );
    expire_idempotency_records(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_key_reused_with_another_body_is_422_after_its_idempotency_record_expired() {
    let t = setup().await;
    let app = t.app();
    issued_with_key_then_record_expired(&t, &json!({"name": "first", "amount": 3, "class": "CS"}))
        .await;
    let other = json!({"name": "second", "amount": 4, "class": "CS"});
    let r = app
        .send(request(Method::POST, "/certificates", Some("k-1"), &other))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        "{:?}",
        r.body
    );
    let all = listing(app, "CS").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(app.get("/share-classes/CS").await.body["issued"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_keyed_retry_after_its_idempotency_record_expired_gets_the_same_certificate() {
    let t = setup().await;
    let app = t.app();
    let body = json!({"name": "first", "amount": 3, "class": "CS"});
    issued_with_key_then_record_expired(&t, &body).await;
    let r = app
        .send(request(Method::POST, "/certificates", Some("k-1"), &body))
        .await;
    assert_eq!(
        (r.status, &r.body["id"], &r.body["name"]),
        (StatusCode::CREATED, &json!("CS-1"), &json!("first")),
        "{:?}",
        r.body
    );
    let all = listing(app, "CS").await;
    assert_eq!(all.len(), 1, "one certificate for one key: {all:?}");
    assert_eq!(app.get("/share-classes/CS").await.body["issued"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_listing_of_1000_with_long_names_returns_all_1000_past_a_1_mb_query_page() {
    let t = setup().await;
    put_class(t.app(), "X", 100_000).await;
    let name = "𝄞".repeat(256);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = t.app().clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..125 {
                // Keyed, so that a retry after a 5xx never makes a second certificate.
                let key = format!("w{worker}-{i}");
                let body = json!({"name": name, "amount": 1, "class": "X"});
                let mut tries = 0;
                loop {
                    let r = app
                        .send(request(Method::POST, "/certificates", Some(&key), &body))
                        .await;
                    if r.status == StatusCode::CREATED {
                        break;
                    }
                    tries += 1;
                    assert!(
                        tries < 5
                            && (r.status.is_server_error() || r.status == StatusCode::CONFLICT),
                        "{key}: {} {:?}",
                        r.status,
                        r.body
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!("1000 issued in {:?}", started.elapsed());
    let class = t.app().get("/share-classes/X").await.body;
    assert_eq!(class["next_number"], 1001, "{class:?}");
    let r = t.app().get("/certificates?class=X&limit=1000").await;
    assert_eq!(r.status, StatusCode::OK);
    let all = r.body["certificates"].as_array().unwrap();
    assert_eq!(all.len(), 1000, "the whole page");
    assert_gapless(all, "X");
    assert!(all.iter().all(|c| c["name"] == json!(name)));
    assert_eq!(r.body["next_after"], Value::Null, "the last page");
    let r = t.app().get("/certificates?class=X&limit=999").await;
    let page = r.body["certificates"].as_array().unwrap();
    assert_eq!(
        (page.len(), &r.body["next_after"]),
        (999, &json!(999)),
        "a page short of the end says where the next one starts"
    );
    let r = t
        .app()
        .get("/certificates?class=X&after=999&limit=1000")
        .await;
    let page = r.body["certificates"].as_array().unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(
        (&page[0]["number"], &r.body["next_after"]),
        (&json!(1000), &Value::Null)
    );
}

/// An attribute value's size as DynamoDB counts it: strings by their bytes, numbers about one byte per two
/// digits plus one, maps 3 bytes plus their names and values, 1 byte per element.
fn dynamo_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + dynamo_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        other => panic!("unexpected attribute {other:?}"),
    }
}
