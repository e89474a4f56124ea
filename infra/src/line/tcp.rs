//! The line protocol over TCP: the accept loop, and each connection's reads, commands and writes.

use super::buffer_budget::{BufferBudget, Charge};
use super::gate::{AUTH_DEADLINE, Gate, Gated, UNAUTHENTICATED_LINE_BYTES};
use super::resting;
use crate::auth::AuthToken;
use crate::slots::{Slot, Slots, Use};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use strata_core::Stores;
use strata_core::kv::line::{self, MAX_LINE_BYTES, MAX_PENDING_REPLY_BYTES};
use strata_kv::line::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

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
