//! Certificates: one certificate per issue whatever write loses its answer, gapless numbers, capped
//! pending entries, expired idempotency records, long listings.

use super::*;
use std::collections::HashMap;
use strata_core::certificates::{ClassCode, IssueRequest, Ledger};
use strata_core::idempotency::Claim;
use strata_dynamo::ledger::DynamoLedger;

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

/// Each of an issue's writes (intent, allocation, certificate, the slot's removal, which a keyed issue makes
/// once its answer is recorded) with its answer lost after it applied, as a `500` and as an answer held past
/// the attempt's timeout: the SDK's retry finds the write done, and the issue makes exactly one
/// certificate; the numbering stays gapless, the class item keeps no slot, and a retry with the same key
/// gets the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_issue_with_a_lost_answer_on_each_of_its_writes_makes_one_certificate() {
    let t = setup().await;
    put_class(t.app(), "CS", 1000).await;
    let ledger_table = t.through.tables.ledger.clone();
    // (write, operation, text only its request body holds)
    let writes = [
        ("intent", "PutItem", "#"),
        ("allocation", "UpdateItem", ":cap"),
        ("certificate", "PutItem", "cert#CS"),
        ("removal", "UpdateItem", "REMOVE #pnum"),
    ];
    let mut issued = Vec::new();
    for (write, operation, text) in writes {
        for kind in [FaultKind::AppliedThen500, FaultKind::AppliedThenDelayed] {
            for keyed in [false, true] {
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
                    let again = t
                        .app()
                        .send(request(Method::POST, "/certificates", Some(&key), &body))
                        .await;
                    assert_eq!(
                        (again.status, &again.body["number"]),
                        (StatusCode::CREATED, &json!(number)),
                        "{name}: the same certificate again"
                    );
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

/// Deletes every idempotency record: claims still held expire so (a claim past its expiry is taken over as
/// if it were absent).
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

/// The key the HTTP layer hands the ledger for an `Idempotency-Key` of `POST /certificates` (the local
/// server has no caller to scope it to).
fn scoped(key: &str) -> String {
    format!("certificates-issue:{key}")
}

fn issue_request(body: &Value) -> IssueRequest {
    IssueRequest {
        class: ClassCode::parse(body["class"].as_str().unwrap()).unwrap(),
        name: body["name"].as_str().unwrap().to_owned(),
        amount: body["amount"].as_u64().unwrap(),
    }
}

/// A keyed issue whose request died after the ledger issued its certificate and before its answer was
/// recorded: what the HTTP layer does up to there (the claim, the ledger's issue), without the ledger ever
/// hearing how the request ended. Its number.
async fn issued_by_a_request_that_died(
    t: &Setup,
    ledger: &dyn Ledger,
    key: &str,
    body: &Value,
) -> u64 {
    let claim = t
        .through
        .fixture
        .stores
        .idempotency
        .claim(&scoped(key), "fingerprint")
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Proceed(_)), "{claim:?}");
    ledger
        .issue(&issue_request(body), Some(&scoped(key)))
        .await
        .unwrap()
        .number
}

/// The class item as DynamoDB holds it.
async fn class_item(t: &Setup, class: &str) -> HashMap<String, AttributeValue> {
    t.through
        .direct
        .get_item()
        .table_name(&t.through.tables.ledger)
        .key("pk", AttributeValue::S(format!("class#{class}")))
        .key("n", AttributeValue::N("0".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the class item")
}

/// The numbers allocated whose slot is still in the class item.
async fn slotted(t: &Setup, class: &str) -> BTreeSet<u64> {
    class_item(t, class).await["pnum"]
        .as_m()
        .unwrap()
        .values()
        .map(|v| v.as_n().unwrap().parse().unwrap())
        .collect()
}

/// The number the ledger's record of `key` (the keyed issue's intent) holds, if any.
async fn number_in_the_record(t: &Setup, key: &str) -> Option<u64> {
    let items = t
        .through
        .direct
        .scan()
        .table_name(&t.through.tables.ledger)
        .filter_expression("#id = :id")
        .expression_attribute_names("#id", "id")
        .expression_attribute_values(":id", AttributeValue::S(format!("r{}", scoped(key))))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), 1, "one record of the key: {items:?}");
    items[0]
        .get("number")
        .map(|n| n.as_n().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_key_reused_with_another_body_is_422_after_the_request_died_unrecorded() {
    let t = setup().await;
    let app = t.app();
    let first = json!({"name": "first", "amount": 3, "class": "CS"});
    let ledger = t.through.fixture.stores.ledger.as_ref();
    assert_eq!(
        issued_by_a_request_that_died(&t, ledger, "k-1", &first).await,
        1
    );
    expire_idempotency_records(&t).await;
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

/// A keyed issue whose request died after its certificate was written and before its answer was recorded:
/// the ledger never heard how it ended, so its slot stays. Once the claim on the key expired, a retry with
/// the key gets the same certificate and takes no second number, both while the slot is there and after
/// recovery gave the intent its number and removed the slot. One request died in this process (its future
/// dropped), the other with its process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_keyed_retry_after_the_request_died_unrecorded_gets_the_same_certificate() {
    let t = setup().await;
    let app = t.app();
    let first = json!({"name": "first", "amount": 3, "class": "CS"});
    let second = json!({"name": "second", "amount": 4, "class": "CS"});
    let here = t.through.fixture.stores.ledger.as_ref();
    let settings = Settings::default();
    let elsewhere = DynamoLedger::new(
        t.through.direct.clone(),
        t.through.tables.ledger.clone(),
        settings.default_classes.clone(),
        settings.retention,
    );
    assert_eq!(
        issued_by_a_request_that_died(&t, here, "k-1", &first).await,
        1
    );
    assert_eq!(
        issued_by_a_request_that_died(&t, &elsewhere, "k-2", &second).await,
        2
    );
    assert_eq!(slotted(&t, "CS").await, BTreeSet::from([1, 2]));
    assert_eq!(number_in_the_record(&t, "k-1").await, None);
    assert_eq!(number_in_the_record(&t, "k-2").await, None);
    expire_idempotency_records(&t).await;

    // The slot is there.
    let r = app
        .send(request(Method::POST, "/certificates", Some("k-1"), &first))
        .await;
    assert_eq!(
        (r.status, &r.body["id"], &r.body["name"]),
        (StatusCode::CREATED, &json!("CS-1"), &json!("first")),
        "{:?}",
        r.body
    );

    // Past the grace, the next issue of the class finishes the slot it finds: the certificate (written
    // already), the intent's number, then the slot's removal.
    tokio::time::sleep(strata_dynamo::ledger::GRACE + Duration::from_millis(500)).await;
    let r = app
        .post(
            "/certificates",
            json!({"name": "third", "amount": 1, "class": "CS"}),
        )
        .await;
    assert_eq!(r.body["id"], "CS-3", "{:?}", r.body);
    assert_eq!(slotted(&t, "CS").await, BTreeSet::new());
    assert_eq!(number_in_the_record(&t, "k-2").await, Some(2));
    let r = app
        .send(request(Method::POST, "/certificates", Some("k-2"), &second))
        .await;
    assert_eq!(
        (r.status, &r.body["id"], &r.body["name"]),
        (StatusCode::CREATED, &json!("CS-2"), &json!("second")),
        "{:?}",
        r.body
    );
    let all = listing(app, "CS").await;
    assert_gapless(&all, "CS");
    assert_eq!(all.len(), 3, "one certificate per key: {all:?}");
    assert_eq!(app.get("/share-classes/CS").await.body["issued"], 3 + 4 + 1);
}

/// A keyed issue whose answer is not recorded (the HTTP layer released the key, or could not write the
/// record): the ledger gives the intent its number, then removes the slot. Each of those writes with its
/// answer lost after it applied, as a `500` and as an answer held past the attempt's timeout: the SDK's
/// retry finds it done, the slot goes, the intent holds the number, and a retry with the key at the ledger
/// (what runs once the claim expired) gets the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_unrecorded_answer_with_a_lost_answer_on_each_write_keeps_the_number() {
    let t = setup().await;
    let ledger = t.through.fixture.stores.ledger.as_ref();
    let ledger_table = t.through.tables.ledger.clone();
    let mut issued = 0;
    for (write, text) in [("number", ":number"), ("removal", "REMOVE #pnum")] {
        for kind in [FaultKind::AppliedThen500, FaultKind::AppliedThenDelayed] {
            let name = format!("{write} {kind}");
            let key = format!("k-{write}-{kind}");
            let body = json!({"name": name, "amount": 1, "class": "CS"});
            let number = issued_by_a_request_that_died(&t, ledger, &key, &body).await;
            issued += 1;
            assert_eq!(number, issued, "{name}");
            t.proxy.reset_stats();
            t.proxy.set(
                FaultConfig::only(kind, 1.0)
                    .on(&["UpdateItem"])
                    .on_tables(&[&ledger_table])
                    .matching(text)
                    .at_most(1),
            );
            ledger.settled(&scoped(&key), false).await;
            t.proxy.set(FaultConfig::healthy());
            assert_eq!(t.proxy.stats().faults_of(kind), 1, "{name}: the fault hit");
            assert_eq!(slotted(&t, "CS").await, BTreeSet::new(), "{name}");
            assert_eq!(number_in_the_record(&t, &key).await, Some(number), "{name}");
            expire_idempotency_records(&t).await;
            let again = ledger
                .issue(&issue_request(&body), Some(&scoped(&key)))
                .await
                .unwrap();
            assert_eq!(again.number, number, "{name}: the same certificate again");
        }
    }
    let all = listing(t.app(), "CS").await;
    assert_gapless(&all, "CS");
    assert_eq!(all.len() as u64, issued, "{all:?}");
}

/// A keyed issue whose answer's record cannot be written: the client still gets its certificate, and the
/// ledger, told the answer is not recorded, gives the intent its number before it removes the slot, so a
/// retry once the claim expired gets the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_keyed_issue_whose_answer_is_not_recorded_keeps_its_number_for_a_retry() {
    let t = setup().await;
    let app = t.app();
    let body = json!({"name": "unrecorded", "amount": 2, "class": "CS"});
    // The record's write (`complete`) fails on every attempt.
    t.proxy.set(
        FaultConfig::only(FaultKind::Before500, 1.0)
            .on(&["UpdateItem"])
            .on_tables(&[&t.through.tables.idempotency])
            .matching(":completed"),
    );
    let r = app
        .send(request(Method::POST, "/certificates", Some("k-1"), &body))
        .await;
    t.proxy.set(FaultConfig::healthy());
    assert!(t.proxy.stats().faults_of(FaultKind::Before500) >= 1);
    assert_eq!(
        (r.status, &r.body["id"]),
        (StatusCode::CREATED, &json!("CS-1")),
        "{:?}",
        r.body
    );
    assert_eq!(slotted(&t, "CS").await, BTreeSet::new());
    assert_eq!(number_in_the_record(&t, "k-1").await, Some(1));
    // The claim is still held, until it expires.
    expire_idempotency_records(&t).await;
    let r = app
        .send(request(Method::POST, "/certificates", Some("k-1"), &body))
        .await;
    assert_eq!(
        (r.status, &r.body["id"]),
        (StatusCode::CREATED, &json!("CS-1")),
        "{:?}",
        r.body
    );
    assert_eq!(listing(app, "CS").await.len(), 1);
    assert_eq!(app.get("/share-classes/CS").await.body["issued"], 2);
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
