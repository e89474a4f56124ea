//! The certificate handlers: HTTP in, ledger call, HTTP out.
//!
//! The bodies the handlers read and answer with are [`strata_api_types::certificates`]'s (what a handler
//! serializes is what the OpenAPI document's schema describes); first the functions that build answers
//! from the domain's types, then the handlers. Each operation's OpenAPI description is in
//! [`crate::openapi`].

use http::StatusCode;
use strata_api_types::certificates::{
    self as api, CertificateIssue, CertificatePage, ShareClassWrite,
};
use strata_core::certificates::{
    Certificate, CertificateId, ClassCode, DEFAULT_PAGE, IssueRequest, MAX_PAGE, ShareClass,
    class_not_found, validate_name,
};
use strata_core::time::rfc3339;
use strata_core::{Error, Stores};
use strata_http::request::{body, path_param, query_integer, query_string};
use strata_http::response::json;
use strata_http::{Request, Response, idempotency};

/// The API's view of a share class and its running totals.
fn share_class_body(c: &ShareClass) -> api::ShareClass {
    api::ShareClass {
        class: c.class.as_str().to_owned(),
        authorized: c.authorized,
        issued: c.issued,
        remaining: c.remaining(),
        next_number: c.next_number,
    }
}

/// The API's view of a certificate.
fn certificate_body(c: &Certificate) -> api::Certificate {
    api::Certificate {
        id: c.id(),
        class: c.class.as_str().to_owned(),
        number: c.number,
        name: c.name.clone(),
        amount: c.amount,
        issued_at: rfc3339(c.issued_at),
    }
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
    Ok(json(StatusCode::OK, &share_class_body(&class)))
}

/// `GET /share-classes/{class}` → `200` the class; `404 class_not_found`.
pub async fn get_class(stores: &Stores, req: Request) -> Result<Response, Error> {
    let class = path_class(&req)?;
    let found = stores
        .ledger
        .get_class(&class)
        .await?
        .ok_or_else(|| class_not_found(&class))?;
    Ok(json(StatusCode::OK, &share_class_body(&found)))
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
    Ok(json(StatusCode::CREATED, &certificate_body(&certificate)))
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
    Ok(json(StatusCode::OK, &certificate_body(&certificate)))
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
            certificates: page.iter().map(certificate_body).collect(),
            next_after,
        },
    ))
}
