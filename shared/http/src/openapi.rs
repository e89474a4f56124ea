//! The pieces of the OpenAPI document every service shares: the error JSON's schema (of the type that
//! serializes it), the shared error responses, the headers, and small builders the services' operation
//! functions (`fn() -> Operation`, in each service's `openapi` module) are written with.
//!
//! utoipa 5's typed model has no `required` on a header and no `components/headers`; the headers the
//! document names by reference (`retry-after`, `idempotent-replayed`, `www-authenticate`) are therefore
//! written as JSON under the response's and the components' extensions, where they serialize exactly as
//! OpenAPI has them.

use serde_json::{Map, Value, json};
use strata_core::idempotency::MAX_KEY_CHARS;
use utoipa::ToSchema;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Content, ContentBuilder, Ref, RefOr, Required, Response, ResponseBuilder};

/// The error JSON's type and schema (built by [`crate::response::error`]).
pub use strata_api_types::error::{EXTRA_FIELDS, Error, ErrorDetail, Extra};
/// The schema builders the body types ([`strata_api_types`]) are written with.
pub use strata_api_types::schema::{
    NO_CONTROL, NO_SPACE_OR_CONTROL, constant, integer, name, string,
};
/// The OpenAPI library, for the services' schema types.
pub use utoipa;
/// An operation of the document, and its builder.
pub use utoipa::openapi::path::{Operation, OperationBuilder};

/// The schemas [`schema_ref`] named while [`collect_schemas`] runs, with the schemas they refer to.
type Named = Vec<(String, RefOr<Schema>)>;

thread_local! {
    static NAMED: std::cell::RefCell<Option<Named>> = const { std::cell::RefCell::new(None) };
}

/// A schema by reference: `#/components/schemas/<T's name>`. Inside [`collect_schemas`], `T` (and what it
/// refers to) becomes one of the document's components, so an operation's types need no list of their own.
pub fn schema_ref<T: ToSchema>() -> Ref {
    let collecting = NAMED.with(|named| named.borrow().is_some());
    // Built outside the borrow: building a schema may name others (which are added first).
    if collecting && !NAMED.with(|named| has(named.borrow().as_ref(), &T::name())) {
        let found = schema_and_refs::<T>();
        NAMED.with(|named| {
            if let Some(named) = named.borrow_mut().as_mut() {
                merge(named, found);
            }
        });
    }
    Ref::from_schema_name(T::name())
}

fn has(named: Option<&Named>, name: &str) -> bool {
    named.is_some_and(|named| named.iter().any(|(n, _)| n == name))
}

fn schema_and_refs<T: ToSchema>() -> Named {
    let mut found = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut found);
    found
}

fn merge(named: &mut Named, found: Named) {
    for (name, schema) in found {
        if !named.iter().any(|(n, _)| *n == name) {
            named.push((name, schema));
        }
    }
}

/// Adds `T` and the schemas it refers to, each once, in the order they are first named.
pub fn add_schema<T: ToSchema>(named: &mut Named) {
    merge(named, schema_and_refs::<T>());
}

/// Runs `build` (the operations of a document) and returns what it built with every schema it named.
pub fn collect_schemas<R>(build: impl FnOnce() -> R) -> (R, Named) {
    NAMED.with(|named| *named.borrow_mut() = Some(Vec::new()));
    let built = build();
    let named = NAMED
        .with(|named| named.borrow_mut().take())
        .unwrap_or_default();
    (built, named)
}

/// `application/json` content of schema `T`.
pub fn json<T: ToSchema>() -> Content {
    ContentBuilder::new()
        .schema(Some(schema_ref::<T>()))
        .build()
}

/// A success response with a JSON body of schema `T`.
pub fn ok<T: ToSchema>(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json::<T>())
}

/// A JSON request body of schema `T`, with the example the suite sends.
pub fn json_body<T: ToSchema>(required: bool, example: Value) -> RequestBodyBuilder {
    RequestBodyBuilder::new()
        .required(Some(required_if(required)))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema_ref::<T>()))
                .example(Some(example))
                .build(),
        )
}

/// A link to another operation, its parameters taken from this response.
pub fn link(operation_id: &str, description: &str, parameters: &[(&str, &str)]) -> Link {
    parameters
        .iter()
        .fold(
            LinkBuilder::new()
                .description(description)
                // utoipa 5's `Link` serializes its `operation_id` field as `operation_id`, not OpenAPI's
                // `operationId`; the extensions hold the field under its OpenAPI name instead.
                .extensions(Some(Extensions::from_iter([(
                    "operationId",
                    Value::from(operation_id),
                )]))),
            |b, (name, expression)| b.parameter(*name, *expression),
        )
        .build()
}

/// A required path parameter.
pub fn path_parameter(
    name: &str,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
    example: Value,
) -> Parameter {
    parameter(ParameterIn::Path, name, true, description, schema, example)
}

/// A query parameter.
pub fn query_parameter(
    name: &str,
    required: bool,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
    example: Value,
) -> Parameter {
    parameter(
        ParameterIn::Query,
        name,
        required,
        description,
        schema,
        example,
    )
}

fn parameter(
    at: ParameterIn,
    name: &str,
    required: bool,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
    example: Value,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(at)
        .required(required_if(required))
        .description(Some(description))
        .schema(Some(schema))
        .example(Some(example))
        .build()
}

fn required_if(required: bool) -> Required {
    if required {
        Required::True
    } else {
        Required::False
    }
}

/// The `Idempotency-Key` header of the operations that go through [`crate::idempotency::run`].
pub fn idempotency_key() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "1 to 255 visible ASCII characters, remembered for at least 24 hours; scoped to the operation. Otherwise `400 invalid_idempotency_key`.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_KEY_CHARS))
                .pattern(Some("^[\\x21-\\x7e]+$")),
        ))
        .example(Some(json!("8f14e45f-ceea-467f-a8f4-1b2c3d4e5f60")))
        .build()
}

/// The headers of `components/headers`, as JSON (see the module's note).
#[derive(Debug, Clone, Copy)]
pub enum Header {
    /// `retry-after`, always sent with the response.
    RetryAfter,
    /// `retry-after`, sent with some of the response's errors.
    RetryAfterOptional,
    /// `idempotent-replayed: true` on a replayed answer.
    IdempotentReplayed,
    /// `www-authenticate` on a `401`.
    WwwAuthenticate,
}

impl Header {
    /// Every header, in the order of `components/headers`.
    pub const ALL: [Header; 4] = [
        Header::RetryAfter,
        Header::RetryAfterOptional,
        Header::IdempotentReplayed,
        Header::WwwAuthenticate,
    ];

    /// Its name under `components/headers`.
    pub fn component_name(self) -> &'static str {
        match self {
            Header::RetryAfter => "RetryAfter",
            Header::RetryAfterOptional => "RetryAfterOptional",
            Header::IdempotentReplayed => "IdempotentReplayed",
            Header::WwwAuthenticate => "WwwAuthenticate",
        }
    }

    /// The header's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Header::RetryAfter | Header::RetryAfterOptional => "retry-after",
            Header::IdempotentReplayed => "idempotent-replayed",
            Header::WwwAuthenticate => "www-authenticate",
        }
    }

    /// Its definition under `components/headers`, as JSON.
    pub fn definition(self) -> Value {
        match self {
            Header::RetryAfter => json!({
                "description": "Seconds to wait before retrying.",
                "required": true,
                "schema": {"type": "string", "pattern": "^[0-9]+$"}
            }),
            Header::RetryAfterOptional => json!({
                "description": "Seconds to wait before retrying (with `request_in_progress`).",
                "required": false,
                "schema": {"type": "string", "pattern": "^[0-9]+$"}
            }),
            Header::IdempotentReplayed => json!({
                "description": "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`.",
                "required": false,
                "schema": {"const": "true"}
            }),
            Header::WwwAuthenticate => json!({
                "description": "The authentication scheme to use: `Bearer` (with a `realm`).",
                "required": true,
                "schema": {"type": "string", "pattern": "^Bearer( |$)"}
            }),
        }
    }
}

/// A response's headers: references to `components/headers`, and inline ones (name, definition).
pub fn headers(refs: &[Header], inline: &[(&str, Value)]) -> Option<Extensions> {
    let mut map = Map::new();
    for h in refs {
        map.insert(
            h.name().to_owned(),
            json!({"$ref": format!("#/components/headers/{}", h.component_name())}),
        );
    }
    for (name, definition) in inline {
        map.insert((*name).to_owned(), definition.clone());
    }
    Some(Extensions::from_iter([("headers", Value::Object(map))]))
}

/// The shared error responses (`components/responses`); operations name them with
/// [`Shared::with`] (adding the error codes this operation answers) or [`Shared::plain`].
#[derive(Debug, Clone, Copy)]
pub enum Shared {
    /// `400`.
    BadRequest,
    /// `404`.
    NotFound,
    /// `409`.
    Conflict,
    /// `413`.
    PayloadTooLarge,
    /// `422`.
    IdempotencyKeyReused,
    /// `429`.
    TooManyRequests,
    /// `500`.
    InternalError,
    /// `503`.
    StoreUnavailable,
    /// `401`.
    Unauthorized,
    /// `408`.
    RequestTimeout,
    /// `415`.
    UnsupportedMediaType,
}

impl Shared {
    /// Every shared response, in the order of `components/responses`.
    pub const ALL: [Shared; 11] = [
        Shared::BadRequest,
        Shared::NotFound,
        Shared::Conflict,
        Shared::PayloadTooLarge,
        Shared::IdempotencyKeyReused,
        Shared::TooManyRequests,
        Shared::InternalError,
        Shared::StoreUnavailable,
        Shared::Unauthorized,
        Shared::RequestTimeout,
        Shared::UnsupportedMediaType,
    ];

    /// Its name under `components/responses`.
    pub fn name(self) -> &'static str {
        match self {
            Shared::BadRequest => "BadRequest",
            Shared::NotFound => "NotFound",
            Shared::Conflict => "Conflict",
            Shared::PayloadTooLarge => "PayloadTooLarge",
            Shared::IdempotencyKeyReused => "IdempotencyKeyReused",
            Shared::TooManyRequests => "TooManyRequests",
            Shared::InternalError => "InternalError",
            Shared::StoreUnavailable => "StoreUnavailable",
            Shared::Unauthorized => "Unauthorized",
            Shared::RequestTimeout => "RequestTimeout",
            Shared::UnsupportedMediaType => "UnsupportedMediaType",
        }
    }

    /// The response's status code.
    pub fn status(self) -> &'static str {
        match self {
            Shared::BadRequest => "400",
            Shared::NotFound => "404",
            Shared::Conflict => "409",
            Shared::PayloadTooLarge => "413",
            Shared::IdempotencyKeyReused => "422",
            Shared::TooManyRequests => "429",
            Shared::InternalError => "500",
            Shared::StoreUnavailable => "503",
            Shared::Unauthorized => "401",
            Shared::RequestTimeout => "408",
            Shared::UnsupportedMediaType => "415",
        }
    }

    /// The component itself.
    pub fn response(self) -> Response {
        let description = match self {
            Shared::BadRequest => "Malformed or invalid input; nothing was changed.".to_owned(),
            Shared::NotFound => "The thing named does not exist.".to_owned(),
            Shared::Conflict => "The request conflicts with the current state; nothing was changed. `request_in_progress` (an `Idempotency-Key` whose first request is still running) comes with `retry-after`.".to_owned(),
            Shared::PayloadTooLarge => "The request or one of its parts is too large; nothing was changed.".to_owned(),
            Shared::IdempotencyKeyReused => "Within its retention, the `Idempotency-Key` was used on this operation with a different request: another body, or another path (other path parameters of the same operation). Keys are scoped per operation: the same key on another operation is another key.".to_owned(),
            Shared::TooManyRequests => "Throttled; retry after `retry-after` seconds: `rate_limited` (over the server's rate limit, when one is configured; nothing was done) or `store_throttled` (DynamoDB throttled the request; a read changed nothing, and what a write's throttle means is said on each operation).".to_owned(),
            Shared::InternalError => "`internal_error`: a real internal fault, logged; no details are sent.".to_owned(),
            Shared::StoreUnavailable => "`store_unavailable`: the store cannot take the request right now, or did not confirm it; retry after `retry-after` seconds. A read changed nothing; what a write's `503` means is said on each operation (nothing was written, or the outcome is unknown); a retry with the same `Idempotency-Key` applies it at most once.".to_owned(),
            Shared::Unauthorized => "`unauthorized`: from the local server started with `--auth-token TOKEN` (or `STRATA_AUTH_TOKEN`): the request has no `Authorization: Bearer TOKEN` header, or not that token. On AWS with `AuthMode=jwt`, API Gateway answers 401 itself to a missing or invalid token (and 403 to a token without the route's scope; under `AuthMode=iam`, 403 to a signature that does not allow the route), with its own body `{\"message\": ...}`. Nothing was done.".to_owned(),
            Shared::RequestTimeout => "`request_timeout`: local server only: the request's body did not arrive within the read timeout (`strata serve --read-timeout`, 10 s unless configured). Nothing was done.".to_owned(),
            Shared::UnsupportedMediaType => "`unsupported_media_type`: local server only: the body is not `content-type: application/json` (a web page can send `text/plain` or a form to another site without asking it, but not JSON). Nothing was done.".to_owned(),
        };
        let header_refs: &[Header] = match self {
            Shared::Conflict => &[Header::RetryAfterOptional, Header::IdempotentReplayed],
            Shared::TooManyRequests | Shared::StoreUnavailable => &[Header::RetryAfter],
            Shared::Unauthorized => &[Header::WwwAuthenticate],
            _ => &[],
        };
        let mut response = ResponseBuilder::new()
            .description(description)
            .content("application/json", json::<Error>());
        if !header_refs.is_empty() {
            response = response.extensions(headers(header_refs, &[]));
        }
        response.build()
    }

    fn reference(self, description: &str) -> RefOr<Response> {
        let mut r = Ref::new(format!("#/components/responses/{}", self.name()));
        r.description = description.to_owned();
        RefOr::Ref(r)
    }

    /// The shared response as this operation answers it: `(status, reference)`, the description naming
    /// the error codes in backquotes (`tests/tests/suite/contract.rs` reads them).
    pub fn with(self, description: &str) -> (&'static str, RefOr<Response>) {
        (self.status(), self.reference(description))
    }

    /// The shared response with its own description.
    pub fn plain(self) -> (&'static str, RefOr<Response>) {
        self.with("")
    }
}

/// An operation's description followed by what its `Idempotency-Key` does (the operations whose route
/// declares an idempotency scope, see [`crate::handler!`]).
pub fn honours_idempotency_key(description: &str) -> String {
    format!(
        "{description} Honours `Idempotency-Key`: a retry with the same key, method, path and body gets \
         the original status and body (with `idempotent-replayed: true`) and changes nothing; the same key \
         with another request is `422`; a retry while the first is still running is \
         `409 request_in_progress`."
    )
}

/// What a write may have done when DynamoDB did not confirm it: "the outcome is unknown on DynamoDB:
/// {what}" (an [`Shared::outcome`]).
pub fn unknown(what: &str) -> String {
    format!("the outcome is unknown on DynamoDB: {what}")
}

impl Shared {
    /// A write's `429` (`rate_limited`, `store_throttled`) or `503` (`store_unavailable`) response, saying
    /// what the write may have done when the store throttled it or did not answer: `outcome`.
    pub fn outcome(self, outcome: &str) -> (&'static str, RefOr<Response>) {
        match self {
            Shared::TooManyRequests => self.with(&format!(
                "`rate_limited`: nothing was done. `store_throttled`: {outcome}. Retry after \
                 `retry-after` seconds."
            )),
            _ => self.with(&format!(
                "`store_unavailable`: {outcome}; retry after `retry-after` seconds."
            )),
        }
    }

    /// [`Shared::outcome`] followed by `more`: the other errors of the same status.
    pub fn outcome_and(self, outcome: &str, more: &str) -> (&'static str, RefOr<Response>) {
        let (status, mut response) = self.outcome(outcome);
        if let RefOr::Ref(r) = &mut response {
            r.description = format!("{} {more}", r.description);
        }
        (status, response)
    }

    /// [`Shared::outcome`] of a single-key `action` ("write", "delete") whose outcome is unknown on
    /// DynamoDB, and nothing on the embedded store.
    pub fn unknown_outcome(self, action: &str) -> (&'static str, RefOr<Response>) {
        self.outcome(&unknown(&format!(
            "the {action} may or may not have been applied (on the embedded store nothing was \
             written)"
        )))
    }
}

/// Adds responses to an operation.
pub fn responses(
    mut op: OperationBuilder,
    list: impl IntoIterator<Item = (&'static str, RefOr<Response>)>,
) -> OperationBuilder {
    for (status, response) in list {
        op = op.response(status, response);
    }
    op
}
