//! The line protocol over an API Gateway WebSocket API: `$connect`, `$disconnect` and `$default`, one Lambda
//! each. Every message is one command line, run in the connection's session; the reply is the `$default`
//! route's response, which API Gateway sends back on the socket. The session's open transaction is kept in
//! the [`strata_core::kv::line::Connections`] port between messages and rolled back on `$disconnect`.
//!
//! Bounds: a message is one command (a newline inside it is part of the command, as in a `PUT`'s value),
//! so one invocation runs one command and answers at most
//! [`strata_core::kv::line::MAX_ONE_REPLY_BYTES`], within Lambda's response limit; API Gateway caps the
//! message itself (128 KB).
//!
//! API Gateway does not wait for one message's invocation to finish before it starts the next one's, so two
//! messages of one connection can run at once. The record of the connection's transaction only ever moves
//! by compare-and-set from what the message started with, so overlapping messages never lose a
//! transaction or leave one open behind the connection's back. Their order is the order they reach the
//! store, not necessarily the order sent: a client that needs `START` to take effect before its next
//! command waits for the reply, as the local server's `/kv/ws` does for it by running one message at a time.

use crate::line::Session;
use http::StatusCode;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use strata_core::kv::line;
use strata_core::{Error, Stores};
use strata_http::{Body, Request, Response};

fn connection_id(req: &Request) -> Result<String, Error> {
    match req.request_context_ref() {
        Some(RequestContext::WebSocket(context)) => context.connection_id.clone(),
        _ => None,
    }
    .ok_or_else(|| {
        Error::invalid(
            "not_a_websocket",
            "this function serves API Gateway WebSocket events",
        )
    })
}

fn text(status: StatusCode, body: String) -> Response {
    http::Response::builder()
        .status(status)
        .body(if body.is_empty() {
            Body::Empty
        } else {
            Body::Text(body)
        })
        .expect("a valid response")
}

/// `$connect`: nothing to set up until the client starts a transaction.
pub async fn connect(_stores: &Stores, req: Request) -> Result<Response, Error> {
    connection_id(&req)?;
    Ok(text(StatusCode::OK, String::new()))
}

/// `$disconnect`: the connection's open transaction is rolled back.
pub async fn disconnect(stores: &Stores, req: Request) -> Result<Response, Error> {
    let connection = connection_id(&req)?;
    let mut session = Session::resume(stores.connections.forget(&connection).await?);
    session.close(stores).await;
    Ok(text(StatusCode::OK, String::new()))
}

/// API Gateway's largest WebSocket message: a reply over it would never reach the client (the socket is
/// closed with code 1009), so the command's effect stands and its answer says why it is missing.
pub const MAX_REPLY_BYTES: usize = 128 * 1024;

/// The reply as one message (without the newline), or, over [`MAX_REPLY_BYTES`], one `Error` line naming
/// the limit (a `GET`'s, where to read the value instead).
fn within_message_limit(command: &str, reply: String) -> String {
    let reply = reply.trim_end_matches('\n');
    if reply.len() <= MAX_REPLY_BYTES {
        return reply.to_owned();
    }
    let message = match line::parse(command) {
        Ok(Some(line::Command::Get { key })) => format!(
            "Reply over the WebSocket's {MAX_REPLY_BYTES}-byte message limit (API Gateway); read this value \
             over HTTP: GET /kv/keys/{}",
            strata_core::error::prefix(key)
        ),
        _ => format!(
            "Reply over the WebSocket's {MAX_REPLY_BYTES}-byte message limit (API Gateway); the command \
             ran"
        ),
    };
    line::error(&message).trim_end_matches('\n').to_owned()
}

/// `$default`: one command line in, its reply line out (without the newline).
pub async fn default(stores: &Stores, req: Request) -> Result<Response, Error> {
    let connection = connection_id(&req)?;
    let line = String::from_utf8_lossy(req.body().as_ref()).into_owned();
    let before = stores.connections.transaction(&connection).await?;
    let mut session = Session::resume(before.clone());
    let mut reply = session.execute(stores, &line).await.unwrap_or_default();
    let after = session.transaction().cloned();
    if after != before
        && !stores
            .connections
            .replace_transaction(&connection, before.as_ref(), after.as_ref())
            .await?
    {
        // Another message of this connection changed its transaction while this one ran. If this
        // one opened a transaction, the other got there first: this one is undone and refused, as
        // a START in a transaction is. If this one ended the transaction, it stays ended.
        if let (None, Some(opened)) = (&before, &after) {
            if let Err(e) = stores.kv_tx.rollback(opened).await {
                tracing::warn!(error = %e, "cannot roll back a START that lost a race");
            }
            reply = line::error("Transaction already in progress");
        }
    }
    Ok(text(StatusCode::OK, within_message_limit(&line, reply)))
}
