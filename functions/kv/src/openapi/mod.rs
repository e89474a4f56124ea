//! Each operation's OpenAPI description (the function its route in `ROUTES` carries), one module per
//! handler module; the body types and their schemas are [`strata_api_types::kv`]'s.
//!
//! - [`keys`]: of [`crate::handlers`], and the `{key}` parameter every key/value route names.
//! - [`transactions`]: of [`crate::transactions`].
//! - [`line`](mod@line): of `POST /kv/commands` ([`crate::line`](mod@crate::line)).

pub mod keys;
pub mod line;
pub mod transactions;
