//! The recorded event files of `infra/events/`: one per function, the payload API Gateway (or the stream's
//! event source mapping) hands it.

use serde_json::Value;
use std::path::PathBuf;

/// `infra/events/`.
pub fn dir() -> PathBuf {
    crate::repo_root().join("infra/events")
}

/// The event file of `function`, as text.
pub fn text(function: &str) -> String {
    let path = dir().join(format!("{function}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The event file of `function`, parsed.
pub fn json(function: &str) -> Value {
    serde_json::from_str(&text(function)).unwrap_or_else(|e| panic!("{function}.json: {e}"))
}
