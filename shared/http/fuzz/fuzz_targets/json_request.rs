//! Fuzzes JSON request decoding: an arbitrary body goes through `json_object`, the typed field accessors
//! and the domain parsers, in the combinations the handlers use (the first input byte picks the operation).
//!
//! Properties: nothing panics; a body is accepted exactly when it is a JSON object within the size limit;
//! every refusal is a 4xx whose response is the contract's error JSON (naming the field when a field is
//! wrong); every accepted value is the body's own value and lies in its documented range.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;
use strata_core::certificates::{self, ClassCode, MAX_SHARES};
use strata_core::counters::CounterKey;
use strata_core::kv::{MAX_VALUE_BYTES, Value};
use strata_core::widgets::{self, Port};
use strata_core::{Error, Kind};
use strata_http::MAX_BODY_BYTES;
use strata_http::request::{Object, json_object};
use strata_http::response;

fuzz_target!(|data: &[u8]| {
    let Some((&op, body)) = data.split_first() else {
        return;
    };
    let req = http::Request::builder()
        .body(lambda_http::Body::from(body.to_vec()))
        .expect("a request with a body");

    let object = match json_object(&req) {
        Ok(object) => {
            assert!(body.len() <= MAX_BODY_BYTES);
            let parsed: Json = serde_json::from_slice(body).expect("accepted bodies are JSON");
            assert_eq!(Some(&object.0), parsed.as_object(), "the object is the body's");
            object
        }
        Err(e) => {
            let parsed = serde_json::from_slice::<Json>(body).ok();
            assert!(
                body.len() > MAX_BODY_BYTES || !parsed.as_ref().is_some_and(Json::is_object),
                "a JSON object within the limit was refused: {e}"
            );
            check_refusal(&e, &[]);
            return;
        }
    };

    let (fields, outcome): (&[&str], Result<(), Error>) = match op % 6 {
        0 => (&["value"], kv_put(&object)),
        1 => (&["authorized"], share_class_put(&object)),
        2 => (&["name", "amount", "class"], certificate_issue(&object)),
        3 => (&["key", "value"], counter_increment(&object)),
        4 => (&["serial_number", "name", "ports"], widget_create(&object)),
        _ => (&["peer", "port"], widget_associate(&object)),
    };
    if let Err(e) = outcome {
        check_refusal(&e, fields);
    }
});

/// A refusal is a client error with the contract's error JSON; a field error names one of the fields read.
fn check_refusal(e: &Error, fields: &[&str]) {
    assert!(
        matches!(e.kind, Kind::Invalid | Kind::TooLarge),
        "decoding failed with {:?}: {e}",
        e.kind
    );
    if let Some(field) = e.extra.get("field") {
        let field = field.as_str().expect("`field` is a string");
        assert!(fields.contains(&field), "error names {field:?}, not one of {fields:?}");
    }
    let resp = response::error(e);
    assert!(resp.status().is_client_error());
    let body: Json = serde_json::from_slice(resp.body().as_ref()).expect("error bodies are JSON");
    assert_eq!(body["error"]["code"], e.code.as_ref());
    assert!(body["error"]["message"].is_string());
}

fn kv_put(o: &Object) -> Result<(), Error> {
    let raw = o.string("value")?;
    let value = Value::parse(raw.clone())?;
    assert!(raw.len() <= MAX_VALUE_BYTES);
    assert_eq!(value.as_str(), raw, "values are kept byte for byte");
    Ok(())
}

fn share_class_put(o: &Object) -> Result<(), Error> {
    let authorized = o.integer("authorized", 0, MAX_SHARES)?;
    assert_eq!(o.0["authorized"].as_u64(), Some(authorized));
    Ok(())
}

fn certificate_issue(o: &Object) -> Result<(), Error> {
    let name = o.string("name")?;
    certificates::validate_name(&name)?;
    let amount = o.positive_integer("amount", MAX_SHARES)?;
    assert!((1..=MAX_SHARES).contains(&amount));
    assert_eq!(o.0["amount"].as_u64(), Some(amount));
    let raw = o.string("class")?;
    let class = ClassCode::parse(&raw)?;
    assert_eq!(class.as_str(), raw);
    Ok(())
}

fn counter_increment(o: &Object) -> Result<(), Error> {
    let raw = o.string("key")?;
    let key = CounterKey::parse(&raw)?;
    assert_eq!(key.as_str(), raw);
    let value = o.integer("value", 0, u64::MAX)?;
    assert_eq!(o.0["value"].as_u64(), Some(value));
    Ok(())
}

fn widget_create(o: &Object) -> Result<(), Error> {
    let serial = o.string("serial_number")?;
    widgets::validate_serial(&serial, "serial_number")?;
    let name = o.string("name")?;
    widgets::validate_name(&name)?;
    let ports: Vec<String> = match o.0.get("ports") {
        Some(Json::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::invalid_field("ports", "`ports` must be an array of strings"))?,
        _ => return Err(Error::invalid_field("ports", "`ports` must be an array of strings")),
    };
    let parsed = widgets::parse_ports(&ports)?;
    assert!((1..=3).contains(&parsed.len()));
    for (port, raw) in parsed.iter().zip(&ports) {
        assert_eq!(port.as_str(), raw);
    }
    Ok(())
}

fn widget_associate(o: &Object) -> Result<(), Error> {
    let peer = o.string("peer")?;
    widgets::validate_serial(&peer, "peer")?;
    let raw = o.string("port")?;
    let port = Port::parse(&raw)
        .ok_or_else(|| Error::invalid_field("port", format!("`port` is P, R or Q, not {raw:?}")))?;
    assert_eq!(port.as_str(), raw);
    Ok(())
}
