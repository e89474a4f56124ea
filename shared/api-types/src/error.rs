//! The error JSON every failed request answers with (CONTRACT.md, "Errors"), and its schema.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// The error JSON of the contract: `{"error": {"code", "message", ...extra}}` (built by
/// `strata_http::response::error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Error {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of the error JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable and snake_case: what a client matches on.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The fields some errors carry (`strata_core::Error::extra`); [`EXTRA_FIELDS`] documents them.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The kind of value of an extra error field.
#[derive(Debug, Clone, Copy)]
pub enum Extra {
    /// A string.
    String,
    /// An integer from 0.
    Count,
    /// Any integer.
    Integer,
    /// A port type (the `Port` schema).
    Port,
}

/// The extra fields of errors, as documented: (name, kind, description).
pub const EXTRA_FIELDS: &[(&str, Extra, &str)] = &[
    (
        "field",
        Extra::String,
        "The request field or parameter that is invalid.",
    ),
    (
        "key",
        Extra::String,
        "`conflict`: the first key that changed.",
    ),
    (
        "remaining",
        Extra::Count,
        "`insufficient_shares`: shares left.",
    ),
    (
        "issued",
        Extra::Count,
        "`authorized_below_issued`: shares issued.",
    ),
    (
        "room",
        Extra::Count,
        "`overflow`: what the counter can still take.",
    ),
    (
        "serial_number",
        Extra::String,
        "The widget the error is about.",
    ),
    ("port", Extra::Port, ""),
    ("max_keys", Extra::Integer, ""),
    ("max_bytes", Extra::Integer, ""),
    (
        "commands",
        Extra::Count,
        "`too_many_commands`, `reply_too_large`: the commands the body holds.",
    ),
    (
        "commands_run",
        Extra::Count,
        "`reply_too_large`: the commands that ran, the first of the body.",
    ),
    (
        "limit",
        Extra::Count,
        "`too_many_commands`: the most commands a request may hold; `reply_too_large`: the most reply bytes.",
    ),
    (
        "max_open_transactions",
        Extra::Count,
        "`too_many_transactions`: the most transactions the server holds open at once.",
    ),
    (
        "max_transaction_memory",
        Extra::Count,
        "`transaction_memory_full`: the most bytes all open transactions may buffer together.",
    ),
];

impl PartialSchema for Error {
    // `example` (not 3.1's `examples`) is what the document has always had and what its tools read.
    #[allow(deprecated)]
    fn schema() -> RefOr<Schema> {
        let mut detail = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[a-z][a-z0-9_]*$")),
            )
            .required("code")
            .property(
                "message",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1)),
            )
            .required("message");
        for (name, kind, description) in EXTRA_FIELDS {
            let description = (!description.is_empty()).then_some(*description);
            let field: RefOr<Schema> = match kind {
                Extra::Port => Ref::from_schema_name("Port").into(),
                Extra::String => ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(description)
                    .into(),
                Extra::Count => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .description(description)
                    .into(),
                Extra::Integer => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(description)
                    .into(),
            };
            detail = detail.property(*name, field);
        }
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Every error: a stable snake_case `code`, a sentence for people, and the extra fields some errors carry.",
            ))
            .property("error", detail)
            .required("error")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .example(Some(json!({
                "error": {"code": "invalid_field", "message": "`value` is required", "field": "value"}
            })))
            .into()
    }
}

impl ToSchema for Error {}
