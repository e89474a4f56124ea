//! The OpenAPI operations of the counter handlers ([`crate::handlers`]), one per route of `ROUTES`, and
//! their parameter; the body types and their schemas are [`strata_api_types::counters`]'s.

use crate::handlers::REFUSED_HEADER;
use serde_json::json;
use strata_api_types::counters::{
    CounterAccepted, CounterKeyString, CounterTotal, CounterTotalAfter, Increment,
};
use strata_http::openapi::{
    Header, Operation, OperationBuilder, Shared, headers, honours_idempotency_key, idempotency_key,
    json_body, link, ok, path_parameter, responses, schema_ref, unknown,
};

// The body types' schemas state the core's limits; their crate (which builds without the core) keeps
// copies, which must not drift.
const _: () =
    assert!(strata_api_types::counters::MAX_KEY_BYTES == strata_core::counters::MAX_KEY_BYTES);
const _: () = assert!(strata_api_types::counters::MAX_TOTAL == strata_core::counters::MAX_TOTAL);

fn key_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "key",
        "The counter's key, percent-encoded UTF-8.",
        schema_ref::<CounterKeyString>(),
        json!("hello world"),
    )
}

/// The OpenAPI operation of [`crate::handlers::increment`].
pub fn increment() -> Operation {
    let outcome = unknown(
        "the increment may have been counted; with an `Idempotency-Key` a retry counts it exactly once",
    );
    let op = OperationBuilder::new()
        .tag("counters")
        .summary(Some("Add to a counter"))
        .description(Some(honours_idempotency_key("Strong mode: the increment is in the total when the response is sent (`200`). Eventual mode: the increment is durably logged (`202`) and shows up in the total exactly once, within a second locally.")))
        .parameter(idempotency_key())
        .request_body(Some(
            json_body::<Increment>(true, json!({"key": "hello world", "value": 20}))
                .build(),
        ));
    responses(op, [
        (
            "200",
            ok::<CounterTotalAfter>("Strong mode: the new total.")
                .link("ReadCounter", link("counters-get", "Read the counter's total.", &[("key", "$response.body#/key")]))
                .extensions(headers(&[Header::IdempotentReplayed], &[]))
                .build()
                .into(),
        ),
        (
            "202",
            ok::<CounterAccepted>("Eventual mode: the increment is accepted (logged durably); it shows up in the total exactly once, or, if it would take the total past 2^63-1 when folded, in `counter-refused` of `GET /increment/{key}`.")
                .link("ReadCounter", link("counters-get", "Read the counter's total.", &[("key", "$response.body#/key")]))
                .extensions(headers(&[Header::IdempotentReplayed], &[]))
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_json`, `invalid_field` (`key` empty, over 1024 bytes or with control characters; `value` negative, not an integer or over 2^64-1) or `invalid_idempotency_key`. Nothing is counted."),
        Shared::Unauthorized.plain(),
        Shared::RequestTimeout.plain(),
        Shared::Conflict.with("`overflow` (with `room`, what the counter can still take below 2^63-1; nothing is counted): in strong mode when the total would pass 2^63-1, in eventual mode only for an increment over 2^63-1 by itself (any other is accepted and, if it no longer fits when folded, refused then and counted in `counter-refused`); or `request_in_progress`."),
        Shared::PayloadTooLarge.with("`body_too_large`."),
        Shared::IdempotencyKeyReused.with("`idempotency_key_reused`."),
        Shared::TooManyRequests.outcome(&outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome(&outcome),
    ])
    .build()
}

/// The OpenAPI operation of [`crate::handlers::get`].
pub fn get() -> Operation {
    let op = OperationBuilder::new()
        .tag("counters")
        .summary(Some("Read a counter"))
        .description(Some("The total folded so far."))
        .parameter(key_parameter());
    responses(op, [
        (
            "200",
            ok::<CounterTotal>("`{\"<key>\": total}`. In eventual mode, `counter-refused` counts the accepted increments that folding refused because they would have taken the total past 2^63-1.")
                .extensions(headers(&[], &[(REFUSED_HEADER, json!({"description": "Eventual mode: how many accepted increments of this counter were refused when folded (they would have passed 2^63-1) and counted nowhere. Absent when none.", "schema": {"type": "integer", "minimum": 1}}))]))
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_field` (`key`) or `invalid_path`."),
        Shared::Unauthorized.plain(),
        Shared::NotFound.with("`counter_not_found`: never incremented."),
        Shared::TooManyRequests.plain(),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.plain(),
    ])
    .build()
}
