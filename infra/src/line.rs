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
//! [`talk`].
//!
//! WebSocket: messages over the HTTP body limit close the socket with 1009; sockets have their own cap and
//! idle timeout, and each message counts against the rate limit (see [`websocket`]).
//!
//! `AUTH <token>` (see [`Gate`]): with `--auth-token`, a TCP connection must send it before any other
//! command; a WebSocket is authenticated by its upgrade's `Authorization: Bearer` header instead.

use crate::auth::AuthToken;
use crate::slots::{Slot, Slots, Use};
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
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

/// Wrong `AUTH` tokens a connection may send; the last one closes it.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// Commands other than `AUTH` a connection may send before it authenticates; the last one closes it.
pub const MAX_UNAUTHENTICATED_COMMANDS: u32 = 3;

/// How long a connection has to authenticate (with a token configured), however many bytes it sends.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// The longest line of a connection that has not authenticated: room for `AUTH` and the longest token.
pub const UNAUTHENTICATED_LINE_BYTES: usize = 8 * 1024;

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
    /// Commands refused before authentication.
    strangers: u32,
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

/// The reply, before closing, to the last command a connection may send before it authenticates.
pub const AUTH_REQUIRED_CLOSING: &str =
    "Authentication required: send AUTH <token> first; closing the connection";

impl Gate {
    /// A TCP connection from `client`: unauthenticated until `AUTH` if there is a token.
    pub fn new(token: Option<AuthToken>, client: Option<std::net::IpAddr>) -> Self {
        Self {
            authenticated: token.is_none(),
            token,
            failures: 0,
            client,
            first: true,
            strangers: 0,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
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
            strangers: 0,
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
                self.strangers += 1;
                if self.strangers >= MAX_UNAUTHENTICATED_COMMANDS {
                    Gated::Close(line::error(AUTH_REQUIRED_CLOSING))
                } else {
                    Gated::Reply(Some(line::error(AUTH_REQUIRED)))
                }
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
    /// Bytes all connections together may hold in partial lines and unwritten replies ([`BufferBudget`]).
    pub buffer_budget: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: strata_core::defaults::LINE_MAX_CONNECTIONS,
            idle_timeout: strata_core::defaults::LINE_IDLE_TIMEOUT,
            buffer_budget: strata_core::defaults::LINE_BUFFER_BUDGET,
        }
    }
}

/// One byte budget for what every line-protocol connection holds in memory (its partial line and its
/// unwritten replies, as allocated), so that the cap on connections times the most one can hold is not
/// what bounds memory. When a connection grows and the total passes the budget, the connection holding
/// the most is closed with an `Error` line (at once if it is the one growing; else at its next wait for
/// the client, which an idle one is in already); the others go on.
#[derive(Debug)]
pub struct BufferBudget {
    limit: u64,
    used: std::sync::atomic::AtomicU64,
    holders: std::sync::Mutex<Holders>,
}

#[derive(Debug, Default)]
struct Holders {
    next: u64,
    /// Bytes held and the signal to close, by connection.
    by_id: std::collections::HashMap<u64, (u64, Arc<tokio::sync::Notify>)>,
}

/// A connection's part of the [`BufferBudget`], given back when dropped.
#[derive(Debug)]
struct Charge {
    budget: Arc<BufferBudget>,
    id: u64,
    bytes: u64,
    over: Arc<tokio::sync::Notify>,
}

impl BufferBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: 0.into(),
            holders: std::sync::Mutex::default(),
        })
    }

    /// Bytes held by all connections now.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, Holders> {
        self.holders
            .lock()
            .expect("no panics while holding the lock")
    }

    fn open(self: &Arc<Self>) -> Charge {
        let over = Arc::new(tokio::sync::Notify::new());
        let mut holders = self.holders();
        let id = holders.next;
        holders.next += 1;
        holders.by_id.insert(id, (0, over.clone()));
        Charge {
            budget: self.clone(),
            id,
            bytes: 0,
            over,
        }
    }

    fn over_message(&self, bytes: u64) -> String {
        line::error(&format!(
            "Closing the connection: it holds {bytes} bytes of unread input and replies, the most of all \
             while all connections together passed the {} bytes they may hold (strata serve \
             --line-buffer-mb)",
            self.limit
        ))
    }
}

impl Charge {
    /// Charges the connection for holding `bytes` now; `Err` with the line to close it with if it must
    /// close. While the total is over the budget, the connections holding the most are told to close, one
    /// after another, until what the others hold fits (their bytes no longer count from then on, so that
    /// many connections growing at once each make room).
    fn hold(&mut self, bytes: u64) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        let budget = self.budget.clone();
        let mut holders = budget.holders();
        let Some(entry) = holders.by_id.get_mut(&self.id) else {
            // Told to close already.
            return Err(budget.over_message(self.bytes));
        };
        let before = entry.0;
        entry.0 = bytes;
        self.bytes = bytes;
        let mut total = if bytes >= before {
            budget.used.fetch_add(bytes - before, Relaxed) + (bytes - before)
        } else {
            budget.used.fetch_sub(before - bytes, Relaxed) - (before - bytes)
        };
        while total > budget.limit {
            let Some((&id, &(held, _))) = holders.by_id.iter().max_by_key(|(_, (held, _))| *held)
            else {
                break;
            };
            let (_, over) = holders.by_id.remove(&id).expect("found above");
            total = budget.used.fetch_sub(held, Relaxed) - held;
            if id == self.id {
                return Err(budget.over_message(bytes));
            }
            over.notify_one();
        }
        Ok(())
    }

    /// Resolves once another connection's growth needs this one to close.
    async fn over(&self) {
        self.over.notified().await;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        // Absent if it was told to close: its bytes were taken off then.
        if let Some((held, _)) = self.budget.holders().by_id.remove(&self.id) {
            self.budget.used.fetch_sub(held, Relaxed);
        }
    }
}

/// Accepts connections until `shutdown` resolves. With `token`, each must send `AUTH <token>` first.
///
/// Each connection holds one of `limits.max_connections` [`Slots`]. At the cap, the connection idle the
/// longest gives way to the new one; when every connection is busy, the new one is refused rather than
/// queued: queued connections would hold file descriptors and kernel buffers all the same, and their
/// clients would wait with no word. The refusal is one non-blocking write from the accept loop itself, so
/// a flood of refused connections costs no task each.
pub async fn serve(
    listener: TcpListener,
    stores: Arc<Stores>,
    token: Option<AuthToken>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Slots::new(limits.max_connections);
    let budget = BufferBudget::new(limits.buffer_budget);
    let refusal = line::too_many_connections(limits.max_connections);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let Some(slot) = slots.take() else {
                        // A fresh socket's send buffer is empty: this short line fits without blocking.
                        let _ = stream.try_write(refusal.as_bytes());
                        continue;
                    };
                    let (stores, budget) = (stores.clone(), budget.clone());
                    let gate = Gate::new(token.clone(), Some(client.ip()));
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, &stores, gate, limits, &slot, &budget).await {
                            tracing::debug!(error = %e, "line connection ended with an error");
                        }
                        drop(slot);
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
    limits: Limits,
    slot: &Slot,
    budget: &Arc<BufferBudget>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut session = Session::new();
    let mut charge = budget.open();
    let result = talk(
        &mut stream,
        stores,
        &mut session,
        gate,
        limits.idle_timeout,
        slot,
        &mut charge,
    )
    .await;
    drop(charge);
    // The transaction first: a client told that its connection timed out may look at once.
    session.close(stores).await;
    // Every reply has been written, so a last line cannot land inside another; if the client's receive
    // buffer is full it is not sent at all, and the close says enough.
    let last = match result {
        Ok(End::Idle) => Some(line::idle_timeout(limits.idle_timeout)),
        Ok(End::GaveWay) => Some(line::gave_way(limits.max_connections)),
        Ok(End::AuthLate) => Some(line::error(&format!(
            "Authentication required within {} s; closing the connection",
            AUTH_DEADLINE.as_secs()
        ))),
        _ => None,
    };
    if let Some(last) = last {
        let _ = stream.try_write(last.as_bytes());
    }
    result.map(drop)
}

/// How a connection ended, when it ended well.
enum End {
    /// The client closed it, or the gate did.
    Closed,
    /// No byte came within the idle timeout.
    Idle,
    /// Idle at the connection cap: closed to make room for a new connection.
    GaveWay,
    /// Not authenticated within [`AUTH_DEADLINE`].
    AuthLate,
}

/// Lines are framed by tokio-util's [`LinesCodec`] (linear in the input: it remembers how far it searched,
/// and takes each line off the front of the buffer without moving the rest), with its line limit at
/// [`MAX_LINE_BYTES`]; past the limit it skips to the next newline, and the connection stays usable.
/// Replies go out as they are made: once more than [`MAX_PENDING_REPLY_BYTES`] wait, and always before
/// the next read. A client that reads none of its replies therefore blocks the write, the server stops
/// reading its commands, and TCP flow control holds the client back: the server never holds more than
/// that much of its replies plus the one that passed it. Every read and write gets `idle_timeout`.
///
/// Before each read the connection tells its [`Slot`] whether it may give way (idle, and not holding an
/// open transaction; a connection not yet authenticated first); told to, it closes. A connection that
/// has not authenticated (with a token configured) has [`AUTH_DEADLINE`] to do so, however many bytes it
/// sends, and lines of at most [`UNAUTHENTICATED_LINE_BYTES`] until then.
async fn talk(
    stream: &mut TcpStream,
    stores: &Stores,
    session: &mut Session,
    mut gate: Gate,
    idle_timeout: Duration,
    slot: &Slot,
    charge: &mut Charge,
) -> std::io::Result<End> {
    let line_limit = |gate: &Gate| {
        if gate.is_authenticated() {
            MAX_LINE_BYTES
        } else {
            UNAUTHENTICATED_LINE_BYTES
        }
    };
    let mut codec = LinesCodec::new_with_max_length(line_limit(&gate));
    let auth_deadline = tokio::time::sleep(AUTH_DEADLINE);
    tokio::pin!(auth_deadline);
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
                    Gated::Reply(reply) => {
                        if gate.is_authenticated() && codec.max_length() != MAX_LINE_BYTES {
                            // Authenticated: full-length lines from here on (the bytes read stay).
                            codec = LinesCodec::new_with_max_length(MAX_LINE_BYTES);
                        }
                        reply
                    }
                    Gated::Close(reply) => {
                        replies.extend(reply.into_bytes());
                        write(
                            stream,
                            &mut replies,
                            idle.as_mut(),
                            idle_timeout,
                            slot,
                            resting(session, &gate),
                        )
                        .await?;
                        stream.shutdown().await?;
                        return Ok(End::Closed);
                    }
                },
                Err(LinesCodecError::MaxLineLengthExceeded) => Some(line::error(&format!(
                    "Line too long (limit {} bytes)",
                    line_limit(&gate)
                ))),
                // The codec's only other error: the line (already taken off the input) is not UTF-8.
                Err(LinesCodecError::Io(_)) => Some(line::error("Invalid UTF-8 in command")),
            };
            if let Some(reply) = reply {
                replies.extend(reply.into_bytes());
            }
            if replies.len() > MAX_PENDING_REPLY_BYTES {
                if let Err(last) = charge.hold(held(&input, &replies)) {
                    return close_over_budget(stream, last).await;
                }
                write(
                    stream,
                    &mut replies,
                    idle.as_mut(),
                    idle_timeout,
                    slot,
                    resting(session, &gate),
                )
                .await?;
            }
        }
        if let Err(last) = charge.hold(held(&input, &replies)) {
            return close_over_budget(stream, last).await;
        }
        // Resting from before the client can see the reply, so that connections answered in turn rest in turn.
        slot.set(resting(session, &gate));
        write(
            stream,
            &mut replies,
            idle.as_mut(),
            idle_timeout,
            slot,
            resting(session, &gate),
        )
        .await?;
        // A large line or reply once is no reason to keep its room.
        if input.is_empty() && input.capacity() > KEPT_BUFFER_BYTES {
            input = BytesMut::with_capacity(4096);
        }
        if replies.capacity() > KEPT_BUFFER_BYTES {
            replies = Vec::with_capacity(4096);
        }
        if eof {
            // The last command, even without a newline, has been answered.
            return Ok(End::Closed);
        }
        // Room for a read of a useful size; `reserve` reuses the space of lines already taken off.
        input.reserve(4096);
        idle.as_mut()
            .reset(tokio::time::Instant::now() + idle_timeout);
        slot.set(resting(session, &gate));
        let authenticated = gate.is_authenticated();
        let over_budget = tokio::select! {
            biased;
            read = stream.read_buf(&mut input) => {
                eof = read? == 0;
                false
            }
            () = idle.as_mut() => return Ok(End::Idle),
            () = slot.give_way() => return Ok(End::GaveWay),
            () = auth_deadline.as_mut(), if !authenticated => return Ok(End::AuthLate),
            () = charge.over() => true,
        };
        if over_budget {
            let last = charge.budget.over_message(charge.bytes);
            return close_over_budget(stream, last).await;
        }
        slot.set(Use::Busy);
        if let Err(last) = charge.hold(held(&input, &replies)) {
            return close_over_budget(stream, last).await;
        }
    }
}

/// The room a connection's buffers keep between commands; more is given back once they are empty.
const KEPT_BUFFER_BYTES: usize = 2 * MAX_PENDING_REPLY_BYTES;

/// What a connection holds in memory: its buffers as allocated.
fn held(input: &BytesMut, replies: &Vec<u8>) -> u64 {
    (input.capacity() + replies.capacity()) as u64
}

/// Closes a connection told to by the [`BufferBudget`]: its unwritten replies are dropped (they
/// are what it may not hold), and one `Error` line says why, if the socket takes it at once.
async fn close_over_budget(stream: &mut TcpStream, last: String) -> std::io::Result<End> {
    tracing::warn!(
        "closing the line-protocol connection holding the most: the buffer budget is spent"
    );
    let _ = stream.try_write(last.as_bytes());
    let _ = stream.shutdown().await;
    Ok(End::Closed)
}

/// Writes and clears the pending replies, within `idle_timeout` (on the connection's timer, `idle`).
///
/// A client that does not take its replies is waited for as an idle one is: at the cap it gives way
/// (closed without a last line, which could land inside a reply).
async fn write(
    stream: &mut TcpStream,
    replies: &mut Vec<u8>,
    mut idle: std::pin::Pin<&mut tokio::time::Sleep>,
    idle_timeout: Duration,
    slot: &Slot,
    resting: Use,
) -> std::io::Result<()> {
    if replies.is_empty() {
        return Ok(());
    }
    idle.as_mut()
        .reset(tokio::time::Instant::now() + idle_timeout);
    let written = {
        let write = stream.write_all(replies);
        tokio::pin!(write);
        // Most writes complete at once: only a blocked one tells the slot it waits.
        match futures_util::FutureExt::now_or_never(write.as_mut()) {
            Some(written) => written,
            None => {
                slot.set(resting);
                let written = tokio::select! {
                    biased;
                    written = write => written,
                    () = idle => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
                    () = slot.give_way() => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
                };
                slot.set(Use::Busy);
                written
            }
        }
    };
    written?;
    replies.clear();
    Ok(())
}

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
///
/// With [`WsLimits`] (what `strata serve` sets), at most `slots.cap()` sockets are open at once: at the cap
/// the one idle the longest without an open transaction is closed (code 1001) to make room, and only when
/// every socket is busy is the upgrade refused (`503 too_many_connections`); a socket idle for
/// `idle_timeout` is closed (code 1001, its transaction rolled back); and each message counts against the
/// rate limit like a request to `GET /kv/ws` (over it, an `Error` line and nothing runs).
pub async fn websocket(
    stores: Arc<Stores>,
    token: Option<AuthToken>,
    limits: Option<WsLimits>,
    client: Option<std::net::IpAddr>,
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
    let slot = match &limits {
        Some(limits) => match limits.slots.take() {
            Some(slot) => Some(slot),
            None => {
                return crate::server::to_axum(strata_http::response::error(
                    &strata_core::Error::new(
                        strata_core::Kind::Unavailable,
                        "too_many_connections",
                        format!(
                            "{} WebSockets are open and busy, the most this server holds at once; \
                             retry later",
                            limits.slots.cap()
                        ),
                    )
                    .with("limit", limits.slots.cap())
                    .retry_after(1),
                ));
            }
        },
        None => None,
    };
    upgrade
        .max_message_size(MAX_BODY_BYTES)
        .max_frame_size(MAX_BODY_BYTES)
        .on_upgrade(move |socket| {
            let bounds = limits.zip(slot).map(|(limits, slot)| Bounds {
                slot,
                idle_timeout: limits.idle_timeout,
                budget: limits.budget.zip(client),
            });
            ws_session(socket, stores, Gate::authenticated(token), bounds)
        })
}

/// The local WebSocket's bounds (`strata serve --max-websockets`, `--ws-idle-timeout`) and the rate limit
/// its messages count against (`--rate-limit`).
#[derive(Clone)]
pub struct WsLimits {
    pub slots: Arc<Slots>,
    pub idle_timeout: Duration,
    pub budget: Option<MessageBudget>,
}

impl std::fmt::Debug for WsLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsLimits")
            .field("slots", &self.slots)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// Takes one request's worth of a client's rate limit, or says in how many seconds there is room.
pub type MessageBudget = Arc<dyn Fn(std::net::IpAddr) -> Result<(), u64> + Send + Sync>;

/// One socket's share of [`WsLimits`].
struct Bounds {
    slot: Slot,
    idle_timeout: Duration,
    budget: Option<(MessageBudget, std::net::IpAddr)>,
}

impl Bounds {
    fn slot_cap(&self) -> usize {
        self.slot.cap()
    }
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
async fn ws_session(
    mut socket: WebSocket,
    stores: Arc<Stores>,
    mut gate: Gate,
    bounds: Option<Bounds>,
) {
    let mut session = Session::new();
    // One timer for the socket, moved on before each wait, as over TCP.
    let idle = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(idle);
    loop {
        let received = match &bounds {
            None => socket.recv().await,
            Some(bounds) => {
                bounds.slot.set(resting(&session, &gate));
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + bounds.idle_timeout);
                let ended = tokio::select! {
                    received = socket.recv() => Ok(received),
                    () = idle.as_mut() => Err(format!(
                        "idle for {} s; closing (an open transaction was rolled back)",
                        bounds.idle_timeout.as_secs()
                    )),
                    () = bounds.slot.give_way() => Err(format!(
                        "closed to make room for a new connection: the server holds at most {} \
                         WebSockets, and this one was idle the longest",
                        bounds.slot_cap()
                    )),
                };
                bounds.slot.set(Use::Busy);
                match ended {
                    Ok(received) => received,
                    Err(reason) => {
                        session.close(&stores).await;
                        let _ = socket
                            .send(Message::Close(Some(CloseFrame {
                                code: close_code::AWAY,
                                reason: reason.into(),
                            })))
                            .await;
                        return;
                    }
                }
            }
        };
        let Some(received) = received else { break };
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
        if let Some((budget, client)) = bounds.as_ref().and_then(|b| b.budget.as_ref())
            && let Err(retry_after) = budget(*client)
        {
            let reply = line::error(&format!(
                "Rate limited: too many commands; retry in {retry_after} s (nothing ran)"
            ));
            if socket
                .send(Message::Text(reply.trim_end_matches('\n').into()))
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
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
        // Resting from before the client can see the reply, as over TCP.
        if let Some(bounds) = &bounds {
            bounds.slot.set(resting(&session, &gate));
        }
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
