//! The bodies of strata's HTTP requests and answers, one type each, shared by the handlers (which read and
//! write them), the OpenAPI document (built from their schemas) and the Rust client.
//!
//! # Layout
//!
//! - [`kv`]: the key/value bodies, with [`kv::tx`] those of the transactions.
//! - [`certificates`]: share classes and certificates.
//! - [`counters`]: increments and totals.
//! - [`widgets`]: widgets and associations.
//! - [`error`]: the error JSON, `{"error": {"code", "message", ...}}`, which every operation may answer.
//! - [`schema`]: the small schema builders the types' fields name, which the services' operations use too.
//!
//! Each type derives `Serialize`, `Deserialize` and utoipa's `ToSchema`; the counter total, whose one
//! property is named by its key, writes all three by hand, and the error JSON its schema. Answer types read
//! unknown fields without complaint, so a client keeps working when an answer gains a field; the document
//! still says `additionalProperties: false` for answers (`strata::openapi` closes them). The schema-only types (`KvKeyString`,
//! `PortName`, …) are what a field's `value_type` names.
//!
//! The crate depends on serde, serde_json and utoipa only, so a client builds without the server's stack.
//! The limits the schemas state are copies of `strata_core`'s, which each service checks against the
//! core's (at compile time; the port names in a test). Converting from the domain types is the services'
//! business.

#![warn(missing_docs)]

pub mod certificates;
pub mod counters;
pub mod error;
pub mod kv;
pub mod schema;
pub mod widgets;
