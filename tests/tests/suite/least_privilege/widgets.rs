//! The widget functions.

use super::driver::{Driver, assert_status, body, key};
use super::*;

pub(super) fn widget(e: &mut Value, serial: &str, ports: &[&str]) {
    body(
        e,
        json!({"serial_number": serial, "name": "Least", "ports": ports}).to_string(),
    );
}

pub(super) async fn drive_widgets(d: &Driver) {
    assert_status(
        &d.event("widgets-get").await,
        StatusCode::NOT_FOUND,
        "widgets-get",
    );
    assert_status(
        &d.event("widgets-create").await,
        StatusCode::CREATED,
        "widgets-create",
    );
    // no peer yet: refused, and told why from the widgets as they are
    assert_status(
        &d.event("widgets-associate").await,
        StatusCode::NOT_FOUND,
        "associate",
    );
    let peer = d
        .call("widgets-create", |e| {
            widget(e, "W-2002", &["R", "P"]);
            key(e, "widget-1");
        })
        .await;
    assert_status(&peer, StatusCode::CREATED, "widgets-create with a key");
    d.recorder.refuse_next("dynamodb:PutItem", "WidgetTable", 1);
    let refused = d
        .call("widgets-create", |e| {
            widget(e, "W-3003", &["R"]);
            key(e, "widget-2");
        })
        .await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "widgets-create refused",
    );
    assert_status(
        &d.event("widgets-associate").await,
        StatusCode::CREATED,
        "associate",
    );
    assert_status(&d.event("widgets-get").await, StatusCode::OK, "widgets-get");
    assert_status(
        &d.event("widgets-dissociate").await,
        StatusCode::NO_CONTENT,
        "dissociate",
    );
    let keyed = d.call("widgets-associate", |e| key(e, "assoc-1")).await;
    assert_status(&keyed, StatusCode::CREATED, "associate with a key");
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "WidgetTable", 1);
    let refused = d
        .call("widgets-associate", |e| {
            body(e, json!({"peer": "W-2002", "port": "P"}).to_string());
            key(e, "assoc-2");
        })
        .await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "associate refused",
    );
    // a delete with an association releases the peer's slot in the same transaction
    assert_status(
        &d.event("widgets-delete").await,
        StatusCode::NO_CONTENT,
        "widgets-delete",
    );
    assert_status(
        &d.event("widgets-get").await,
        StatusCode::NOT_FOUND,
        "widgets-get",
    );
}
