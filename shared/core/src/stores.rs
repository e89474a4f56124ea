//! The ports a handler can reach, bundled so one value wires a whole deployment.

use crate::kv::KvStore;
use std::sync::Arc;

/// Which backend serves the ports; reported by `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    DynamoDb,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::DynamoDb => "dynamodb",
        }
    }
}

/// Every store port, each behind a trait object so handlers never know which backend they talk to.
#[derive(Clone)]
pub struct Stores {
    pub backend: Backend,
    pub kv: Arc<dyn KvStore>,
}
