//! The stock-certificate bodies (CONTRACT.md §2): `/share-classes/{class}` and `/certificates`.

use crate::schema::{integer, nullable_integer, string};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The most shares a class may authorize, 2^53 - 1 (`strata_core::certificates::MAX_SHARES`, which the
/// service checks is the same).
pub const MAX_SHARES: u64 = (1 << 53) - 1;
/// The longest holder name in characters (`strata_core::certificates::MAX_NAME_CHARS`, likewise).
pub const MAX_NAME_CHARS: usize = 256;
/// The largest page of `GET /certificates` (`strata_core::certificates::MAX_PAGE`, likewise).
pub const MAX_PAGE: u32 = 1000;
// `CertificatePage`'s `max_items` is a literal (utoipa's attributes take no constants).
const _: () = assert!(MAX_PAGE == 1000);

/// What `strata_core::certificates::ClassCode::parse` accepts.
pub const CLASS_CODE_PATTERN: &str = "^[A-Z]{1,8}$";
/// What `strata_core::certificates::CertificateId::parse` accepts.
pub const CERTIFICATE_ID_PATTERN: &str = "^[A-Z]{1,8}-[1-9][0-9]*$";

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

/// A holder's name: what `strata_core::certificates::validate_name` accepts.
fn holder_name() -> utoipa::openapi::Object {
    crate::schema::name(MAX_NAME_CHARS)
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
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .build()
}

/// The `after` of the next page; `null` on the last one.
fn next_after() -> utoipa::openapi::Object {
    nullable_integer(1, "The `after` of the next page; `null` on the last one.")
}

/// The body of `PUT /share-classes/{class}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShareClassWrite {
    /// The shares the class may issue in all; never below those already issued.
    #[schema(schema_with = shares)]
    pub authorized: u64,
}

/// A share class and its running totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct ShareClass {
    #[schema(value_type = ClassCodeString)]
    pub class: String,
    /// The shares the class may issue in all.
    #[schema(schema_with = shares)]
    pub authorized: u64,
    /// The shares of the certificates issued so far.
    #[schema(schema_with = shares)]
    pub issued: u64,
    /// `authorized - issued`.
    #[schema(schema_with = shares)]
    pub remaining: u64,
    /// The number the next certificate of the class gets.
    #[schema(schema_with = next_number)]
    pub next_number: u64,
}

/// The body of `POST /certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct CertificateIssue {
    /// The holder: 1 to 256 characters, no control characters.
    #[schema(schema_with = holder_name)]
    pub name: String,
    /// The shares: from 1 to what the class has left.
    #[schema(schema_with = amount)]
    pub amount: u64,
    #[schema(value_type = ClassCodeString)]
    pub class: String,
}

/// A certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct Certificate {
    /// `<CLASS>-<number>`, e.g. `CS-1`.
    #[schema(schema_with = certificate_id)]
    pub id: String,
    #[schema(value_type = ClassCodeString)]
    pub class: String,
    /// From 1 per class, sequential and gapless.
    #[schema(schema_with = number)]
    pub number: u64,
    /// The holder.
    #[schema(schema_with = holder_name)]
    pub name: String,
    /// The shares.
    #[schema(schema_with = amount)]
    pub amount: u64,
    /// RFC 3339 in UTC with milliseconds.
    #[schema(schema_with = date_time)]
    pub issued_at: String,
}

/// A page of certificates, in number order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct CertificatePage {
    #[schema(max_items = 1000)]
    pub certificates: Vec<Certificate>,
    /// The `after` of the next page; `None` on the last one.
    #[schema(schema_with = next_after, required = true)]
    pub next_after: Option<u64>,
}
