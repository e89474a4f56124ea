//! The line-protocol session: what each command does, inside or outside a transaction. One session per TCP
//! connection, per `POST /kv/commands` request, per WebSocket connection; all three use this code.
//!
//! `POST /kv/commands` is bounded as [`strata_core::kv::line`] declares: at most
//! [`MAX_COMMANDS_PER_REQUEST`] commands (else `413 too_many_commands`, and nothing runs) and at most
//! [`MAX_REPLY_BYTES`] of replies (else `413 reply_too_large` naming how many commands ran).

use http::StatusCode;
use strata_core::kv::line::{
    self, Command, MAX_COMMANDS_PER_REQUEST, MAX_LINE_BYTES, MAX_REPLY_BYTES, ReplyBudget,
};
use strata_core::kv::tx::TxId;
use strata_core::kv::{Key, Value};
use strata_core::{Error, Kind, Stores};
use strata_http::request::body_too_large;
use strata_http::response::{client_message, log};
use strata_http::{Body, MAX_BODY_BYTES, Request, Response};

/// A client's state: at most one open transaction.
#[derive(Debug, Default)]
pub struct Session {
    tx: Option<TxId>,
    /// Why the last `START` was refused, until a `COMMIT` or `ROLLBACK` acknowledges it: the commands a
    /// client pipelined behind that `START` must not run one by one outside any transaction.
    refused: Option<String>,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session resumed with its open transaction (WebSocket sessions live between invocations).
    pub fn resume(tx: Option<TxId>) -> Self {
        Self { tx, refused: None }
    }

    pub fn transaction(&self) -> Option<&TxId> {
        self.tx.as_ref()
    }

    /// Runs one line; `None` for a blank line (no reply). The reply ends in `\n`.
    pub async fn execute(&mut self, stores: &Stores, raw: &str) -> Option<String> {
        if raw.len() > MAX_LINE_BYTES {
            return Some(line::error(&format!(
                "Line too long (limit {MAX_LINE_BYTES} bytes)"
            )));
        }
        let command = match line::parse(raw) {
            Ok(Some(command)) => command,
            Ok(None) => return None,
            Err(message) => return Some(line::error(&message)),
        };
        Some(match self.run(stores, command).await {
            Ok(reply) => reply,
            // Internal faults are logged, never shown (a store's message can name tables and requests).
            Err(e) => {
                log(&e);
                line::error(&client_message(&e))
            }
        })
    }

    /// Ends the session: an open transaction is rolled back (a client that disconnects).
    pub async fn close(&mut self, stores: &Stores) {
        if let Some(tx) = self.tx.take()
            && let Err(e) = stores.kv_tx.rollback(&tx).await
            && e.kind != Kind::NotFound
        {
            tracing::warn!(error = %e, "cannot roll back a disconnected session's transaction");
        }
    }

    async fn run(&mut self, stores: &Stores, command: Command<'_>) -> Result<String, Error> {
        if let Some(reason) = &self.refused {
            let reply = line::error(&format!(
                "No transaction: START was refused ({}); nothing runs until COMMIT or ROLLBACK",
                reason.trim_end_matches('.')
            ));
            if matches!(command, Command::Commit | Command::Rollback) {
                self.refused = None;
            }
            return Ok(reply);
        }
        let outcome = match command {
            Command::Put { key, value } => {
                let (key, value) = (Key::parse(key)?, Value::parse(value.to_owned())?);
                match &self.tx {
                    Some(tx) => stores.kv_tx.stage(tx, &key, Some(value)).await,
                    None => stores.kv.put(&key, &value).await.map(drop),
                }
                .map(|()| line::ok())
            }
            Command::Get { key } => {
                let key = Key::parse(key)?;
                let value = match &self.tx {
                    Some(tx) => stores.kv_tx.get(tx, &key).await.map(|v| v.map(|v| v.value)),
                    None => stores.kv.get(&key).await.map(|v| v.map(|v| v.value)),
                };
                value.map(|v| v.map_or_else(|| line::error("Key not found!"), |v| line::result(&v)))
            }
            Command::Del { key } => {
                let key = Key::parse(key)?;
                match &self.tx {
                    Some(tx) => stores.kv_tx.stage(tx, &key, None).await,
                    None => stores.kv.delete(&key).await.map(drop),
                }
                .map(|()| line::ok())
            }
            Command::Start => {
                if self.tx.is_some() {
                    return Ok(line::error("Transaction already in progress"));
                }
                match stores.kv_tx.begin(TxId::generate()).await {
                    Ok(began) => {
                        self.tx = Some(began.id);
                        Ok(line::ok())
                    }
                    Err(e) => {
                        // (`execute` logs an internal fault when it answers this one.)
                        self.refused = Some(if e.kind == Kind::Internal {
                            "an internal error occurred".to_owned()
                        } else {
                            e.message.clone()
                        });
                        Err(e)
                    }
                }
            }
            // The session lets go of its transaction only once the store says it is over: a commit the
            // store could not take (`503`, `429`) leaves it open, and the next COMMIT retries it.
            Command::Commit => {
                let Some(tx) = self.tx.clone() else {
                    return Ok(line::error("No transaction in progress"));
                };
                match stores.kv_tx.commit(&tx).await {
                    Ok(_) => {
                        self.tx = None;
                        Ok(line::ok())
                    }
                    Err(e) if e.code == "conflict" => {
                        self.tx = None;
                        Ok(line::error(&format!(
                            "Conflict on key {}: the transaction was rolled back",
                            e.extra.get("key").and_then(|k| k.as_str()).unwrap_or("?")
                        )))
                    }
                    Err(e) => Err(e),
                }
            }
            Command::Rollback => {
                let Some(tx) = self.tx.clone() else {
                    return Ok(line::error("No transaction in progress"));
                };
                match stores.kv_tx.rollback(&tx).await {
                    Ok(()) => {
                        self.tx = None;
                        Ok(line::ok())
                    }
                    Err(e) if e.kind == Kind::NotFound => {
                        self.tx = None;
                        Ok(line::ok())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        // A transaction that expired under the session is over: say so, and leave the session usable.
        match outcome {
            Err(e) if e.code == "transaction_not_found" => {
                self.tx = None;
                Ok(line::error("Transaction expired; it was rolled back"))
            }
            other => other,
        }
    }
}

/// `POST /kv/commands` (text/plain, one command per line) → `200` with one reply line per command. The
/// lines run in one session; a transaction still open at the end of the body is rolled back.
///
/// Bounds: over [`MAX_COMMANDS_PER_REQUEST`] commands, `413 too_many_commands` before anything runs. When
/// the replies would pass [`MAX_REPLY_BYTES`] (see [`ReplyBudget`]), the request stops before the command
/// that would pass it: the commands before it ran (their single-key writes stand, a transaction they left
/// open is rolled back, as at the end of a body), that one and the rest did not, and the answer is
/// `413 reply_too_large` with `commands_run`, instead of the replies.
pub async fn commands(stores: &Stores, req: Request) -> Result<Response, Error> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(body_too_large());
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(Error::invalid(
            "invalid_body",
            "the commands are not UTF-8 text",
        ));
    };
    let count = line::count_commands(text);
    if count > MAX_COMMANDS_PER_REQUEST {
        return Err(Error::too_large(
            "too_many_commands",
            format!(
                "the body holds {count} commands; a request may hold at most \
                     {MAX_COMMANDS_PER_REQUEST} (none of them ran)"
            ),
        )
        .with("commands", count)
        .with("limit", MAX_COMMANDS_PER_REQUEST));
    }
    let mut session = Session::new();
    let mut replies = String::new();
    let mut budget = ReplyBudget::new(MAX_REPLY_BYTES);
    let mut ran = 0usize;
    let mut overflow = false;
    for raw in text.split('\n') {
        if line::is_blank(raw) {
            continue;
        }
        if !budget.admits(raw) {
            overflow = true;
            break;
        }
        let reply = session.execute(stores, raw).await.unwrap_or_default();
        if !budget.spend(&reply) {
            // Only a GET's reply can fail to fit, and a read changes nothing: as if it never ran.
            overflow = true;
            break;
        }
        ran += 1;
        replies.push_str(&reply);
    }
    session.close(stores).await;
    if overflow {
        return Err(Error::too_large(
                "reply_too_large",
                format!(
                    "the replies would pass {MAX_REPLY_BYTES} bytes: the first {ran} of the {count} \
                     commands ran (a transaction they left open was rolled back), the rest did not; \
                     send the rest in another request"
                ),
            )
            .with("commands_run", ran)
            .with("commands", count)
            .with("limit", MAX_REPLY_BYTES));
    }
    Ok(http::Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::Text(replies))
        .expect("a valid response"))
}
