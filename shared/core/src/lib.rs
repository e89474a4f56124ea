//! strata's domain: the rules every service enforces, whatever the store and whatever the entry point.
//!
//! # Layout
//!
//! - [`deadline`]: the one deadline of a request, which every store call keeps to.
//! - [`error`]: the one error type of the domain ([`Error`]), with a [`Kind`] that the HTTP layer maps to a
//!   status, a stable snake_case `code`, a human message and optional extra fields.
//! - [`kv`]: the key/value service: key and value validation, versioned items and the [`kv::KvStore`] port;
//!   [`kv::tx`]: transactions (buffer, limits, commit plan) and the [`kv::tx::KvTransactions`] port.
//! - [`certificates`]: share classes and gapless certificate numbers; the [`certificates::Ledger`] port.
//! - [`counters`]: strong and eventual counters, the folding rule (what overflow refuses); the
//!   [`counters::Counters`] port.
//! - [`idempotency`]: `Idempotency-Key` semantics and the [`idempotency::Idempotency`] port, for every service.
//! - [`widgets`]: port slots, associations and their invariants; the [`widgets::Widgets`] port.
//! - [`retention`]: how long idempotency and exactly-once records hold, with a margin for clock skew, and
//!   when a reader treats one as absent.
//! - [`stores`]: [`Stores`], the set of ports a handler needs, built by a backend (embedded or DynamoDB),
//!   and [`Settings`], the tunables every backend honours.
//! - [`defaults`]: the default of every setting, declared once (the command line and the template take them
//!   from here).
//! - [`time`]: timestamps as the API shows them.
//! - [`transfer`]: export and import: the versioned JSON-lines format, the checks a file must pass (domain
//!   rules per record, invariants across records) and the [`transfer::Transfer`] port of each backend.
//!   The invariants live in `transfer/check.rs`, reading and writing files in `transfer/file.rs`.
//!
//! Backends only store; they never decide what is valid. Handlers only translate HTTP; they never touch a
//! backend directly. Everything that both must agree on lives here.

#![warn(missing_docs)]

pub mod certificates;
pub mod counters;
pub mod deadline;
pub mod defaults;
pub mod error;
pub mod idempotency;
pub mod kv;
pub mod retention;
pub mod stores;
pub mod time;
pub mod transfer;
pub mod widgets;

pub use error::{Error, Kind};
pub use stores::{Backend, Settings, Stores};
