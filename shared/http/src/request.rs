//! Reading requests: path parameters and JSON bodies, with errors that say exactly what is wrong.

use crate::{MAX_BODY_BYTES, Request};
use lambda_http::RequestExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use strata_core::Error;
use strata_core::error::quote;
use utoipa::Number;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Schema, SchemaType, Type};

/// A path parameter, already percent-decoded (API Gateway HTTP APIs decode them; so does the local server).
pub fn path_param(req: &Request, name: &str) -> Result<String, Error> {
    // `path_parameters_ref`, not `path_parameters`: that one clones every parameter on each call.
    req.path_parameters_ref()
        .and_then(|params| params.first(name))
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::invalid(
                "missing_path_parameter",
                format!("the path has no `{name}`"),
            )
        })
}

/// The request body as a JSON object. Over 1 MiB → 413; not JSON, or not an object → 400 `invalid_json`.
fn json_object(req: &Request) -> Result<Object, Error> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(body_too_large());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(Object(map)),
        Ok(_) => Err(Error::invalid(
            "invalid_json",
            "the request body must be a JSON object",
        )),
        Err(e) if body.iter().all(u8::is_ascii_whitespace) => Err(Error::invalid(
            "invalid_json",
            format!("the request body is empty: {e}"),
        )),
        Err(e) => Err(Error::invalid(
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// The request body as `T`, the one type that says what the body holds: its `Deserialize` reads it, its
/// `ToSchema` is what the OpenAPI document shows and what the body is checked against first, so that
/// every error is the contract's: over 1 MiB or not a JSON object as [`json_object`]; then, field by field
/// in declaration order, `invalid_field` naming the field when it is missing, or not of its schema's type (a
/// string, an integer within the schema's `minimum` and `maximum`, an array of strings). Unknown fields
/// are ignored. What a value means (a key, a name) is for the handler to parse.
pub fn body<T: DeserializeOwned + ToSchema + 'static>(req: &Request) -> Result<T, Error> {
    let object = json_object(req)?;
    for field in fields::<T>().iter() {
        if field.required || object.0.contains_key(&field.name) {
            object.check(&field.name, field.expect)?;
        }
    }
    // A field the checks leave to `Deserialize` (a boolean, an object) is still the client's input: a
    // value it refuses is a bad request, never a 500.
    serde_json::from_value(Value::Object(object.0)).map_err(|e| {
        Error::invalid(
            "invalid_json",
            format!("the request body does not fit {}: {e}", T::name()),
        )
    })
}

/// A field of a body type, as [`body`] checks it.
#[derive(Debug)]
struct Field {
    name: String,
    required: bool,
    expect: Expect,
}

/// The fields of `T` in declaration order, read from its schema once per type.
fn fields<T: ToSchema + 'static>() -> Arc<[Field]> {
    type Fields = HashMap<TypeId, Arc<[Field]>>;
    static FIELDS: OnceLock<Mutex<Fields>> = OnceLock::new();
    let cache = FIELDS.get_or_init(Mutex::default);
    // A panic while the lock was held left a map of finished entries: still right.
    let cached = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&TypeId::of::<T>())
        .cloned();
    if let Some(fields) = cached {
        return fields;
    }
    // The schemas `T` names: by `value_type` (its `schemas`) or through `openapi::schema_ref` in a
    // `schema_with` function (collected while its schema is built).
    let (schema, mut named) = crate::openapi::collect_schemas(T::schema);
    T::schemas(&mut named);
    let fields: Arc<[Field]> = match schema {
        RefOr::T(Schema::Object(schema)) => schema
            .properties
            .iter()
            .map(|(name, property)| Field {
                name: name.clone(),
                required: schema.required.contains(name),
                expect: expect(resolve(property, &named), &named),
            })
            .collect(),
        _ => Arc::new([]),
    };
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(TypeId::of::<T>(), fields.clone());
    fields
}

/// A property's schema, through a reference to one of the schemas `T` names.
fn resolve<'s>(
    schema: &'s RefOr<Schema>,
    named: &'s [(String, RefOr<Schema>)],
) -> Option<&'s Schema> {
    match schema {
        RefOr::T(schema) => Some(schema),
        RefOr::Ref(reference) => {
            let name = reference.ref_location.rsplit('/').next()?;
            let (_, found) = named.iter().find(|(n, _)| n == name)?;
            resolve(found, named)
        }
    }
}

/// What a schema checks of a field, as the typed accessors of [`Object`] say it.
#[derive(Debug, Clone, Copy)]
enum Expect {
    String,
    Integer {
        min: u64,
        max: u64,
    },
    Strings,
    /// Anything else is left to the type's `Deserialize`.
    Other,
}

fn expect(schema: Option<&Schema>, named: &[(String, RefOr<Schema>)]) -> Expect {
    match schema {
        Some(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::String) => {
            Expect::String
        }
        // An enum of strings (a port type).
        Some(Schema::Object(o))
            if o.schema_type == SchemaType::AnyValue
                && o.enum_values
                    .as_ref()
                    .is_some_and(|values| values.iter().all(Value::is_string)) =>
        {
            Expect::String
        }
        Some(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Integer) => {
            Expect::Integer {
                min: o.minimum.as_ref().map_or(0, bound),
                max: o.maximum.as_ref().map_or(u64::MAX, bound),
            }
        }
        Some(Schema::Array(a)) => match &a.items {
            utoipa::openapi::schema::ArrayItems::RefOrSchema(items)
                if matches!(expect(resolve(items, named), named), Expect::String) =>
            {
                Expect::Strings
            }
            _ => Expect::Other,
        },
        _ => Expect::Other,
    }
}

/// A schema's bound as an integer (a negative one is 0: the fields are unsigned).
fn bound(n: &Number) -> u64 {
    match *n {
        Number::Int(i) => u64::try_from(i).unwrap_or(0),
        Number::UInt(u) => u as u64,
        Number::Float(f) => f as u64,
    }
}

/// `413 body_too_large`: a body over [`MAX_BODY_BYTES`].
pub fn body_too_large() -> Error {
    Error::too_large(
        "body_too_large",
        format!("the request body is over {MAX_BODY_BYTES} bytes"),
    )
}

/// A query parameter as an integer in `min..=max`, or `default` when absent.
pub fn query_integer(
    req: &Request,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, Error> {
    match req
        .query_string_parameters_ref()
        .and_then(|q| q.first(name))
    {
        None => Ok(default),
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(Error::invalid_field(
                name,
                format!(
                    "query parameter `{name}` must be an integer from {min} to {max}, not {}",
                    quote(raw)
                ),
            )),
        },
    }
}

/// A required query parameter.
pub fn query_string(req: &Request, name: &str) -> Result<String, Error> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid_field(name, format!("query parameter `{name}` is required")))
}

/// A JSON object from a request body, with the field checks of [`body`], whose errors name the field.
#[derive(Debug, Clone)]
struct Object(Map<String, Value>);

impl Object {
    /// Checks `field` as its schema says (see [`body`]).
    fn check(&self, field: &str, expect: Expect) -> Result<(), Error> {
        match expect {
            // Borrowed: a check must not copy a value of up to 1 MiB that the type then takes.
            Expect::String => self.str(field).map(drop),
            Expect::Integer { min, max } => self.integer(field, min, max).map(drop),
            Expect::Strings => self.strs(field).map(drop),
            Expect::Other => Ok(()),
        }
    }

    fn strs(&self, field: &str) -> Result<Vec<&str>, Error> {
        let not_strings =
            || Error::invalid_field(field, format!("`{field}` must be an array of strings"));
        match self.0.get(field) {
            Some(Value::Array(items)) => items
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(not_strings),
            Some(_) => Err(not_strings()),
            None => Err(missing(field)),
        }
    }

    fn str(&self, field: &str) -> Result<&str, Error> {
        match self.0.get(field) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(Error::invalid_field(
                field,
                format!("`{field}` must be a string, not {}", type_name(other)),
            )),
            None => Err(missing(field)),
        }
    }

    /// A required integer field in `min..=max`. Floats, strings and out-of-range numbers are refused.
    fn integer(&self, field: &str, min: u64, max: u64) -> Result<u64, Error> {
        let value = self.0.get(field).ok_or_else(|| missing(field))?;
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(Error::invalid_field(
                field,
                format!(
                    "`{field}` must be an integer from {min} to {max}, not {}",
                    quoted_json(value)
                ),
            )),
        }
    }
}

/// A JSON value as an error message shows it: a string quoted by [`quote`], anything else as JSON cut the
/// same way.
fn quoted_json(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        other => {
            let json = other.to_string();
            let quoted = quote(&json);
            // `quote` adds Rust's quotes; a number or `null` reads better without them.
            match quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
                Some(plain) if json.len() <= strata_core::error::QUOTE_CHARS => plain.to_owned(),
                _ => quoted,
            }
        }
    }
}

fn missing(field: &str) -> Error {
    Error::invalid_field(field, format!("`{field}` is required"))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::Kind;

    fn req(body: &str) -> Request {
        http::Request::builder()
            .body(lambda_http::Body::from(body))
            .unwrap()
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_invalid_json() {
        for body in ["", "  ", "{", "nope", "[1]", "\"s\"", "3", "{\"a\":1}x"] {
            let e = json_object(&req(body)).unwrap_err();
            assert_eq!(
                (e.kind, e.code.as_ref()),
                (Kind::Invalid, "invalid_json"),
                "{body:?}"
            );
        }
    }

    #[test]
    fn oversized_bodies_are_413() {
        let body = format!("{{\"value\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        assert_eq!(json_object(&req(&body)).unwrap_err().kind, Kind::TooLarge);
    }

    #[test]
    fn fields_are_typed_and_named_in_errors() {
        let o = json_object(&req(
            r#"{"s":"x","n":5,"f":1.5,"neg":-1,"big":9007199254740992}"#,
        ))
        .unwrap();
        assert_eq!(o.str("s").unwrap(), "x");
        let e = o.str("n").unwrap_err();
        assert_eq!(e.extra["field"], "n");
        assert!(e.message.contains("not a number"), "{}", e.message);
        assert_eq!(o.str("missing").unwrap_err().extra["field"], "missing");
        assert_eq!(o.integer("n", 1, 10).unwrap(), 5);
        for bad in ["f", "neg", "s", "missing"] {
            assert_eq!(
                o.integer(bad, 1, u64::MAX).unwrap_err().code,
                "invalid_field"
            );
        }
        assert!(o.integer("big", 1, (1 << 53) - 1).is_err());
        assert!(o.integer("n", 1, 4).is_err());
    }

    fn one_to_ten() -> utoipa::openapi::Object {
        crate::openapi::integer(1, Some(10))
    }

    /// A body type as the services write them.
    #[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
    struct Sample {
        name: String,
        #[schema(schema_with = one_to_ten)]
        count: u64,
        tags: Vec<String>,
    }

    /// A body with a field the schema checks leave to `Deserialize`.
    #[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
    struct WithFlag {
        #[allow(dead_code)]
        flag: bool,
    }

    #[test]
    fn a_field_left_to_deserialize_refuses_bad_input_as_a_bad_request() {
        let e = super::body::<WithFlag>(&req(r#"{"flag":"yes"}"#)).unwrap_err();
        assert_eq!((e.kind, e.code.as_ref()), (Kind::Invalid, "invalid_json"));
        assert!(e.message.contains("WithFlag"), "{}", e.message);
    }

    fn sample(body: &str) -> Result<Sample, Error> {
        super::body::<Sample>(&req(body))
    }

    #[test]
    fn a_body_type_reads_its_fields_with_the_errors_of_the_field_accessors() {
        let s = sample(r#"{"name":"n","count":3,"tags":["a"],"unknown":true}"#).unwrap();
        assert_eq!((s.name.as_str(), s.count, s.tags.len()), ("n", 3, 1));
        for (body, field, message) in [
            (r#"{"count":3,"tags":[]}"#, "name", "`name` is required"),
            (
                r#"{"name":1,"count":3,"tags":[]}"#,
                "name",
                "`name` must be a string, not a number",
            ),
            (
                r#"{"name":"n","count":11,"tags":[]}"#,
                "count",
                "`count` must be an integer from 1 to 10, not 11",
            ),
            (
                r#"{"name":"n","count":1.5,"tags":[]}"#,
                "count",
                "`count` must be an integer from 1 to 10, not 1.5",
            ),
            (
                r#"{"name":"n","count":1,"tags":[1]}"#,
                "tags",
                "`tags` must be an array of strings",
            ),
            (
                r#"{"name":"n","count":1,"tags":"a"}"#,
                "tags",
                "`tags` must be an array of strings",
            ),
            (r#"{"name":"n","count":1}"#, "tags", "`tags` is required"),
        ] {
            let e = sample(body).unwrap_err();
            assert_eq!(
                (e.code.as_ref(), &e.extra["field"], e.message.as_str()),
                ("invalid_field", &serde_json::json!(field), message),
                "{body}"
            );
        }
        for body in ["", "[1]", "{"] {
            assert_eq!(sample(body).unwrap_err().code, "invalid_json", "{body:?}");
        }
    }
}
