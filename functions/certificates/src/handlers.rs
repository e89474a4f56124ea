//! The certificate handlers: HTTP in, ledger call, HTTP out.

use http::StatusCode;
use serde_json::{Value, json};
use strata_core::certificates::{
    Certificate, CertificateId, ClassCode, DEFAULT_PAGE, IssueRequest, MAX_PAGE, MAX_SHARES,
    ShareClass, class_not_found, validate_name,
};
use strata_core::time::rfc3339;
use strata_core::{Error, Stores};
use strata_http::request::{json_object, path_param, query_integer, query_string};
use strata_http::response::{from_result, json};
use strata_http::{Request, Response, idempotency};

fn class_json(c: &ShareClass) -> Value {
    json!({
        "class": c.class.as_str(),
        "authorized": c.authorized,
        "issued": c.issued,
        "remaining": c.remaining(),
        "next_number": c.next_number,
    })
}

fn certificate_json(c: &Certificate) -> Value {
    json!({
        "id": c.id(),
        "class": c.class.as_str(),
        "number": c.number,
        "name": c.name,
        "amount": c.amount,
        "issued_at": rfc3339(c.issued_at),
    })
}

fn path_class(req: &Request) -> Result<ClassCode, Error> {
    ClassCode::parse(&path_param(req, "class")?)
}

/// A class code from the body or query: invalid is `invalid_field` naming `class`.
fn field_class(raw: &str) -> Result<ClassCode, Error> {
    ClassCode::parse(raw).map_err(|e| Error::invalid_field("class", e.message.clone()))
}

/// `PUT /share-classes/{class}` with `{"authorized": N}` → `200` the class; `409 authorized_below_issued`.
pub async fn put_class(stores: &Stores, req: Request) -> Response {
    idempotency::run(stores, req, "share-classes-put", |req, _| async move {
        from_result(
            async {
                let class = path_class(&req)?;
                let authorized = json_object(&req)?.integer("authorized", 0, MAX_SHARES)?;
                let class = stores.ledger.put_class(&class, authorized).await?;
                Ok(json(StatusCode::OK, &class_json(&class)))
            }
            .await,
        )
    })
    .await
}

/// `GET /share-classes/{class}` → `200` the class; `404 class_not_found`.
pub async fn get_class(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let class = path_class(&req)?;
            let found = stores
                .ledger
                .get_class(&class)
                .await?
                .ok_or_else(|| class_not_found(&class))?;
            Ok(json(StatusCode::OK, &class_json(&found)))
        }
        .await,
    )
}

/// `POST /certificates` with `{"name","amount","class"}` → `201` the certificate;
/// `409 insufficient_shares` (with `remaining`), `404 class_not_found`.
pub async fn issue(stores: &Stores, req: Request) -> Response {
    idempotency::run(stores, req, "certificates-issue", |req, key| async move {
        from_result(
            async {
                let body = json_object(&req)?;
                let name = body.string("name")?;
                validate_name(&name)?;
                let amount = body.positive_integer("amount", MAX_SHARES)?;
                let class = field_class(&body.string("class")?)?;
                let request = IssueRequest {
                    class,
                    name,
                    amount,
                };
                let certificate = stores.ledger.issue(&request, key.as_deref()).await?;
                Ok(json(StatusCode::CREATED, &certificate_json(&certificate)))
            }
            .await,
        )
    })
    .await
}

/// `GET /certificates/{id}` → `200` the certificate; `404 certificate_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let raw = path_param(&req, "id")?;
            let id = CertificateId::parse(&raw)?;
            let certificate = stores.ledger.get_certificate(&id).await?.ok_or_else(|| {
                Error::not_found("certificate_not_found", format!("no certificate {raw:?}"))
            })?;
            Ok(json(StatusCode::OK, &certificate_json(&certificate)))
        }
        .await,
    )
}

/// `GET /certificates?class=CS&after=N&limit=M` → `200 {"certificates":[...],"next_after":n|null}`, in number
/// order; `next_after` is the `after` of the next page, `null` on the last one.
pub async fn list(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
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
            let next_after =
                last.filter(|n| page.len() == limit as usize && n + 1 < found.next_number);
            Ok(json(
                StatusCode::OK,
                &json!({
                    "certificates": page.iter().map(certificate_json).collect::<Vec<_>>(),
                    "next_after": next_after,
                }),
            ))
        }
        .await,
    )
}
