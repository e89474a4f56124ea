//! The certificate functions.

use super::driver::{Driver, assert_status, body, key, lost, no_key, param};
use super::*;

pub(super) fn class(e: &mut Value, code: &str) {
    param(e, "class", code);
}

pub(super) fn issue(e: &mut Value, class: &str, amount: u64) {
    body(
        e,
        json!({"name": "Least Privilege", "amount": amount, "class": class}).to_string(),
    );
}

pub(super) async fn drive_certificates(d: &Driver) {
    assert_status(
        &d.event("share-classes-get").await,
        StatusCode::NOT_FOUND,
        "share-classes-get",
    );
    assert_status(
        &d.event("share-classes-put").await,
        StatusCode::OK,
        "share-classes-put",
    );
    assert_status(
        &d.event("share-classes-get").await,
        StatusCode::OK,
        "share-classes-get",
    );
    let keyed = d.call("share-classes-put", |e| key(e, "class-1")).await;
    assert_status(&keyed, StatusCode::OK, "share-classes-put with a key");
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "LedgerTable", 1);
    let refused = d.call("share-classes-put", |e| key(e, "class-2")).await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "share-classes-put refused",
    );

    assert_status(
        &d.event("certificates-get").await,
        StatusCode::NOT_FOUND,
        "certificates-get",
    );
    // keyed (the event's own key), and its replay
    assert_status(
        &d.event("certificates-issue").await,
        StatusCode::CREATED,
        "certificates-issue",
    );
    assert_status(
        &d.event("certificates-issue").await,
        StatusCode::CREATED,
        "replay",
    );
    assert_status(
        &d.event("certificates-get").await,
        StatusCode::OK,
        "certificates-get",
    );
    assert_status(
        &d.event("certificates-list").await,
        StatusCode::OK,
        "certificates-list",
    );
    // Unkeyed, on a default class used for the first time (its item is written then).
    let first = d
        .call("certificates-issue", |e| {
            no_key(e);
            issue(e, "CS", 5);
        })
        .await;
    assert_status(
        &first,
        StatusCode::CREATED,
        "first issue of a default class",
    );
    assert_status(
        &d.call("share-classes-get", |e| class(e, "PS")).await,
        StatusCode::OK,
        "share-classes-get of a default class never written",
    );
    // The allocation's answer lost on every attempt: the class item is read to find the entry.
    let lost_allocation = d
        .faulted(
            lost("UpdateItem", 3),
            d.call("certificates-issue", |e| {
                no_key(e);
                issue(e, "CS", 5);
            }),
        )
        .await;
    assert_status(
        &lost_allocation,
        StatusCode::CREATED,
        "issue after lost allocations",
    );
    // The allocation refused outright with a key: the class item is read, nothing found, the key released.
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "LedgerTable", 1);
    let refused = d
        .call("certificates-issue", |e| {
            key(e, "issue-2");
            issue(e, "CS", 5);
        })
        .await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "certificates-issue refused",
    );
    // Numbers allocated whose certificates could not be written (the write fails on every attempt): the
    // next read and the next listing write them.
    let stranded = |amount| {
        d.faulted(
            FaultConfig::only(FaultKind::Before500, 1.0)
                .on(&["PutItem"])
                .matching("cert#")
                .at_most(u64::from(strata_dynamo::config::MAX_ATTEMPTS)),
            d.call("certificates-issue", move |e| {
                key(e, &format!("stranded-{amount}"));
                issue(e, "CS", amount);
            }),
        )
    };
    let pending = stranded(7).await;
    assert_status(
        &pending,
        StatusCode::CREATED,
        "issue whose certificate stays pending",
    );
    let id = pending.json()["id"].as_str().unwrap().to_owned();
    let got = d.call("certificates-get", |e| param(e, "id", &id)).await;
    assert_status(
        &got,
        StatusCode::OK,
        "certificates-get of a pending certificate",
    );
    assert_status(
        &stranded(8).await,
        StatusCode::CREATED,
        "another pending certificate",
    );
    let page = d
        .call("certificates-list", |e| {
            e["queryStringParameters"] = json!({"class": "CS", "after": "0", "limit": "100"});
            e["rawQueryString"] = json!("class=CS&after=0&limit=100");
        })
        .await;
    assert_status(
        &page,
        StatusCode::OK,
        "certificates-list with a pending certificate",
    );
    assert_eq!(
        page.json()["certificates"].as_array().map(Vec::len),
        Some(4),
        "{}",
        page.text
    );
}
