//! The key/value line protocol over TCP (`strata serve --line-listen`) and over a WebSocket (`GET /kv/ws`,
//! the local stand-in for the API Gateway WebSocket API), both on [`strata_kv::line::Session`].
//!
//! TCP: one task per connection (thousands of idle connections cost no threads), commands answered in
//! order, pipelined commands' replies written together up to 64 KiB and before each read (so a client that
//! does not read stops being read, and the server holds a bounded amount of its replies), partial lines
//! buffered across reads, a last line without a newline answered at end of input, a line over 1 MiB
//! answered with an error and skipped while the connection stays usable. A disconnect rolls back the
//! connection's open transaction. At most `--max-line-connections` at once (one more gets an `Error`
//! line and is closed); one idle for `--line-idle-timeout` is closed. See [`serve`] and [`talk`].
//!
//! WebSocket: messages over the HTTP body limit close the socket with 1009 (see [`websocket`]).
//!
//! `AUTH <token>` (see [`Gate`]): with `--auth-token`, a TCP connection must send it before any other
//! command; a WebSocket is authenticated by its upgrade's `Authorization: Bearer` header instead.

use crate::auth::AuthToken;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use strata_core::Stores;
use strata_core::kv::line::{self, MAX_LINE_BYTES, MAX_PENDING_REPLY_BYTES};
use strata_http::MAX_BODY_BYTES;
use strata_kv::line::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

/// Wrong `AUTH` tokens a connection may send; the last one closes it.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// The reply to a command before a successful `AUTH`.
pub const AUTH_REQUIRED: &str = "Authentication required: send AUTH <token> first";

/// The reply, before closing, to `AUTH` from an address that sends wrong tokens too fast.
pub const AUTH_THROTTLED: &str =
    "Too many wrong tokens from this address; closing the connection (retry later)";

/// The reply, before closing, to a connection whose first line is an HTTP request.
pub const HTTP_ON_LINE_PORT: &str =
    "This is the key/value line protocol, not HTTP; closing the connection";

/// `METHOD target HTTP/version`: what a browser (or any HTTP client) sends first.
fn is_http_request_line(text: &str) -> bool {
    let mut words = text.split_ascii_whitespace();
    let (Some(method), Some(_target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && version
            .strip_prefix("HTTP/")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// The `AUTH <token>` command of one connection, handled before the session sees a line:
///
/// - with a token configured, every other command before a successful `AUTH` is refused
///   ([`AUTH_REQUIRED`]) and runs nothing; `AUTH` with the right token answers `Ok`, with a wrong one an
///   `Error`, and the [`MAX_AUTH_FAILURES`]th wrong one closes the connection. `AUTH` on a connection that
///   is already authenticated checks the token again (a wrong one counts as a failure, and leaves the
///   connection authenticated);
/// - without a token, `AUTH` answers an `Error` saying so (like Redis without a password), so that a
///   client that expected a protected server notices it is not; every other command runs.
///
/// It also closes a TCP connection whose first line is an HTTP request line (`POST / HTTP/1.1`): a web
/// page's request sent to the line port, whose body would otherwise run as commands (as Redis does).
#[derive(Debug)]
pub struct Gate {
    token: Option<AuthToken>,
    authenticated: bool,
    failures: u32,
    /// The client's address, whose wrong tokens are slowed with those of its HTTP requests.
    client: Option<std::net::IpAddr>,
    /// No line has been seen yet (blank ones aside).
    first: bool,
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
    /// A TCP connection from `client`: unauthenticated until `AUTH` if there is a token.
    pub fn new(token: Option<AuthToken>, client: Option<std::net::IpAddr>) -> Self {
        Self {
            authenticated: token.is_none(),
            token,
            failures: 0,
            client,
            first: true,
        }
    }

    /// A connection authenticated already (a WebSocket whose upgrade carried the bearer token). It spoke
    /// HTTP to get here, so its lines are not checked for it.
    pub fn authenticated(token: Option<AuthToken>) -> Self {
        Self {
            token,
            authenticated: true,
            failures: 0,
            client: None,
            first: false,
        }
    }

    pub async fn check(&mut self, text: &str) -> Gated {
        let text = text.strip_suffix('\r').unwrap_or(text).trim();
        if self.first && !text.is_empty() {
            self.first = false;
            if is_http_request_line(text) {
                tracing::warn!(
                    client = ?self.client,
                    "a line-protocol connection began with an HTTP request (a web page's, or a client \
                     on the wrong port); closed"
                );
                return Gated::Close(line::error(HTTP_ON_LINE_PORT));
            }
        }
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
        match token
            .verify(self.client, "line", Some(rest.as_bytes()))
            .await
        {
            crate::auth::Verdict::Valid => {
                self.authenticated = true;
                self.failures = 0;
                return Gated::Reply(Some(line::ok()));
            }
            crate::auth::Verdict::Throttled(_) => {
                return Gated::Close(line::error(AUTH_THROTTLED));
            }
            crate::auth::Verdict::Wrong => {}
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

/// The bounds of the TCP listener (`strata serve --max-line-connections`, `--line-idle-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; one over it gets [`line::too_many_connections`] and is closed.
    pub max_connections: usize,
    /// How long the server waits for a connection's next bytes, or for it to take its replies, before it
    /// closes the connection (rolling back its open transaction).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: strata_core::defaults::LINE_MAX_CONNECTIONS,
            idle_timeout: strata_core::defaults::LINE_IDLE_TIMEOUT,
        }
    }
}

/// Accepts connections until `shutdown` resolves. With `token`, each must send `AUTH <token>` first.
///
/// Each connection holds a permit of a semaphore of `limits.max_connections` (as in tokio's mini-redis),
/// but one over the cap is refused rather than queued: queued connections would hold file descriptors
/// and kernel buffers all the same, and their clients would wait with no word. The refusal is one
/// non-blocking write from the accept loop itself, so a flood of refused connections costs no task each.
pub async fn serve(
    listener: TcpListener,
    stores: Arc<Stores>,
    token: Option<AuthToken>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusal = line::too_many_connections(limits.max_connections);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        // A fresh socket's send buffer is empty: this short line fits without blocking.
                        let _ = stream.try_write(refusal.as_bytes());
                        continue;
                    };
                    let stores = stores.clone();
                    let gate = Gate::new(token.clone(), Some(client.ip()));
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, &stores, gate, limits.idle_timeout).await {
                            tracing::debug!(error = %e, "line connection ended with an error");
                        }
                        drop(permit);
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

async fn connection(
    mut stream: TcpStream,
    stores: &Stores,
    gate: Gate,
    idle_timeout: Duration,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut session = Session::new();
    let result = talk(&mut stream, stores, &mut session, gate, idle_timeout).await;
    // The transaction first: a client told that its connection timed out may look at once.
    session.close(stores).await;
    if let Ok(End::Idle) = result {
        // Every reply has been written, so this line cannot land inside another; if the client's
        // receive buffer is full it is not sent at all, and the close says enough.
        let _ = stream.try_write(line::idle_timeout(idle_timeout).as_bytes());
    }
    result.map(drop)
}

/// How a connection ended, when it ended well.
enum End {
    /// The client closed it, or the gate did.
    Closed,
    /// No byte came within the idle timeout.
    Idle,
}

/// Lines are framed by tokio-util's [`LinesCodec`] (linear in the input: it remembers how far it searched,
/// and takes each line off the front of the buffer without moving the rest), with its line limit at
/// [`MAX_LINE_BYTES`]; past the limit it skips to the next newline, and the connection stays usable.
/// Replies go out as they are made: once more than [`MAX_PENDING_REPLY_BYTES`] wait, and always before
/// the next read. A client that reads none of its replies therefore blocks the write, the server stops
/// reading its commands, and TCP flow control holds the client back: the server never holds more than
/// that much of its replies plus the one that passed it. Every read and write gets `idle_timeout`.
async fn talk(
    stream: &mut TcpStream,
    stores: &Stores,
    session: &mut Session,
    mut gate: Gate,
    idle_timeout: Duration,
) -> std::io::Result<End> {
    let mut codec = LinesCodec::new_with_max_length(MAX_LINE_BYTES);
    let mut input = BytesMut::with_capacity(4096);
    let mut replies: Vec<u8> = Vec::with_capacity(4096);
    let mut eof = false;
    // One timer for the connection, moved on before each read and write: moving a timer later only
    // changes its deadline, where a fresh timeout per command would enter and leave the timer wheel.
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    loop {
        loop {
            let decoded = if eof {
                codec.decode_eof(&mut input)
            } else {
                codec.decode(&mut input)
            };
            let reply = match decoded {
                Ok(None) => break,
                Ok(Some(text)) => match gate.check(&text).await {
                    Gated::Pass => session.execute(stores, &text).await,
                    Gated::Reply(reply) => reply,
                    Gated::Close(reply) => {
                        replies.extend(reply.into_bytes());
                        write(stream, &mut replies, idle.as_mut(), idle_timeout).await?;
                        stream.shutdown().await?;
                        return Ok(End::Closed);
                    }
                },
                Err(LinesCodecError::MaxLineLengthExceeded) => Some(line::error(&format!(
                    "Line too long (limit {MAX_LINE_BYTES} bytes)"
                ))),
                // The codec's only other error: the line (already taken off the input) is not UTF-8.
                Err(LinesCodecError::Io(_)) => Some(line::error("Invalid UTF-8 in command")),
            };
            if let Some(reply) = reply {
                replies.extend(reply.into_bytes());
            }
            if replies.len() > MAX_PENDING_REPLY_BYTES {
                write(stream, &mut replies, idle.as_mut(), idle_timeout).await?;
            }
        }
        write(stream, &mut replies, idle.as_mut(), idle_timeout).await?;
        if eof {
            // The last command, even without a newline, has been answered.
            return Ok(End::Closed);
        }
        // Room for a read of a useful size; `reserve` reuses the space of lines already taken off.
        input.reserve(4096);
        idle.as_mut()
            .reset(tokio::time::Instant::now() + idle_timeout);
        tokio::select! {
            biased;
            read = stream.read_buf(&mut input) => eof = read? == 0,
            () = idle.as_mut() => return Ok(End::Idle),
        }
    }
}

/// Writes and clears the pending replies, within `idle_timeout` (on the connection's timer, `idle`).
async fn write(
    stream: &mut TcpStream,
    replies: &mut Vec<u8>,
    mut idle: std::pin::Pin<&mut tokio::time::Sleep>,
    idle_timeout: Duration,
) -> std::io::Result<()> {
    if replies.is_empty() {
        return Ok(());
    }
    idle.as_mut()
        .reset(tokio::time::Instant::now() + idle_timeout);
    tokio::select! {
        biased;
        written = stream.write_all(replies) => written?,
        () = idle => return Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
    replies.clear();
    Ok(())
}

/// `GET /kv/ws`: each text message is one command line; each reply comes back as a message (without the
/// trailing newline). Closing the socket rolls back an open transaction. With `--auth-token` the upgrade
/// itself needs the bearer token (checked before this runs, which then gets the token), so the socket is
/// authenticated from its first message; `AUTH` on it checks the token again.
///
/// A message, and each frame of it, may be at most [`MAX_BODY_BYTES`] (the HTTP body limit, so the socket
/// takes no more than `POST /kv/commands` does). A longer one is refused as soon as its frame header
/// (or the fragment that passes the limit) arrives, before its bytes are buffered: the socket is closed
/// with code 1009 (message too big), the open transaction rolled back.
///
/// A request that is not a WebSocket upgrade gets `400 not_a_websocket` in the contract's error JSON.
pub async fn websocket(
    stores: Arc<Stores>,
    token: Option<AuthToken>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> axum::response::Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return crate::server::to_axum(strata_http::response::error(
                &strata_core::Error::invalid(
                    "not_a_websocket",
                    format!(
                        "GET /kv/ws is the line protocol over a WebSocket, and this request is not an \
                         upgrade to one: {}",
                        rejection.body_text()
                    ),
                ),
            ));
        }
    };
    upgrade
        .max_message_size(MAX_BODY_BYTES)
        .max_frame_size(MAX_BODY_BYTES)
        .on_upgrade(move |socket| ws_session(socket, stores, Gate::authenticated(token)))
}

/// The close frame for a message over [`MAX_BODY_BYTES`].
fn too_big() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::SIZE,
        reason: format!("message too big (limit {MAX_BODY_BYTES} bytes)").into(),
    }))
}

/// Whether a receive error is a message (or frame) over the size limit.
fn is_too_big(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// One message at a time: the next is read only after the reply to the one before is sent, so the
/// messages of a connection run in the order sent, as over TCP (a `PUT` right behind `START` is inside the
/// transaction, however fast the client pipelines).
async fn ws_session(mut socket: WebSocket, stores: Arc<Stores>, mut gate: Gate) {
    let mut session = Session::new();
    while let Some(received) = socket.recv().await {
        let message = match received {
            Ok(message) => message,
            Err(e) => {
                if is_too_big(e) {
                    let _ = socket.send(too_big()).await;
                }
                break;
            }
        };
        let text = match &message {
            Message::Text(text) => Ok(text.as_str()),
            Message::Binary(bytes) => std::str::from_utf8(bytes),
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = match text {
            Ok(text) => match gate.check(text).await {
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

    const SECRET: &str = "a-secret-of-24-characters";

    fn token() -> Option<AuthToken> {
        Some(AuthToken::parse(SECRET).unwrap())
    }

    fn error(message: &str) -> Gated {
        Gated::Reply(Some(line::error(message)))
    }

    #[tokio::test]
    async fn with_a_token_nothing_passes_before_auth() {
        let mut gate = Gate::new(token(), None);
        assert_eq!(gate.check("GET a").await, error(AUTH_REQUIRED));
        assert_eq!(gate.check("PUT a 1\r").await, error(AUTH_REQUIRED));
        assert_eq!(gate.check("  ").await, Gated::Reply(None));
        assert_eq!(gate.check("AUTH").await, error("Usage: AUTH token"));
        assert_eq!(gate.check("AUTH a b").await, error("Usage: AUTH token"));
        assert_eq!(
            gate.check(&format!("auth {SECRET}\r")).await,
            Gated::Reply(Some(line::ok()))
        );
        assert_eq!(gate.check("GET a").await, Gated::Pass);
        // A wrong token later leaves the connection authenticated.
        assert_eq!(
            gate.check("AUTH nope").await,
            error("Authentication failed: wrong token")
        );
        assert_eq!(gate.check("GET a").await, Gated::Pass);
    }

    #[tokio::test]
    async fn the_third_wrong_token_closes_the_connection() {
        let mut gate = Gate::new(token(), None);
        for _ in 1..MAX_AUTH_FAILURES {
            assert_eq!(
                gate.check("AUTH secre").await,
                error("Authentication failed: wrong token")
            );
        }
        assert!(matches!(gate.check("AUTH secrets").await, Gated::Close(_)));
    }

    #[tokio::test]
    async fn without_a_token_auth_says_so_and_everything_passes() {
        let mut gate = Gate::new(None, None);
        assert_eq!(gate.check("GET a").await, Gated::Pass);
        assert!(
            matches!(gate.check("AUTH x").await, Gated::Reply(Some(r)) if r.contains("No authentication"))
        );
        assert_eq!(gate.check("AUTHOR").await, Gated::Pass);
        let mut gate = Gate::authenticated(token());
        assert_eq!(gate.check("GET a").await, Gated::Pass);
        assert_eq!(
            gate.check(&format!("AUTH {SECRET}")).await,
            Gated::Reply(Some(line::ok()))
        );
    }

    /// A web page's request sent to the line port closes the connection at its first line, before its
    /// body's lines could run as commands; the same words later on are commands like any other.
    #[tokio::test]
    async fn a_first_line_in_http_closes_the_connection() {
        for first in ["POST / HTTP/1.1", "GET /kv HTTP/1.0\r", "OPTIONS * HTTP/2"] {
            let mut gate = Gate::new(None, None);
            assert_eq!(gate.check("").await, Gated::Pass);
            assert_eq!(
                gate.check(first).await,
                Gated::Close(line::error(HTTP_ON_LINE_PORT)),
                "{first}"
            );
        }
        let mut gate = Gate::new(None, None);
        assert_eq!(gate.check("GET a").await, Gated::Pass);
        assert_eq!(gate.check("PUT /x HTTP/1.1").await, Gated::Pass);
        for not_http in [
            "PUT a HTTP/1.1 x",
            "GET a",
            "put /x HTTP/1.1",
            "PUT a HTTP/",
        ] {
            let mut gate = Gate::new(None, None);
            assert_eq!(gate.check(not_http).await, Gated::Pass, "{not_http}");
        }
    }
}
