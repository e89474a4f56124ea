//! The answers of key/value transactions (`strata_api_types`', as the server writes them) and of
//! `GET /health`.

use serde::{Deserialize, Serialize};

pub(crate) use strata_api_types::kv::tx::TxBegun;
pub use strata_api_types::kv::tx::{TxCommitted, TxDeleted, TxItem, TxRolledBack, TxWritten};

/// The answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// `embedded` or `dynamodb`.
    pub store: String,
}
