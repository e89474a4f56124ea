//! The OpenAPI operations of the certificate handlers ([`crate::handlers`]), one per route of `ROUTES`, and
//! the schemas their bodies' fields and parameters name.

use crate::handlers::{
    CertificateBody, CertificateIssue, CertificatePage, ShareClassBody, ShareClassWrite,
};
use serde_json::json;
use strata_core::certificates::{DEFAULT_PAGE, MAX_NAME_CHARS, MAX_PAGE, MAX_SHARES};
use strata_http::openapi::{
    Header, Operation, OperationBuilder, Shared, headers, honours_idempotency_key, idempotency_key,
    integer, json_body, link, ok, path_parameter, query_parameter, responses, schema_ref, string,
    unknown,
};
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// What [`ClassCode::parse`](strata_core::certificates::ClassCode::parse) accepts.
const CLASS_CODE_PATTERN: &str = "^[A-Z]{1,8}$";
/// What [`CertificateId::parse`](strata_core::certificates::CertificateId::parse) accepts.
const CERTIFICATE_ID_PATTERN: &str = "^[A-Z]{1,8}-[1-9][0-9]*$";

/// The schema of a share class code.
#[derive(Debug)]
pub struct ClassCodeString;

impl PartialSchema for ClassCodeString {
    fn schema() -> RefOr<Schema> {
        string(
            Some("1 to 8 letters A-Z."),
            None,
            None,
            Some(CLASS_CODE_PATTERN),
        )
        .into()
    }
}

impl ToSchema for ClassCodeString {}

/// A number of shares: `0..=MAX_SHARES`.
pub(crate) fn shares() -> utoipa::openapi::Object {
    integer(0, Some(MAX_SHARES))
}

/// An amount of shares: `1..=MAX_SHARES`.
pub(crate) fn amount() -> utoipa::openapi::Object {
    integer(1, Some(MAX_SHARES))
}

/// A certificate number, or the next one: from 1.
pub(crate) fn number() -> utoipa::openapi::Object {
    integer(1, None)
}

/// The number the next certificate gets.
pub(crate) fn next_number() -> utoipa::openapi::Object {
    ObjectBuilder::from(number())
        .description(Some("The number the next certificate gets."))
        .build()
}

/// A holder's name: what [`validate_name`](strata_core::certificates::validate_name) accepts.
pub(crate) fn holder_name() -> utoipa::openapi::Object {
    strata_http::openapi::name(MAX_NAME_CHARS)
}

pub(crate) fn certificate_id() -> utoipa::openapi::Object {
    string(
        Some("`<class>-<number>`."),
        None,
        None,
        Some(CERTIFICATE_ID_PATTERN),
    )
}

pub(crate) fn date_time() -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        )))
        .build()
}

/// At most [`MAX_PAGE`] certificates.
pub(crate) fn page_items() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(schema_ref::<CertificateBody>())
        .max_items(Some(MAX_PAGE as usize))
        .build()
}

/// The `after` of the next page; `null` on the last one.
pub(crate) fn next_after() -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::Integer,
            utoipa::openapi::schema::Type::Null,
        ]))
        .minimum(Some(1))
        .description(Some(
            "The `after` of the next page; `null` on the last one.",
        ))
        .build()
}

fn class_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "class",
        "The share class code.",
        schema_ref::<ClassCodeString>(),
        json!("CS"),
    )
}

fn certificate_id_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "id",
        "`<class>-<number>`, e.g. `CS-1`; anything else is `404 certificate_not_found`.",
        string(None, None, None, Some(CERTIFICATE_ID_PATTERN)),
        json!("CS-1"),
    )
}

/// The OpenAPI operation of [`crate::handlers::put_class`].
pub fn put_class() -> Operation {
    let outcome = unknown("`authorized` may have been set; setting it again is harmless");
    let op = OperationBuilder::new()
        .tag("certificates")
        .summary(Some("Create a share class or change its authorization"))
        .description(Some(honours_idempotency_key(
            "The authorization may never drop below the shares already issued.",
        )))
        .parameter(class_parameter())
        .parameter(idempotency_key())
        .request_body(Some(
            json_body::<ShareClassWrite>(true, json!({"authorized": 1000000})).build(),
        ));
    responses(op, [
        (
            "200",
            ok::<ShareClassBody>("The class and its running totals.")
                .link("ReadClass", link("share-classes-get", "Read the class back.", &[("class", "$response.body#/class")]))
                .link("ListCertificates", link("certificates-list", "List the class's certificates.", &[("class", "$response.body#/class")]))
                .extensions(headers(&[Header::IdempotentReplayed], &[]))
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_class` (not 1 to 8 letters A-Z), `invalid_path`, `invalid_json`, `invalid_field` (`authorized` not an integer from 0 to 2^53-1) or `invalid_idempotency_key`."),
        Shared::Unauthorized.plain(),
        Shared::RequestTimeout.plain(),
        Shared::Conflict.with("`authorized_below_issued` (with `issued`) or `request_in_progress`."),
        Shared::PayloadTooLarge.with("`body_too_large`."),
        Shared::IdempotencyKeyReused.with("`idempotency_key_reused`."),
        Shared::TooManyRequests.outcome(&outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome(&outcome),
    ])
    .build()
}

/// The OpenAPI operation of [`crate::handlers::get_class`].
pub fn get_class() -> Operation {
    let op = OperationBuilder::new()
        .tag("certificates")
        .summary(Some("Read a share class"))
        .description(Some(
            "Default classes (`CS`, `PS` unless configured otherwise) exist from the first start.",
        ))
        .parameter(class_parameter());
    responses(
        op,
        [
            (
                "200",
                ok::<ShareClassBody>("The class and its running totals.")
                    .build()
                    .into(),
            ),
            Shared::BadRequest.with("`invalid_class` or `invalid_path`."),
            Shared::Unauthorized.plain(),
            Shared::NotFound.with("`class_not_found`."),
            Shared::TooManyRequests.plain(),
            Shared::InternalError.plain(),
            Shared::StoreUnavailable.plain(),
        ],
    )
    .build()
}

/// The OpenAPI operation of [`crate::handlers::issue`].
pub fn issue() -> Operation {
    let outcome = unknown(
        "a certificate may have been issued; retry with the same `Idempotency-Key` to get it exactly once",
    );
    let op = OperationBuilder::new()
        .tag("certificates")
        .summary(Some("Issue a certificate"))
        .description(Some(honours_idempotency_key("Takes the class's next number: numbers start at 1 per class and are sequential, unique and gapless. Durable once `201` is sent.")))
        .parameter(idempotency_key())
        .request_body(Some(
            json_body::<CertificateIssue>(true, json!({"name": "Salt Bae", "amount": 10, "class": "CS"}))
                .build(),
        ));
    responses(op, [
        (
            "201",
            ok::<CertificateBody>("The certificate.")
                .link("ReadCertificate", link("certificates-get", "Read the certificate back.", &[("id", "$response.body#/id")]))
                .link("ListCertificates", link("certificates-list", "List the class's certificates.", &[("class", "$response.body#/class")]))
                .link("ReadClass", link("share-classes-get", "Read the class's totals.", &[("class", "$response.body#/class")]))
                .extensions(headers(&[Header::IdempotentReplayed], &[]))
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_json`, `invalid_field` (`name` not 1 to 256 characters or with control characters, `amount` not an integer from 1 to 2^53-1, `class` not 1 to 8 letters A-Z) or `invalid_idempotency_key`. No number is used."),
        Shared::Unauthorized.plain(),
        Shared::NotFound.with("`class_not_found`."),
        Shared::RequestTimeout.plain(),
        Shared::Conflict.with("`insufficient_shares` (with `remaining`; no number is used) or `request_in_progress`."),
        Shared::PayloadTooLarge.with("`body_too_large`."),
        Shared::IdempotencyKeyReused.with("`idempotency_key_reused`."),
        Shared::TooManyRequests.outcome(&outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome(&outcome),
    ])
    .build()
}

/// The OpenAPI operation of [`crate::handlers::list`].
pub fn list() -> Operation {
    let op = OperationBuilder::new()
        .tag("certificates")
        .summary(Some("List a class's certificates"))
        .description(Some(
            "In number order, a page at a time: pass the previous page's `next_after` as `after`.",
        ))
        .parameter(query_parameter(
            "class",
            true,
            "The share class.",
            string(None, None, None, Some(CLASS_CODE_PATTERN)),
            json!("CS"),
        ))
        .parameter(query_parameter(
            "after",
            false,
            "Only certificates with a greater number (the previous page's `next_after`).",
            ObjectBuilder::from(integer(0, Some(u64::MAX))).default(Some(json!(0))),
            json!(0),
        ))
        .parameter(query_parameter(
            "limit",
            false,
            "Largest page.",
            ObjectBuilder::from(integer(1, Some(u64::from(MAX_PAGE))))
                .default(Some(json!(DEFAULT_PAGE))),
            json!(10),
        ));
    responses(op, [
        (
            "200",
            ok::<CertificatePage>("A page of certificates.")
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_field`: `class` missing or not 1 to 8 letters A-Z, `after` not an integer from 0, `limit` not an integer from 1 to 1000."),
        Shared::Unauthorized.plain(),
        Shared::NotFound.with("`class_not_found`."),
        Shared::TooManyRequests.plain(),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.plain(),
    ])
    .build()
}

/// The OpenAPI operation of [`crate::handlers::get`].
pub fn get() -> Operation {
    let op = OperationBuilder::new()
        .tag("certificates")
        .summary(Some("Read a certificate"))
        .description(Some(
            "Any id that is not `<class>-<number>` of an issued certificate is `404`.",
        ))
        .parameter(certificate_id_parameter());
    responses(
        op,
        [
            (
                "200",
                ok::<CertificateBody>("The certificate.").build().into(),
            ),
            Shared::BadRequest.with("`invalid_path`."),
            Shared::Unauthorized.plain(),
            Shared::NotFound.with("`certificate_not_found`."),
            Shared::TooManyRequests.plain(),
            Shared::InternalError.plain(),
            Shared::StoreUnavailable.plain(),
        ],
    )
    .build()
}
