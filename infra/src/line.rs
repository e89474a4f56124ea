//! The key/value line protocol over TCP (`strata serve --line-listen`) and over a WebSocket (`GET /kv/ws`,
//! the local stand-in for the API Gateway WebSocket API), both on [`strata_kv::line::Session`].
//!
//! TCP: one task per connection (thousands of idle connections cost no threads), commands answered in
//! order, pipelined commands batched into one write, partial lines buffered across reads, a line over 1 MiB
//! answered with an error and skipped while the connection stays usable. A disconnect rolls back the
//! connection's open transaction.
//!
//! `AUTH <token>` (see [`Gate`]): with `--auth-token`, a TCP connection must send it before any other
//! command; a WebSocket is authenticated by its upgrade's `Authorization: Bearer` header instead.

use crate::auth::AuthToken;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use std::sync::Arc;
use strata_core::Stores;
use strata_core::kv::line::{self, MAX_LINE_BYTES};
use strata_kv::line::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Wrong `AUTH` tokens a connection may send; the last one closes it.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// The reply to a command before a successful `AUTH`.
pub const AUTH_REQUIRED: &str = "Authentication required: send AUTH <token> first";

/// The `AUTH <token>` command of one connection, handled before the session sees a line:
///
/// - with a token configured, every other command before a successful `AUTH` is refused
///   ([`AUTH_REQUIRED`]) and runs nothing; `AUTH` with the right token answers `Ok`, with a wrong one an
///   `Error`, and the [`MAX_AUTH_FAILURES`]th wrong one closes the connection. `AUTH` on a connection that
///   is already authenticated checks the token again (a wrong one counts as a failure, and leaves the
///   connection authenticated);
/// - without a token, `AUTH` answers an `Error` saying so (like Redis without a password), so that a
///   client that expected a protected server notices it is not; every other command runs.
#[derive(Debug)]
pub struct Gate {
    token: Option<AuthToken>,
    authenticated: bool,
    failures: u32,
}

/// What the gate makes of a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Gated {
    /// Not for the gate: the session runs it.
    Pass,
    /// Answered here (blank lines get no reply, as in the session).
    Reply(Option<String>),
    /// Answered here, and the connection is closed after the reply.
    Close(String),
}

impl Gate {
    /// A TCP connection: unauthenticated until `AUTH` if there is a token.
    pub fn new(token: Option<AuthToken>) -> Self {
        Self {
            authenticated: token.is_none(),
            token,
            failures: 0,
        }
    }

    /// A connection authenticated already (a WebSocket whose upgrade carried the bearer token).
    pub fn authenticated(token: Option<AuthToken>) -> Self {
        Self {
            token,
            authenticated: true,
            failures: 0,
        }
    }

    pub fn check(&mut self, text: &str) -> Gated {
        let text = text.strip_suffix('\r').unwrap_or(text).trim();
        let (word, rest) = match text.find(char::is_whitespace) {
            Some(end) => (&text[..end], text[end..].trim()),
            None => (text, ""),
        };
        if !word.eq_ignore_ascii_case("AUTH") {
            return if self.authenticated {
                Gated::Pass
            } else if text.is_empty() {
                Gated::Reply(None)
            } else {
                Gated::Reply(Some(line::error(AUTH_REQUIRED)))
            };
        }
        let Some(token) = &self.token else {
            return Gated::Reply(Some(line::error(
                "No authentication is configured on this server (strata serve --auth-token)",
            )));
        };
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Gated::Reply(Some(line::error("Usage: AUTH token")));
        }
        if token.matches(rest.as_bytes()) {
            self.authenticated = true;
            self.failures = 0;
            return Gated::Reply(Some(line::ok()));
        }
        self.failures += 1;
        if self.failures >= MAX_AUTH_FAILURES {
            Gated::Close(line::error(&format!(
                "Authentication failed {MAX_AUTH_FAILURES} times; closing the connection"
            )))
        } else {
            Gated::Reply(Some(line::error("Authentication failed: wrong token")))
        }
    }
}

/// Accepts connections until `shutdown` resolves. With `token`, each must send `AUTH <token>` first.
pub async fn serve(
    listener: TcpListener,
    stores: Arc<Stores>,
    token: Option<AuthToken>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let stores = stores.clone();
                    let gate = Gate::new(token.clone());
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, &stores, gate).await {
                            tracing::debug!(error = %e, "line connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a line connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn connection(mut stream: TcpStream, stores: &Stores, gate: Gate) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut session = Session::new();
    let result = talk(&mut stream, stores, &mut session, gate).await;
    session.close(stores).await;
    result
}

async fn talk(
    stream: &mut TcpStream,
    stores: &Stores,
    session: &mut Session,
    mut gate: Gate,
) -> std::io::Result<()> {
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut replies = Vec::new();
    // Bytes of `buffer` already searched for a newline, and whether we are skipping an over-long line.
    let (mut scanned, mut skipping) = (0, false);
    loop {
        while let Some(offset) = buffer[scanned..].iter().position(|b| *b == b'\n') {
            let end = scanned + offset;
            if !skipping {
                let reply = match std::str::from_utf8(&buffer[..end]) {
                    Ok(text) => match gate.check(text) {
                        Gated::Pass => session.execute(stores, text).await,
                        Gated::Reply(reply) => reply,
                        Gated::Close(reply) => {
                            replies.extend(reply.into_bytes());
                            stream.write_all(&replies).await?;
                            stream.shutdown().await?;
                            return Ok(());
                        }
                    },
                    Err(_) => Some(line::error("Invalid UTF-8 in command")),
                };
                replies.extend(reply.unwrap_or_default().into_bytes());
            }
            skipping = false;
            buffer.drain(..=end);
            scanned = 0;
        }
        scanned = buffer.len();
        if buffer.len() > MAX_LINE_BYTES {
            if !skipping {
                replies.extend(
                    line::error(&format!("Line too long (limit {MAX_LINE_BYTES} bytes)"))
                        .into_bytes(),
                );
                skipping = true;
            }
            buffer.clear();
            scanned = 0;
        }
        if !replies.is_empty() {
            stream.write_all(&replies).await?;
            replies.clear();
        }
        if stream.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
    }
}

/// `GET /kv/ws`: each text message is one command line; each reply comes back as a message (without the
/// trailing newline). Closing the socket rolls back an open transaction. With `--auth-token` the upgrade
/// itself needs the bearer token (checked before this runs, which then gets the token), so the socket is
/// authenticated from its first message; `AUTH` on it checks the token again.
pub async fn websocket(
    stores: Arc<Stores>,
    token: Option<AuthToken>,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    upgrade.on_upgrade(move |socket| ws_session(socket, stores, Gate::authenticated(token)))
}

/// One message at a time: the next is read only after the reply to the one before is sent, so the
/// messages of a connection run in the order sent, as over TCP (a `PUT` right behind `START` is inside the
/// transaction, however fast the client pipelines).
async fn ws_session(mut socket: WebSocket, stores: Arc<Stores>, mut gate: Gate) {
    let mut session = Session::new();
    while let Some(Ok(message)) = socket.recv().await {
        let text = match &message {
            Message::Text(text) => Ok(text.as_str()),
            Message::Binary(bytes) => std::str::from_utf8(bytes),
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = match text {
            Ok(text) => match gate.check(text) {
                Gated::Pass => session.execute(&stores, text).await,
                Gated::Reply(reply) => reply,
                Gated::Close(reply) => {
                    let _ = socket
                        .send(Message::Text(reply.trim_end_matches('\n').into()))
                        .await;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            },
            Err(_) => Some(line::error("Invalid UTF-8 in command")),
        };
        if let Some(reply) = reply
            && socket
                .send(Message::Text(reply.trim_end_matches('\n').into()))
                .await
                .is_err()
        {
            break;
        }
    }
    session.close(&stores).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Option<AuthToken> {
        Some(AuthToken::parse("secret").unwrap())
    }

    fn error(message: &str) -> Gated {
        Gated::Reply(Some(line::error(message)))
    }

    #[test]
    fn with_a_token_nothing_passes_before_auth() {
        let mut gate = Gate::new(token());
        assert_eq!(gate.check("GET a"), error(AUTH_REQUIRED));
        assert_eq!(gate.check("PUT a 1\r"), error(AUTH_REQUIRED));
        assert_eq!(gate.check("  "), Gated::Reply(None));
        assert_eq!(gate.check("AUTH"), error("Usage: AUTH token"));
        assert_eq!(gate.check("AUTH a b"), error("Usage: AUTH token"));
        assert_eq!(gate.check("auth secret\r"), Gated::Reply(Some(line::ok())));
        assert_eq!(gate.check("GET a"), Gated::Pass);
        // A wrong token later leaves the connection authenticated.
        assert_eq!(
            gate.check("AUTH nope"),
            error("Authentication failed: wrong token")
        );
        assert_eq!(gate.check("GET a"), Gated::Pass);
    }

    #[test]
    fn the_third_wrong_token_closes_the_connection() {
        let mut gate = Gate::new(token());
        for _ in 1..MAX_AUTH_FAILURES {
            assert_eq!(
                gate.check("AUTH secre"),
                error("Authentication failed: wrong token")
            );
        }
        assert!(matches!(gate.check("AUTH secrets"), Gated::Close(_)));
    }

    #[test]
    fn without_a_token_auth_says_so_and_everything_passes() {
        let mut gate = Gate::new(None);
        assert_eq!(gate.check("GET a"), Gated::Pass);
        assert!(
            matches!(gate.check("AUTH x"), Gated::Reply(Some(r)) if r.contains("No authentication"))
        );
        assert_eq!(gate.check("AUTHOR"), Gated::Pass);
        let mut gate = Gate::authenticated(token());
        assert_eq!(gate.check("GET a"), Gated::Pass);
        assert_eq!(gate.check("AUTH secret"), Gated::Reply(Some(line::ok())));
    }
}
