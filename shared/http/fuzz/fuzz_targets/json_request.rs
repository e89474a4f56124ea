//! Fuzzes JSON request decoding as the handlers do it: an arbitrary body goes through
//! `strata_http::request::body::<T>` for one of the request body types of `strata_api_types` (the first
//! input byte picks which), then through the domain checks the handler applies to it.
//!
//! Properties: nothing panics; only a JSON object within the size limit is accepted; every refusal is a
//! 4xx whose response is the contract's error JSON, naming one of the body's fields when a field is
//! wrong; every accepted value is the body's own and lies in its documented range.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use strata_api_types::certificates::{CertificateIssue, ShareClassWrite};
use strata_api_types::counters::Increment;
use strata_api_types::kv::KvWrite;
use strata_api_types::widgets::{AssociationCreate, WidgetCreate};
use strata_core::certificates::{self, ClassCode, MAX_SHARES};
use strata_core::counters::CounterKey;
use strata_core::kv::{MAX_VALUE_BYTES, Value};
use strata_core::widgets::{self, Port};
use strata_core::{Error, Kind};
use strata_http::MAX_BODY_BYTES;
use strata_http::request::body;
use strata_http::response;
use utoipa::ToSchema;

fuzz_target!(|data: &[u8]| {
    let Some((&op, bytes)) = data.split_first() else {
        return;
    };
    let req = http::Request::builder()
        .body(lambda_http::Body::from(bytes.to_vec()))
        .expect("a request with a body");
    match op % 6 {
        0 => decode(&req, bytes, &["value"], kv_put),
        1 => decode(&req, bytes, &["authorized"], share_class_put),
        2 => decode(&req, bytes, &["name", "amount", "class"], certificate_issue),
        3 => decode(&req, bytes, &["key", "value"], counter_increment),
        4 => decode(&req, bytes, &["serial_number", "name", "ports"], widget_create),
        _ => decode(&req, bytes, &["peer", "port"], widget_associate),
    }
});

/// Reads the body as `T`, then runs the handler's own checks on it.
fn decode<T: DeserializeOwned + ToSchema + 'static>(
    req: &strata_http::Request,
    bytes: &[u8],
    fields: &[&str],
    checks: fn(T, &Json) -> Result<(), Error>,
) {
    match body::<T>(req) {
        Ok(value) => {
            assert!(bytes.len() <= MAX_BODY_BYTES);
            let json: Json = serde_json::from_slice(bytes).expect("accepted bodies are JSON");
            assert!(json.is_object(), "only an object is a body");
            if let Err(e) = checks(value, &json) {
                check_refusal(&e, fields);
            }
        }
        Err(e) => check_refusal(&e, fields),
    }
}

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

fn kv_put(body: KvWrite, json: &Json) -> Result<(), Error> {
    assert_eq!(json["value"].as_str(), Some(body.value.as_str()));
    let value = Value::parse(body.value.clone())?;
    assert!(body.value.len() <= MAX_VALUE_BYTES);
    assert_eq!(value.as_str(), body.value, "values are kept byte for byte");
    Ok(())
}

fn share_class_put(body: ShareClassWrite, json: &Json) -> Result<(), Error> {
    assert!(body.authorized <= MAX_SHARES);
    assert_eq!(json["authorized"].as_u64(), Some(body.authorized));
    Ok(())
}

fn certificate_issue(body: CertificateIssue, json: &Json) -> Result<(), Error> {
    assert!((1..=MAX_SHARES).contains(&body.amount));
    assert_eq!(json["amount"].as_u64(), Some(body.amount));
    assert_eq!(json["name"].as_str(), Some(body.name.as_str()));
    certificates::validate_name(&body.name)?;
    let class = ClassCode::parse(&body.class)
        .map_err(|e| Error::invalid_field("class", e.message.clone()))?;
    assert_eq!(class.as_str(), body.class);
    Ok(())
}

fn counter_increment(body: Increment, json: &Json) -> Result<(), Error> {
    assert_eq!(json["value"].as_u64(), Some(body.value));
    let key = CounterKey::parse(&body.key)?;
    assert_eq!(key.as_str(), body.key);
    Ok(())
}

fn widget_create(body: WidgetCreate, json: &Json) -> Result<(), Error> {
    assert_eq!(json["serial_number"].as_str(), Some(body.serial_number.as_str()));
    widgets::validate_serial(&body.serial_number, "serial_number")?;
    widgets::validate_name(&body.name)?;
    let parsed = widgets::parse_ports(&body.ports)?;
    assert!((1..=3).contains(&parsed.len()));
    for (port, raw) in parsed.iter().zip(&body.ports) {
        assert_eq!(port.as_str(), raw);
    }
    Ok(())
}

fn widget_associate(body: AssociationCreate, json: &Json) -> Result<(), Error> {
    assert_eq!(json["peer"].as_str(), Some(body.peer.as_str()));
    widgets::validate_serial(&body.peer, "peer")?;
    let port = Port::parse(&body.port).ok_or_else(|| {
        Error::invalid_field("port", format!("`port` is P, R or Q, not {:?}", body.port))
    })?;
    assert_eq!(port.as_str(), body.port);
    Ok(())
}
