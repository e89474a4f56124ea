//! The key/value line protocol over TCP (`strata serve --line-listen`) and over a WebSocket (`GET /kv/ws`,
//! the local stand-in for the API Gateway WebSocket API), both on [`strata_kv::line::Session`].
//!
//! TCP: one task per connection (thousands of idle connections cost no threads), commands answered in
//! order, pipelined commands' replies written together up to 64 KiB and before each read (so a client that
//! does not read stops being read, and the server holds a bounded amount of its replies), partial lines
//! buffered across reads, a last line without a newline answered at end of input, a line over 1 MiB
//! answered with an error and skipped while the connection stays usable. A disconnect rolls back the
//! connection's open transaction. At most `--max-line-connections` at once: at the cap the one idle the
//! longest gives way ([`crate::slots`]), and only when all are busy is a new one refused with an `Error`
//! line; one idle for `--line-idle-timeout` is closed; all share one [`BufferBudget`]. See [`serve`] and
//! `tcp`'s `talk`.
//!
//! WebSocket: messages over the HTTP body limit close the socket with 1009; sockets have their own cap and
//! idle timeout, and each message counts against the rate limit (see [`websocket()`]).
//!
//! `AUTH <token>` (see [`Gate`]): with `--auth-token`, a TCP connection must send it before any other
//! command; a WebSocket is authenticated by its upgrade's `Authorization: Bearer` header instead.
//!
//! - [`gate`]: `AUTH` and what a connection may do before it (the [`Gate`]).
//! - [`tcp`]: the TCP listener and its connections ([`serve`], [`Limits`]).
//! - [`buffer_budget`]: the bytes all TCP connections together may hold ([`BufferBudget`]).
//! - [`mod@websocket`]: `GET /kv/ws` ([`websocket()`], [`WsLimits`]).

pub mod buffer_budget;
pub mod gate;
pub mod tcp;
pub mod websocket;

pub use buffer_budget::BufferBudget;
pub use gate::{
    AUTH_DEADLINE, AUTH_REQUIRED, AUTH_REQUIRED_CLOSING, AUTH_THROTTLED, Gate, Gated,
    HTTP_ON_LINE_PORT, MAX_AUTH_FAILURES, MAX_UNAUTHENTICATED_COMMANDS, UNAUTHENTICATED_LINE_BYTES,
};
pub use tcp::{Limits, serve};
pub use websocket::{MessageBudget, WsLimits, websocket};

use crate::slots::Use;
use strata_kv::line::Session;

/// What a connection waiting for its client is to its slot: busy while it holds an open transaction,
/// else idle (a stranger until it authenticates).
fn resting(session: &Session, gate: &Gate) -> Use {
    if session.transaction().is_some() {
        Use::Busy
    } else if gate.is_authenticated() {
        Use::Idle
    } else {
        Use::Stranger
    }
}
