//! The bodies of the key/value transactions (CONTRACT.md §1): `/kv/transactions`.

use super::{KvKeyString, KvValue};
use crate::schema::{constant, integer, nullable_integer, string};
use serde::{Deserialize, Serialize};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The schema of a transaction id: what `strata_core::kv::tx::TxId::parse` accepts.
#[derive(Debug)]
pub struct TxIdString;

impl PartialSchema for TxIdString {
    fn schema() -> RefOr<Schema> {
        string(
            Some("32 lowercase hex digits."),
            None,
            None,
            Some("^[0-9a-f]{32}$"),
        )
        .into()
    }
}

impl ToSchema for TxIdString {}

/// `null` for the transaction's own, not yet committed, write.
fn tx_version_schema() -> utoipa::openapi::Object {
    nullable_integer(
        1,
        "`null` for the transaction's own, not yet committed, write.",
    )
}

/// Exactly `true`.
fn always_true() -> utoipa::openapi::Object {
    constant(true.into())
}

fn writes_schema() -> utoipa::openapi::Object {
    integer(0, None)
}

/// The body of `POST /kv/transactions`: an object whose fields are not read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[schema(description = "No fields are read.")]
pub struct TxBegin {}

// Without doc comments: each would become part of the schema.
#[allow(missing_docs, reason = "a doc comment would become part of the schema")]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TxBegun {
    #[schema(value_type = TxIdString)]
    pub id: String,
    /// When the transaction expires if it stays idle (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A key as the transaction sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct TxItem {
    #[schema(value_type = KvKeyString)]
    pub key: String,
    #[schema(value_type = KvValue)]
    pub value: String,
    /// `None` for the transaction's own, not yet committed, write.
    #[schema(schema_with = tx_version_schema, required = true)]
    pub version: Option<u64>,
}

#[allow(missing_docs, reason = "a doc comment would become part of the schema")]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TxWritten {
    #[schema(value_type = KvKeyString)]
    pub key: String,
    #[schema(value_type = KvValue)]
    pub value: String,
}

#[allow(missing_docs, reason = "a doc comment would become part of the schema")]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TxDeleted {
    #[schema(value_type = KvKeyString)]
    pub key: String,
}

#[allow(missing_docs, reason = "a doc comment would become part of the schema")]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TxCommitted {
    #[schema(value_type = TxIdString)]
    pub id: String,
    /// Always `true`.
    #[schema(schema_with = always_true)]
    pub committed: bool,
    /// The keys the commit wrote or deleted.
    #[schema(schema_with = writes_schema)]
    pub writes: usize,
}

#[allow(missing_docs, reason = "a doc comment would become part of the schema")]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TxRolledBack {
    #[schema(value_type = TxIdString)]
    pub id: String,
    /// Always `true`.
    #[schema(schema_with = always_true)]
    pub rolled_back: bool,
}
