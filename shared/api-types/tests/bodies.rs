//! Every body survives JSON both ways, and the answers the README shows are what the types write.

// Test code: a failed `unwrap` is a failed test.
#![allow(clippy::unwrap_used)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use strata_api_types::certificates::{
    Certificate, CertificateIssue, CertificatePage, ShareClass, ShareClassWrite,
};
use strata_api_types::counters::{CounterAccepted, CounterTotal, CounterTotalAfter, Increment};
use strata_api_types::error::{Error, ErrorDetail};
use strata_api_types::kv::tx::{
    TxBegin, TxBegun, TxCommitted, TxDeleted, TxItem, TxRolledBack, TxWritten,
};
use strata_api_types::kv::{KvDeleted, KvItem, KvWrite};
use strata_api_types::widgets::{
    Association, AssociationCreate, FreeSlots, Widget, WidgetAssociation, WidgetCreate,
};

const README: &str = include_str!("../../../README.md");

/// Serialized and read back, `value` is unchanged.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T) {
    let json = serde_json::to_string(&value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(back, value, "{json}");
}

/// `example` is in the README, reads as a `T`, and `T` writes it back byte for byte (field order too).
fn readme_shows<T: Serialize + DeserializeOwned>(example: &str) -> T {
    assert!(
        README.contains(example),
        "the README does not show {example}"
    );
    let value: T = serde_json::from_str(example).unwrap();
    assert_eq!(serde_json::to_string(&value).unwrap(), example);
    value
}

fn certificate() -> Certificate {
    Certificate {
        id: "CS-1".into(),
        class: "CS".into(),
        number: 1,
        name: "Salt Bae".into(),
        amount: 10,
        issued_at: "2026-11-23T05:00:00.123Z".into(),
    }
}

#[test]
fn key_value_bodies_round_trip() {
    round_trip(KvWrite {
        value: "3 * 3 = 9".into(),
    });
    round_trip(KvItem {
        key: "greeting".into(),
        value: "".into(),
        version: u64::MAX,
    });
    round_trip(KvDeleted {
        key: "greeting".into(),
        deleted: false,
    });
    round_trip(TxBegin {});
    round_trip(TxBegun {
        id: "0123456789abcdef0123456789abcdef".into(),
        expires_at: "2026-11-23T05:00:30.000Z".into(),
    });
    for version in [Some(3), None] {
        round_trip(TxItem {
            key: "balance".into(),
            value: "100".into(),
            version,
        });
    }
    round_trip(TxWritten {
        key: "balance".into(),
        value: "100".into(),
    });
    round_trip(TxDeleted {
        key: "balance".into(),
    });
    round_trip(TxCommitted {
        id: "0123456789abcdef0123456789abcdef".into(),
        committed: true,
        writes: 2,
    });
    round_trip(TxRolledBack {
        id: "0123456789abcdef0123456789abcdef".into(),
        rolled_back: true,
    });
}

#[test]
fn certificate_bodies_round_trip() {
    round_trip(ShareClassWrite { authorized: 50000 });
    round_trip(ShareClass {
        class: "CS".into(),
        authorized: 100,
        issued: 10,
        remaining: 90,
        next_number: 2,
    });
    round_trip(CertificateIssue {
        name: "Salt Bae".into(),
        amount: 10,
        class: "CS".into(),
    });
    round_trip(certificate());
    for next_after in [Some(1), None] {
        round_trip(CertificatePage {
            certificates: vec![certificate()],
            next_after,
        });
    }
}

#[test]
fn counter_bodies_round_trip() {
    round_trip(Increment {
        key: "hello world".into(),
        value: u64::MAX,
    });
    round_trip(CounterTotalAfter {
        key: "hello world".into(),
        value: 20,
    });
    round_trip(CounterAccepted {
        key: "hello world".into(),
        accepted: 20,
    });
    round_trip(CounterTotal {
        key: "hello world".into(),
        total: 20,
    });
}

#[test]
fn widget_bodies_round_trip() {
    round_trip(WidgetCreate {
        serial_number: "A".into(),
        name: "alpha".into(),
        ports: vec!["P".into(), "R".into()],
    });
    round_trip(Widget {
        serial_number: "A".into(),
        name: "alpha".into(),
        ports: vec!["P".into(), "R".into()],
        associations: vec![WidgetAssociation {
            port: "P".into(),
            peer: "B".into(),
        }],
        free: FreeSlots { p: 0, r: 1, q: 0 },
    });
    round_trip(AssociationCreate {
        peer: "B".into(),
        port: "P".into(),
    });
    round_trip(Association {
        serial_number: "A".into(),
        peer: "B".into(),
        port: "P".into(),
    });
}

#[test]
fn the_readme_examples_are_the_answers() {
    let item: KvItem = readme_shows(r#"{"key":"greeting","value":"3 * 3 = 9","version":1}"#);
    assert_eq!(item.version, 1);
    readme_shows::<KvDeleted>(r#"{"key":"greeting","deleted":true}"#);
    readme_shows::<TxCommitted>(r#"{"id":"…","committed":true,"writes":1}"#);
    readme_shows::<ShareClass>(
        r#"{"class":"CS","authorized":2600000,"issued":0,"remaining":2600000,"next_number":1}"#,
    );
    readme_shows::<Certificate>(
        r#"{"id":"CS-1","class":"CS","number":1,"name":"Salt Bae","amount":10,"issued_at":"…"}"#,
    );
    let widget: Widget = readme_shows(
        r#"{"serial_number":"A","name":"alpha","ports":["P","R"],"associations":[{"port":"P","peer":"B"}],"free":{"P":0,"R":1,"Q":0}}"#,
    );
    assert_eq!(widget.free, FreeSlots { p: 0, r: 1, q: 0 });
    readme_shows::<CounterTotalAfter>(r#"{"key":"hello world","value":20}"#);
    readme_shows::<CounterAccepted>(r#"{"key":"hello world","accepted":20}"#);
    let total: CounterTotal = readme_shows(r#"{"hello world":20}"#);
    assert_eq!(total.total, 20);
    // The README elides the page's certificates (`[…]`); the rest is as shown.
    assert!(README.contains(r#"{"certificates":[…],"next_after":null}"#));
    let page = CertificatePage {
        certificates: Vec::new(),
        next_after: None,
    };
    assert_eq!(
        serde_json::to_string(&page).unwrap(),
        r#"{"certificates":[],"next_after":null}"#
    );
}

#[test]
fn the_readme_examples_are_the_request_bodies() {
    // The README's requests are written with spaces (`curl --json '{"value": "…"}'`).
    let spaced = |body: &str| {
        assert!(README.contains(body), "the README does not show {body}");
        body.to_owned()
    };
    let write: KvWrite = serde_json::from_str(&spaced(r#"{"value": "3 * 3 = 9"}"#)).unwrap();
    assert_eq!(write.value, "3 * 3 = 9");
    let issue: CertificateIssue = serde_json::from_str(&spaced(
        r#"{"name": "Salt Bae", "amount": 10, "class": "CS"}"#,
    ))
    .unwrap();
    assert_eq!(issue.amount, 10);
    let widget: WidgetCreate = serde_json::from_str(&spaced(
        r#"{"serial_number": "A", "name": "alpha", "ports": ["P", "R"]}"#,
    ))
    .unwrap();
    assert_eq!(widget.ports, ["P", "R"]);
    let association: AssociationCreate =
        serde_json::from_str(&spaced(r#"{"peer": "B", "port": "P"}"#)).unwrap();
    assert_eq!(association.port, "P");
    let increment: Increment =
        serde_json::from_str(&spaced(r#"{"key": "hello world", "value": 20}"#)).unwrap();
    assert_eq!(increment.value, 20);
}

#[test]
fn the_error_body_round_trips_with_its_extra_fields() {
    let mut extra = serde_json::Map::new();
    extra.insert("remaining".into(), 5.into());
    round_trip(Error {
        error: ErrorDetail {
            code: "insufficient_shares".into(),
            message: "only 5 shares are left".into(),
            extra,
        },
    });
    let shown: Error = readme_shows(
        r#"{"error":{"code":"key_not_found","message":"no value is stored under key \"greeting\""}}"#,
    );
    assert_eq!(shown.error.code, "key_not_found");
    assert!(shown.error.extra.is_empty());
}

#[test]
fn a_counter_total_is_exactly_one_property() {
    for not_one in ["{}", r#"{"a":1,"b":2}"#, r#"{"a":-1}"#, "[]"] {
        assert!(
            serde_json::from_str::<CounterTotal>(not_one).is_err(),
            "{not_one} was read as a total"
        );
    }
}

/// A client built on these types keeps reading an answer that gained a field.
#[test]
fn answers_with_a_field_added_still_read() {
    let extra = r#"{"key":"greeting","deleted":true,"more":1}"#;
    let read: KvDeleted = serde_json::from_str(extra).unwrap();
    assert_eq!((read.key.as_str(), read.deleted), ("greeting", true));
}
