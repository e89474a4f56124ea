//! The stock-certificate ledger (CONTRACT.md §2) on every backend: gapless numbering, share limits, validation,
//! idempotency, and many concurrent clients.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use strata_tests::contract;
use strata_tests::fixture::{App, Fixture, Reply};

contract!(
    default_classes_exist_from_the_first_start,
    numbers_are_sequential_per_class_and_listed_in_order,
    bad_input_is_refused_and_uses_no_number,
    short_of_shares_is_409_with_what_remains_and_uses_no_number,
    classes_are_created_and_reauthorized_but_never_below_issued,
    idempotent_retries_return_the_original_certificate,
    concurrent_retries_with_one_key_issue_one_certificate,
    many_clients_get_gapless_numbers_and_a_class_runs_out_exactly,
);

async fn issue(app: &App, class: &str, name: &str, amount: u64) -> Reply {
    app.post(
        "/certificates",
        json!({"name": name, "amount": amount, "class": class}),
    )
    .await
}

async fn issue_with_key(app: &App, key: &str, body: Value) -> Reply {
    app.post_keyed("/certificates", key, body).await
}

async fn class(app: &App, class: &str) -> Value {
    let r = app.get(&format!("/share-classes/{class}")).await;
    assert_eq!(r.status, StatusCode::OK, "{class}: {:?}", r.body);
    r.body
}

/// Every certificate of a class, through the paged listing.
async fn all_certificates(app: &App, class: &str, page: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let r = app
            .get(&format!(
                "/certificates?class={class}&after={after}&limit={page}"
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        out.extend(r.body["certificates"].as_array().unwrap().iter().cloned());
        match r.body["next_after"].as_u64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// The ledger's invariant: numbers exactly 1..=n, each stored, amounts adding up to `issued`.
async fn assert_gapless(app: &App, code: &str) -> Vec<Value> {
    let certificates = all_certificates(app, code, 37).await;
    let numbers: Vec<u64> = certificates
        .iter()
        .map(|c| c["number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (1..=numbers.len() as u64).collect::<Vec<_>>(),
        "{code}: numbers are 1..=n in order"
    );
    let sum: u64 = certificates
        .iter()
        .map(|c| c["amount"].as_u64().unwrap())
        .sum();
    let c = class(app, code).await;
    assert_eq!(c["issued"], sum, "{code}: amounts add up to issued");
    assert_eq!(c["next_number"], numbers.len() as u64 + 1);
    assert_eq!(
        c["remaining"].as_u64().unwrap() + sum,
        c["authorized"].as_u64().unwrap()
    );
    for certificate in certificates.iter().step_by(50) {
        let id = certificate["id"].as_str().unwrap();
        assert_eq!(
            &app.get(&format!("/certificates/{id}")).await.body,
            certificate
        );
    }
    certificates
}

async fn default_classes_exist_from_the_first_start(f: Fixture) {
    assert_eq!(
        class(&f.app, "CS").await,
        json!({"class": "CS", "authorized": 2_600_000, "issued": 0, "remaining": 2_600_000, "next_number": 1})
    );
    assert_eq!(class(&f.app, "PS").await["authorized"], 750_000);
    let r = f.app.get("/share-classes/XX").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "class_not_found")
    );
    let r = f.app.get("/share-classes/cs").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_class")
    );
}

async fn numbers_are_sequential_per_class_and_listed_in_order(f: Fixture) {
    let app = &f.app;
    let r = issue(app, "CS", "Salt Bae", 10).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["id"], "CS-1");
    assert_eq!(
        (
            &r.body["class"],
            &r.body["number"],
            &r.body["name"],
            &r.body["amount"]
        ),
        (&json!("CS"), &json!(1), &json!("Salt Bae"), &json!(10))
    );
    assert!(r.body["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        issue(app, "PS", "Ünïcødé Holder 🚀", 5).await.body["id"],
        "PS-1"
    );
    for n in 2..=7 {
        assert_eq!(
            issue(app, "CS", &format!("holder {n}"), n).await.body["id"],
            format!("CS-{n}")
        );
    }
    let got = app.get("/certificates/PS-1").await;
    assert_eq!(
        (got.status, &got.body["name"]),
        (StatusCode::OK, &json!("Ünïcødé Holder 🚀"))
    );
    for missing in ["CS-8", "PS-2", "XX-1", "CS-0", "cs-1", "nonsense"] {
        let r = app.get(&format!("/certificates/{missing}")).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "certificate_not_found"),
            "{missing}"
        );
    }
    let r = app.get("/certificates?class=CS&limit=3").await;
    let ids: Vec<&str> = r.body["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (ids, &r.body["next_after"]),
        (vec!["CS-1", "CS-2", "CS-3"], &json!(3))
    );
    let r = app.get("/certificates?class=CS&after=6&limit=3").await;
    assert_eq!(
        (
            r.body["certificates"].as_array().unwrap().len(),
            &r.body["next_after"]
        ),
        (1, &Value::Null)
    );
    let r = app.get("/certificates?class=CS&after=4&limit=3").await;
    assert_eq!(
        r.body["next_after"],
        Value::Null,
        "a page that ends on the last certificate is the last page"
    );
    assert_eq!(assert_gapless(app, "CS").await.len(), 7);
    assert_eq!(class(app, "CS").await["issued"], 10 + (2..=7).sum::<u64>());
}

async fn bad_input_is_refused_and_uses_no_number(f: Fixture) {
    let app = &f.app;
    issue(app, "CS", "first", 1).await;
    let long_name = "n".repeat(257);
    let cases = [
        (json!({"name": "x", "amount": 0, "class": "CS"}), "amount"),
        (json!({"name": "x", "amount": -5, "class": "CS"}), "amount"),
        (json!({"name": "x", "amount": 1.5, "class": "CS"}), "amount"),
        (
            json!({"name": "x", "amount": "10", "class": "CS"}),
            "amount",
        ),
        (
            json!({"name": "x", "amount": 9_007_199_254_740_992u64, "class": "CS"}),
            "amount",
        ),
        (
            json!({"name": "x", "amount": 1e30, "class": "CS"}),
            "amount",
        ),
        (json!({"name": "x", "class": "CS"}), "amount"),
        (json!({"name": "", "amount": 1, "class": "CS"}), "name"),
        (
            json!({"name": long_name, "amount": 1, "class": "CS"}),
            "name",
        ),
        (json!({"name": 7, "amount": 1, "class": "CS"}), "name"),
        (json!({"amount": 1, "class": "CS"}), "name"),
        (json!({"name": "x", "amount": 1, "class": "cs"}), "class"),
        (json!({"name": "x", "amount": 1, "class": ""}), "class"),
        (
            json!({"name": "x", "amount": 1, "class": "ABCDEFGHI"}),
            "class",
        ),
        (json!({"name": "x", "amount": 1}), "class"),
    ];
    for (body, field) in cases {
        let r = app.post("/certificates", body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_field"),
            "{body}: {:?}",
            r.body
        );
        assert_eq!(r.body["error"]["field"], field, "{body}");
    }
    let r = app
        .raw(Method::POST, "/certificates", b"{oops".to_vec())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let r = issue(app, "ZZ", "x", 1).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "class_not_found")
    );
    for (query, field) in [
        ("", "class"),
        ("?class=cs", "class"),
        ("?class=CS&limit=0", "limit"),
        ("?class=CS&limit=1001", "limit"),
        ("?class=CS&after=-1", "after"),
        ("?class=CS&after=x", "after"),
    ] {
        let r = app.get(&format!("/certificates{query}")).await;
        assert_eq!(
            (r.status, &r.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{query}"
        );
    }
    assert_eq!(
        app.get("/certificates?class=ZZ").await.code(),
        "class_not_found"
    );
    for body in [
        json!({"authorized": -1}),
        json!({"authorized": 1.5}),
        json!({"authorized": "5"}),
        json!({}),
    ] {
        let r = app.put("/share-classes/NEW", body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_field"),
            "{body}"
        );
    }
    assert_eq!(
        app.put("/share-classes/new", json!({"authorized": 5}))
            .await
            .code(),
        "invalid_class"
    );
    // nothing changed: the next certificate is CS-2 and no class NEW exists
    assert_eq!(issue(app, "CS", "second", 1).await.body["id"], "CS-2");
    assert_eq!(
        app.get("/share-classes/NEW").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn short_of_shares_is_409_with_what_remains_and_uses_no_number(f: Fixture) {
    let app = &f.app;
    assert_eq!(
        app.put("/share-classes/SM", json!({"authorized": 10}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(issue(app, "SM", "a", 6).await.body["id"], "SM-1");
    let r = issue(app, "SM", "b", 5).await;
    assert_eq!(
        (r.status, r.code(), &r.body["error"]["remaining"]),
        (StatusCode::CONFLICT, "insufficient_shares", &json!(4))
    );
    assert_eq!(
        issue(app, "SM", "c", 4).await.body["id"],
        "SM-2",
        "the refused issue used no number"
    );
    let r = issue(app, "SM", "d", 1).await;
    assert_eq!(
        (r.status, &r.body["error"]["remaining"]),
        (StatusCode::CONFLICT, &json!(0))
    );
    assert_eq!(
        class(app, "SM").await,
        json!({"class": "SM", "authorized": 10, "issued": 10, "remaining": 0, "next_number": 3})
    );
}

async fn classes_are_created_and_reauthorized_but_never_below_issued(f: Fixture) {
    let app = &f.app;
    let r = app
        .put("/share-classes/EMP", json!({"authorized": 100}))
        .await;
    assert_eq!(
        r.body,
        json!({"class": "EMP", "authorized": 100, "issued": 0, "remaining": 100, "next_number": 1})
    );
    issue(app, "EMP", "x", 60).await;
    let r = app
        .put("/share-classes/EMP", json!({"authorized": 59}))
        .await;
    assert_eq!(
        (r.status, r.code(), &r.body["error"]["issued"]),
        (StatusCode::CONFLICT, "authorized_below_issued", &json!(60))
    );
    assert_eq!(
        app.put("/share-classes/EMP", json!({"authorized": 60}))
            .await
            .body["remaining"],
        0
    );
    assert_eq!(
        app.put("/share-classes/EMP", json!({"authorized": 500}))
            .await
            .body["remaining"],
        440
    );
    // a default class can be re-authorized before it was ever used, and keeps its numbering after
    assert_eq!(
        app.put("/share-classes/PS", json!({"authorized": 3}))
            .await
            .body["authorized"],
        3
    );
    assert_eq!(issue(app, "PS", "x", 3).await.body["id"], "PS-1");
    assert_eq!(
        app.put("/share-classes/ZERO", json!({"authorized": 0}))
            .await
            .body["remaining"],
        0
    );
}

async fn idempotent_retries_return_the_original_certificate(f: Fixture) {
    let app = &f.app;
    let body = json!({"name": "Retry Holder", "amount": 7, "class": "CS"});
    let first = issue_with_key(app, "key-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = issue_with_key(app, "key-1", body.clone()).await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body)
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let other = issue_with_key(
        app,
        "key-1",
        json!({"name": "Someone Else", "amount": 7, "class": "CS"}),
    )
    .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    // a refusal is remembered too: the same retry gets the same 4xx and changes nothing
    let short = json!({"name": "x", "amount": 3_000_000, "class": "CS"});
    let r1 = issue_with_key(app, "key-2", short.clone()).await;
    let r2 = issue_with_key(app, "key-2", short).await;
    assert_eq!((r1.status, &r1.body), (r2.status, &r2.body));
    let r = issue_with_key(app, "bad key with spaces", body.clone()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_idempotency_key")
    );
    assert_eq!(
        issue(app, "CS", "next", 1).await.body["id"],
        "CS-2",
        "retries issued nothing"
    );
    assert_eq!(class(app, "CS").await["issued"], 8);
}

async fn concurrent_retries_with_one_key_issue_one_certificate(f: Fixture) {
    let body = json!({"name": "Impatient", "amount": 3, "class": "PS"});
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, body) = (f.app.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            // a client that retries until it has an answer
            loop {
                let r = issue_with_key(&app, "same-key", body.clone()).await;
                match (r.status, r.code()) {
                    (StatusCode::CREATED, _) => return r.body,
                    (StatusCode::CONFLICT, "request_in_progress") => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await
                    }
                    other => panic!("unexpected {other:?}: {:?}", r.body),
                }
            }
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
    assert_eq!(bodies[0]["id"], "PS-1");
    assert_eq!(assert_gapless(&f.app, "PS").await.len(), 1);
}

async fn many_clients_get_gapless_numbers_and_a_class_runs_out_exactly(f: Fixture) {
    let per_client = if f.name == "embedded" { 150 } else { 15 };
    let app = &f.app;
    // RA runs out mid-load; RB never does
    let ra_authorized = 20 * per_client as u64 * 2; // about 4/5 of what RA is asked for
    app.put("/share-classes/RA", json!({"authorized": ra_authorized}))
        .await;
    app.put("/share-classes/RB", json!({"authorized": 1_000_000_000}))
        .await;
    let mut tasks = Vec::new();
    for client in 0..20u64 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut refusals = Vec::new();
            let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
            for i in 0..per_client as u64 {
                let (class, amount) = if i % 2 == 0 {
                    ("RA", 1 + (client * 7 + i) % 10)
                } else {
                    ("RB", 1 + i % 5)
                };
                let r = issue(&app, class, &format!("client {client}"), amount).await;
                *statuses.entry(r.status.as_u16()).or_default() += 1;
                if r.status == StatusCode::CONFLICT {
                    assert_eq!(r.code(), "insufficient_shares");
                    refusals.push((amount, r.body["error"]["remaining"].as_u64().unwrap()));
                }
            }
            (statuses, refusals)
        }));
    }
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut refusals = Vec::new();
    for t in tasks {
        let (s, r) = t.await.unwrap();
        for (status, count) in s {
            *statuses.entry(status).or_default() += count;
        }
        refusals.extend(r);
    }
    assert!(
        statuses.keys().all(|s| *s == 201 || *s == 409),
        "only 201 and 409: {statuses:?}"
    );
    assert!(!refusals.is_empty(), "RA ran out during the load");
    for (amount, remaining) in &refusals {
        assert!(remaining < amount, "refused {amount} with {remaining} left");
    }
    let ra = assert_gapless(app, "RA").await;
    let rb = assert_gapless(app, "RB").await;
    assert_eq!(ra.len() + rb.len(), statuses[&201]);
    // RA stopped exactly: what is left is less than the smallest amount refused last
    let left = class(app, "RA").await["remaining"].as_u64().unwrap();
    assert!(refusals.iter().any(|(amount, _)| left < *amount));
}
