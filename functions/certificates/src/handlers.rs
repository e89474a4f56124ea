//! The certificate handlers: HTTP in, ledger call, HTTP out.
//!
//! Next to each handler: the types of the bodies it answers with (what it serializes is what the OpenAPI
//! document's schema describes) and reads, and its `*_openapi` function, the operation of the document that
//! its route in `ROUTES` carries.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_core::certificates::{
    Certificate, CertificateId, ClassCode, DEFAULT_PAGE, IssueRequest, MAX_NAME_CHARS, MAX_PAGE,
    MAX_SHARES, ShareClass, class_not_found, validate_name,
};
use strata_core::time::rfc3339;
use strata_core::{Error, Stores};
use strata_http::openapi::{
    Header, Operation, OperationBuilder, Shared, headers, honours_idempotency_key, idempotency_key,
    integer, json_body, link, ok, path_parameter, query_parameter, responses, schema_ref, string,
    unknown,
};
use strata_http::request::{body, path_param, query_integer, query_string};
use strata_http::response::json;
use strata_http::{Request, Response, idempotency};
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// What [`ClassCode::parse`] accepts.
const CLASS_CODE_PATTERN: &str = "^[A-Z]{1,8}$";
/// What [`CertificateId::parse`] accepts.
const CERTIFICATE_ID_PATTERN: &str = "^[A-Z]{1,8}-[1-9][0-9]*$";

/// The schema of a share class code.
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
fn shares() -> utoipa::openapi::Object {
    integer(0, Some(MAX_SHARES))
}

/// An amount of shares: `1..=MAX_SHARES`.
fn amount() -> utoipa::openapi::Object {
    integer(1, Some(MAX_SHARES))
}

/// A certificate number, or the next one: from 1.
fn number() -> utoipa::openapi::Object {
    integer(1, None)
}

/// The number the next certificate gets.
fn next_number() -> utoipa::openapi::Object {
    ObjectBuilder::from(number())
        .description(Some("The number the next certificate gets."))
        .build()
}

/// A holder's name: what [`validate_name`] accepts.
fn holder_name() -> utoipa::openapi::Object {
    strata_http::openapi::name(MAX_NAME_CHARS)
}

/// The body of `PUT /share-classes/{class}`.
#[derive(Deserialize, ToSchema)]
pub struct ShareClassWrite {
    #[schema(schema_with = shares)]
    pub authorized: u64,
}

/// A share class and its running totals.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ShareClass)]
pub struct ShareClassBody {
    #[schema(value_type = ClassCodeString)]
    pub class: String,
    #[schema(schema_with = shares)]
    pub authorized: u64,
    #[schema(schema_with = shares)]
    pub issued: u64,
    #[schema(schema_with = shares)]
    pub remaining: u64,
    #[schema(schema_with = next_number)]
    pub next_number: u64,
}

impl From<&ShareClass> for ShareClassBody {
    fn from(c: &ShareClass) -> Self {
        Self {
            class: c.class.as_str().to_owned(),
            authorized: c.authorized,
            issued: c.issued,
            remaining: c.remaining(),
            next_number: c.next_number,
        }
    }
}

/// The body of `POST /certificates`.
#[derive(Deserialize, ToSchema)]
pub struct CertificateIssue {
    #[schema(schema_with = holder_name)]
    pub name: String,
    #[schema(schema_with = amount)]
    pub amount: u64,
    #[schema(value_type = ClassCodeString)]
    pub class: String,
}

fn certificate_id() -> utoipa::openapi::Object {
    string(
        Some("`<class>-<number>`."),
        None,
        None,
        Some(CERTIFICATE_ID_PATTERN),
    )
}

fn date_time() -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        )))
        .build()
}

/// A certificate.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Certificate)]
pub struct CertificateBody {
    #[schema(schema_with = certificate_id)]
    pub id: String,
    #[schema(value_type = ClassCodeString)]
    pub class: String,
    #[schema(schema_with = number)]
    pub number: u64,
    #[schema(schema_with = holder_name)]
    pub name: String,
    #[schema(schema_with = amount)]
    pub amount: u64,
    #[schema(schema_with = date_time)]
    pub issued_at: String,
}

impl From<&Certificate> for CertificateBody {
    fn from(c: &Certificate) -> Self {
        Self {
            id: c.id(),
            class: c.class.as_str().to_owned(),
            number: c.number,
            name: c.name.clone(),
            amount: c.amount,
            issued_at: rfc3339(c.issued_at),
        }
    }
}

/// At most [`MAX_PAGE`] certificates.
fn page_items() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(schema_ref::<CertificateBody>())
        .max_items(Some(MAX_PAGE as usize))
        .build()
}

/// The `after` of the next page; `null` on the last one.
fn next_after() -> utoipa::openapi::Object {
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

/// A page of certificates, in number order.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatePage {
    #[schema(schema_with = page_items)]
    pub certificates: Vec<CertificateBody>,
    #[schema(schema_with = next_after, required = true)]
    pub next_after: Option<u64>,
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

fn path_class(req: &Request) -> Result<ClassCode, Error> {
    ClassCode::parse(&path_param(req, "class")?)
}

/// A class code from the body or query: invalid is `invalid_field` naming `class`.
fn field_class(raw: &str) -> Result<ClassCode, Error> {
    ClassCode::parse(raw).map_err(|e| Error::invalid_field("class", e.message.clone()))
}

/// `PUT /share-classes/{class}` with `{"authorized": N}` → `200` the class; `409 authorized_below_issued`.
pub async fn put_class(stores: &Stores, req: Request) -> Result<Response, Error> {
    let class = path_class(&req)?;
    let authorized = body::<ShareClassWrite>(&req)?.authorized;
    let class = stores.ledger.put_class(&class, authorized).await?;
    Ok(json(StatusCode::OK, &ShareClassBody::from(&class)))
}

/// `GET /share-classes/{class}` → `200` the class; `404 class_not_found`.
pub async fn get_class(stores: &Stores, req: Request) -> Result<Response, Error> {
    let class = path_class(&req)?;
    let found = stores
        .ledger
        .get_class(&class)
        .await?
        .ok_or_else(|| class_not_found(&class))?;
    Ok(json(StatusCode::OK, &ShareClassBody::from(&found)))
}

/// `POST /certificates` with `{"name","amount","class"}` → `201` the certificate;
/// `409 insufficient_shares` (with `remaining`), `404 class_not_found`.
pub async fn issue(stores: &Stores, req: Request) -> Result<Response, Error> {
    let CertificateIssue {
        name,
        amount,
        class,
    } = body(&req)?;
    validate_name(&name)?;
    let request = IssueRequest {
        class: field_class(&class)?,
        name,
        amount,
    };
    let certificate = stores
        .ledger
        .issue(&request, idempotency::key(&req))
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &CertificateBody::from(&certificate),
    ))
}

/// `GET /certificates/{id}` → `200` the certificate; `404 certificate_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Result<Response, Error> {
    let raw = path_param(&req, "id")?;
    let id = CertificateId::parse(&raw)?;
    let certificate = stores.ledger.get_certificate(&id).await?.ok_or_else(|| {
        Error::not_found(
            "certificate_not_found",
            format!("no certificate {}", strata_core::error::quote(&raw)),
        )
    })?;
    Ok(json(StatusCode::OK, &CertificateBody::from(&certificate)))
}

/// `GET /certificates?class=CS&after=N&limit=M` → `200 {"certificates":[...],"next_after":n|null}`, in number
/// order; `next_after` is the `after` of the next page, `null` on the last one.
pub async fn list(stores: &Stores, req: Request) -> Result<Response, Error> {
    let class = field_class(&query_string(&req, "class")?)?;
    let after = query_integer(&req, "after", 0, 0, u64::MAX)?;
    let limit = query_integer(
        &req,
        "limit",
        u64::from(DEFAULT_PAGE),
        1,
        u64::from(MAX_PAGE),
    )? as u32;
    let found = stores
        .ledger
        .get_class(&class)
        .await?
        .ok_or_else(|| class_not_found(&class))?;
    let page = stores.ledger.list(&class, after, limit).await?;
    let last = page.last().map(|c| c.number);
    let next_after = last.filter(|n| page.len() == limit as usize && n + 1 < found.next_number);
    Ok(json(
        StatusCode::OK,
        &CertificatePage {
            certificates: page.iter().map(CertificateBody::from).collect(),
            next_after,
        },
    ))
}

/// The OpenAPI operation of [`put_class`].
pub fn put_class_openapi() -> Operation {
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

/// The OpenAPI operation of [`get_class`].
pub fn get_class_openapi() -> Operation {
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

/// The OpenAPI operation of [`issue`].
pub fn issue_openapi() -> Operation {
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

/// The OpenAPI operation of [`list`].
pub fn list_openapi() -> Operation {
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

/// The OpenAPI operation of [`get`].
pub fn get_openapi() -> Operation {
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
