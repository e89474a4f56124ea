//! The line protocol over a local WebSocket (`GET /kv/ws`), the stand-in for the API Gateway WebSocket API.

use super::gate::{Gate, Gated};
use super::resting;
use crate::auth::AuthToken;
use crate::slots::{Slot, Slots, Use};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use std::sync::Arc;
use std::time::Duration;
use strata_core::Stores;
use strata_core::kv::line;
use strata_http::MAX_BODY_BYTES;
use strata_kv::line::Session;

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
