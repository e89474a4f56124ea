//! The key/value bodies (CONTRACT.md §1): `/kv/keys/{key}`, and in [`tx`] those of `/kv/transactions`.

pub mod tx;

use crate::schema::{NO_SPACE_OR_CONTROL, integer, string};
use serde::{Deserialize, Serialize};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The longest key in bytes (`strata_core::kv::MAX_KEY_BYTES`, which the service checks is the same).
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest value in bytes (`strata_core::kv::MAX_VALUE_BYTES`, likewise).
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// The schema of a key: what `strata_core::kv::Key::parse` accepts.
#[derive(Debug)]
pub struct KvKeyString;

impl PartialSchema for KvKeyString {
    fn schema() -> RefOr<Schema> {
        string(
            Some("1 to 1024 bytes of UTF-8, no whitespace, no control characters."),
            Some(1),
            Some(MAX_KEY_BYTES),
            Some(NO_SPACE_OR_CONTROL),
        )
        .into()
    }
}

impl ToSchema for KvKeyString {}

/// The schema of a value: what `strata_core::kv::Value::parse` accepts.
#[derive(Debug)]
pub struct KvValue;

impl PartialSchema for KvValue {
    fn schema() -> RefOr<Schema> {
        string(
            Some("Any UTF-8 string up to 256 KiB, kept byte for byte."),
            None,
            Some(MAX_VALUE_BYTES),
            None,
        )
        .into()
    }
}

impl ToSchema for KvValue {}

/// A version: a positive integer.
pub fn version_schema() -> utoipa::openapi::Object {
    integer(1, None)
}

/// The body of `PUT /kv/keys/{key}` and of `PUT /kv/transactions/{id}/keys/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct KvWrite {
    #[schema(value_type = KvValue)]
    pub value: String,
}

/// A key, its value and the version that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct KvItem {
    #[schema(value_type = KvKeyString)]
    pub key: String,
    #[schema(value_type = KvValue)]
    pub value: String,
    /// Greater than every earlier version of the key.
    #[schema(schema_with = version_schema)]
    pub version: u64,
}

/// The answer of `DELETE /kv/keys/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct KvDeleted {
    #[schema(value_type = KvKeyString)]
    pub key: String,
    /// `false` when the key was absent.
    pub deleted: bool,
}
