//! Each operation's OpenAPI description (the function its route in `ROUTES` carries) and the schema
//! helpers the body types name, one module per handler module.
//!
//! - [`keys`]: of [`crate::handlers`], and the key and value schemas every key/value body names.
//! - [`transactions`]: of [`crate::transactions`].
//! - [`line`](mod@line): of `POST /kv/commands` ([`crate::line`](mod@crate::line)).

pub mod keys;
pub mod line;
pub mod transactions;
