//! The OpenAPI operations of the certificate handlers ([`crate::handlers`]), one per route of `ROUTES`, and
//! their parameters; the body types and their schemas are [`strata_api_types::certificates`]'s.

use serde_json::json;
use strata_api_types::certificates::{
    CERTIFICATE_ID_PATTERN, CLASS_CODE_PATTERN, Certificate, CertificateIssue, CertificatePage,
    ClassCodeString, ShareClass, ShareClassWrite,
};
use strata_core::certificates::{DEFAULT_PAGE, MAX_NAME_CHARS, MAX_PAGE, MAX_SHARES};
use strata_http::openapi::{
    Header, Operation, OperationBuilder, Shared, headers, honours_idempotency_key, idempotency_key,
    integer, json_body, link, ok, path_parameter, query_parameter, responses, schema_ref, string,
    unknown,
};
use utoipa::openapi::schema::ObjectBuilder;

// The body types' schemas state the core's limits; their crate (which builds without the core) keeps
// copies, which must not drift.
const _: () = assert!(strata_api_types::certificates::MAX_SHARES == MAX_SHARES);
const _: () = assert!(strata_api_types::certificates::MAX_NAME_CHARS == MAX_NAME_CHARS);
const _: () = assert!(strata_api_types::certificates::MAX_PAGE == MAX_PAGE);

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
            ok::<ShareClass>("The class and its running totals.")
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
                ok::<ShareClass>("The class and its running totals.")
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
            ok::<Certificate>("The certificate.")
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
            ("200", ok::<Certificate>("The certificate.").build().into()),
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
