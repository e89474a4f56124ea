//! Widgets (CONTRACT.md §3) on every backend: the seed's scenario step by step, and a race of 16 clients on a small
//! pool of widgets after which every invariant still holds.

use http::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use strata_tests::contract;
use strata_tests::fixture::{App, Fixture};

contract!(
    the_seed_scenario_through_http,
    sixteen_racing_clients_leave_every_invariant_intact
);

async fn add(app: &App, serial: &str, name: &str, ports: Value) -> strata_tests::fixture::Reply {
    app.post(
        "/widgets",
        json!({"serial_number": serial, "name": name, "ports": ports}),
    )
    .await
}

async fn link(app: &App, a: &str, b: &str, port: &str) -> strata_tests::fixture::Reply {
    app.post(
        &format!("/widgets/{a}/associations"),
        json!({"peer": b, "port": port}),
    )
    .await
}

async fn the_seed_scenario_through_http(f: Fixture) {
    let app = &f.app;
    let r = add(app, "A", "alpha", json!(["P", "R", "Q"])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"serial_number": "A", "name": "alpha", "ports": ["P", "R", "Q"], "associations": [], "free": {"P": 1, "R": 1, "Q": 1}})
    );
    assert_eq!(
        add(app, "B", "beta", json!(["P", "R", "Q"])).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        add(app, "C", "alpha", json!(["P"])).await.status,
        StatusCode::CREATED,
        "names are not unique"
    );
    for (serial, name) in [("A", "alpha"), ("A", "other name")] {
        let r = add(app, serial, name, json!(["Q"])).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::CONFLICT, "duplicate_serial_number")
        );
    }
    for ports in [
        json!(["X"]),
        json!(["p"]),
        json!(["P", "P", "P", "P"]),
        json!([]),
        json!("PRQ"),
        json!([1]),
    ] {
        let r = add(app, "D", "delta", ports.clone()).await;
        assert_eq!(
            (r.status, &r.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!("ports")),
            "{ports}"
        );
    }
    assert_eq!(
        app.get("/widgets/D").await.code(),
        "widget_not_found",
        "refused widgets were not created"
    );
    let r = link(app, "A", "A", "P").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "self_association")
    );
    let r = link(app, "A", "B", "P").await;
    assert_eq!(
        (r.status, &r.body),
        (
            StatusCode::CREATED,
            &json!({"serial_number": "A", "peer": "B", "port": "P"})
        )
    );
    // no free P on A (nor on B) for C
    let r = link(app, "C", "A", "P").await;
    assert_eq!(
        (r.status, r.code(), &r.body["error"]["serial_number"]),
        (StatusCode::CONFLICT, "no_free_slot", &json!("A"))
    );
    // the same pair on R and Q is fine; twice on the same port is not
    assert_eq!(link(app, "A", "B", "R").await.status, StatusCode::CREATED);
    assert_eq!(link(app, "B", "A", "Q").await.status, StatusCode::CREATED);
    let r = link(app, "B", "A", "R").await;
    assert!(
        matches!(r.code(), "already_associated" | "no_free_slot"),
        "{:?}",
        r.body
    );
    let r = link(app, "A", "Z", "P").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "widget_not_found")
    );
    let a = app.get("/widgets/A").await.body;
    assert_eq!(
        a["associations"],
        json!([{"port": "P", "peer": "B"}, {"port": "R", "peer": "B"}, {"port": "Q", "peer": "B"}])
    );
    assert_eq!(a["free"], json!({"P": 0, "R": 0, "Q": 0}));
    assert_eq!(
        app.get("/widgets/B").await.body["associations"],
        a["associations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| json!({"port": x["port"], "peer": "A"}))
            .collect::<Value>()
    );
    // removal: existing, then the same again (missing), and with an unknown widget
    assert_eq!(
        app.delete("/widgets/A/associations/R/B").await.status,
        StatusCode::NO_CONTENT
    );
    for path in [
        "/widgets/A/associations/R/B",
        "/widgets/B/associations/R/A",
        "/widgets/Z/associations/P/A",
        "/widgets/A/associations/P/Z",
    ] {
        let r = app.delete(path).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "association_not_found"),
            "{path}"
        );
    }
    assert_eq!(
        app.get("/widgets/B").await.body["free"],
        json!({"P": 0, "R": 1, "Q": 0})
    );
    // removing a widget frees its peers' slots
    assert_eq!(
        app.delete("/widgets/A").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.delete("/widgets/A").await.code(), "widget_not_found");
    let b = app.get("/widgets/B").await.body;
    assert_eq!(
        (&b["associations"], &b["free"]),
        (&json!([]), &json!({"P": 1, "R": 1, "Q": 1}))
    );
    assert_eq!(link(app, "C", "B", "P").await.status, StatusCode::CREATED);
    let c = app.get("/widgets/C").await.body;
    assert_eq!(
        c,
        json!({"serial_number": "C", "name": "alpha", "ports": ["P"], "associations": [{"port": "P", "peer": "B"}], "free": {"P": 0, "R": 0, "Q": 0}})
    );
}

async fn sixteen_racing_clients_leave_every_invariant_intact(f: Fixture) {
    const POOL: usize = 12;
    let rounds = if f.name == "embedded" { 120 } else { 25 };
    let ports = [
        json!(["P", "R", "Q"]),
        json!(["Q", "Q"]),
        json!(["P"]),
        json!(["P", "R", "R"]),
    ];
    for i in 0..POOL {
        add(
            &f.app,
            &format!("w{i}"),
            "racer",
            ports[i % ports.len()].clone(),
        )
        .await;
    }
    let mut tasks = Vec::new();
    for client in 0..16usize {
        let app = f.app.clone();
        let ports = ports.clone();
        tasks.push(tokio::spawn(async move {
            let mut x = client * 7919 + 1;
            let mut next = move |n: usize| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) % n
            };
            for _ in 0..rounds {
                let (a, b) = (format!("w{}", next(POOL)), format!("w{}", next(POOL)));
                let port = ["P", "R", "Q"][next(3)];
                let r = match next(10) {
                    0..=5 => link(&app, &a, &b, port).await,
                    6..=8 => {
                        app.delete(&format!("/widgets/{a}/associations/{port}/{b}"))
                            .await
                    }
                    _ => {
                        let r = app.delete(&format!("/widgets/{a}")).await;
                        add(&app, &a, "racer", ports[next(ports.len())].clone()).await;
                        r
                    }
                };
                assert!(!r.status.is_server_error(), "{:?}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // every invariant, from the outside
    let mut widgets = BTreeMap::new();
    for i in 0..POOL {
        let r = f.app.get(&format!("/widgets/w{i}")).await;
        if r.status == StatusCode::OK {
            widgets.insert(format!("w{i}"), r.body);
        }
    }
    let mut links = BTreeSet::new();
    for (serial, w) in &widgets {
        let mut seen = BTreeSet::new();
        for a in w["associations"].as_array().unwrap() {
            let (port, peer) = (a["port"].as_str().unwrap(), a["peer"].as_str().unwrap());
            assert!(
                seen.insert((port, peer)),
                "{serial}: duplicate association {port} {peer}"
            );
            assert!(
                widgets.contains_key(peer),
                "{serial} points at missing widget {peer}"
            );
            links.insert((serial.clone(), peer.to_owned(), port.to_owned()));
        }
        for port in ["P", "R", "Q"] {
            let capacity = w["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| *p == port)
                .count();
            let used = w["associations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["port"] == port)
                .count();
            assert!(
                used <= capacity,
                "{serial}: {used} {port} associations, {capacity} slots"
            );
            assert_eq!(w["free"][port], capacity - used);
        }
    }
    for (a, b, port) in &links {
        assert!(
            links.contains(&(b.clone(), a.clone(), port.clone())),
            "{a}-{b} on {port} is not symmetric"
        );
    }
}
