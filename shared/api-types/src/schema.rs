//! Small builders of the schemas the body types' fields name (`schema_with`), which the services'
//! operation functions use too (re-exported by `strata_http::openapi`).

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

/// No control characters (C0, DEL, C1), what every name and counter key allows.
pub const NO_CONTROL: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]+$";
/// Neither whitespace nor control characters: keys and serial numbers.
pub const NO_SPACE_OR_CONTROL: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$";

/// A string schema: `minLength`, `maxLength`, `pattern`, description.
pub fn string(
    description: Option<&str>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<&str>,
) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(description)
        .min_length(min_length)
        .max_length(max_length)
        .pattern(pattern)
        .build()
}

/// An integer schema in `min..=max`.
pub fn integer(min: u64, max: Option<u64>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(max)
        .build()
}

/// Names (certificate holders, widgets): 1 to `max` characters, no control characters.
pub fn name(max: usize) -> Object {
    string(None, Some(1), Some(max), Some(NO_CONTROL))
}

/// Exactly `value` (JSON Schema's `const`, which utoipa 5's `Object` has no field for: it is written
/// through the extensions, which serialize as the schema's own keys).
pub fn constant(value: serde_json::Value) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .extensions(Some(Extensions::from_iter([("const", value)])))
        .build()
}

/// An integer that may be `null`, from `min`.
pub(crate) fn nullable_integer(min: u64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(min))
        .description(Some(description))
        .build()
}
