//! The answers of key/value transactions and of `GET /health` (CONTRACT.md §1 "Transactions", "Health").

use serde::Deserialize;

/// `201` of `POST /kv/transactions`.
#[derive(Debug, Deserialize)]
pub(crate) struct TxBegun {
    pub id: String,
    pub expires_at: String,
}

/// A key as a transaction sees it (`GET /kv/transactions/{id}/keys/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TxItem {
    pub key: String,
    pub value: String,
    /// `None` for the transaction's own write, which gets its version at commit.
    pub version: Option<u64>,
}

/// The answer of `PUT /kv/transactions/{id}/keys/{key}`: the write is buffered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TxWritten {
    pub key: String,
    pub value: String,
}

/// The answer of `DELETE /kv/transactions/{id}/keys/{key}`: the delete is buffered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TxDeleted {
    pub key: String,
}

/// The answer of `POST /kv/transactions/{id}/commit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TxCommitted {
    pub id: String,
    pub committed: bool,
    /// The keys written (puts and deletes).
    pub writes: u64,
}

/// The answer of `POST /kv/transactions/{id}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TxRolledBack {
    pub id: String,
    pub rolled_back: bool,
}

/// The answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// `embedded` or `dynamodb`.
    pub store: String,
}
