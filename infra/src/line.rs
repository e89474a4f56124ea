//! The key/value line protocol over TCP (`strata serve --line-listen`) and over a WebSocket (`GET /kv/ws`,
//! the local stand-in for the API Gateway WebSocket API), both on [`strata_kv::line::Session`].
//!
//! TCP: one task per connection (thousands of idle connections cost no threads), commands answered in
//! order, pipelined commands batched into one write, partial lines buffered across reads, a line over 1 MiB
//! answered with an error and skipped while the connection stays usable. A disconnect rolls back the
//! connection's open transaction.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use std::sync::Arc;
use strata_core::Stores;
use strata_core::kv::line::{self, MAX_LINE_BYTES};
use strata_kv::line::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    stores: Arc<Stores>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let stores = stores.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, &stores).await {
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

async fn connection(mut stream: TcpStream, stores: &Stores) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut session = Session::new();
    let result = talk(&mut stream, stores, &mut session).await;
    session.close(stores).await;
    result
}

async fn talk(
    stream: &mut TcpStream,
    stores: &Stores,
    session: &mut Session,
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
                    Ok(text) => session.execute(stores, text).await,
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
/// trailing newline). Closing the socket rolls back an open transaction.
pub async fn websocket(stores: Arc<Stores>, upgrade: WebSocketUpgrade) -> axum::response::Response {
    upgrade.on_upgrade(move |socket| ws_session(socket, stores))
}

/// One message at a time: the next is read only after the reply to the one before is sent, so the
/// messages of a connection run in the order sent, as over TCP (a `PUT` right behind `START` is inside the
/// transaction, however fast the client pipelines).
async fn ws_session(mut socket: WebSocket, stores: Arc<Stores>) {
    let mut session = Session::new();
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => session.execute(&stores, text.as_str()).await,
            Message::Binary(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => session.execute(&stores, text).await,
                Err(_) => Some(line::error("Invalid UTF-8 in command")),
            },
            Message::Close(_) => break,
            _ => continue,
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
