//! Key/value transactions (CONTRACT.md §1 "Transactions"): the [`Transaction`] handle, and
//! [`Client::transaction`], which runs a closure in one and runs it again when its commit conflicts.

use crate::answers::{TxBegun, TxCommitted, TxDeleted, TxItem, TxRolledBack, TxWritten};
use crate::{Client, Error, IdempotencyKey, Kind, decode, json, segment, types};
use reqwest::Method;
use std::future::Future;
use std::time::Instant;

/// An open transaction. Its writes are buffered by strata until [`Transaction::commit`]; nobody else
/// sees them before. Cheap to clone: clones name the same transaction.
///
/// Retries: reads, and the buffered puts and deletes (doing one twice leaves the buffer as doing it once),
/// are retried on `429`/`503` and lost answers; commit and rollback with an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Transaction {
    client: Client,
    id: String,
    expires_at: Option<String>,
}

impl Transaction {
    /// The transaction's id: 32 lowercase hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When it expires if it stays idle, as strata said when it began (`None` for
    /// [`Client::resume_transaction`]). Every operation on it restarts the idle timer.
    pub fn expires_at(&self) -> Option<&str> {
        self.expires_at.as_deref()
    }

    fn path(&self, rest: &str) -> String {
        format!("/kv/transactions/{}{rest}", segment(&self.id))
    }

    /// `GET /kv/transactions/{id}/keys/{key}`: the transaction's own write first, else the store (and
    /// the key is then validated at commit). `404 key_not_found` when absent or deleted by the
    /// transaction. On a stack deployed with `AuthMode=jwt` it needs the write scope, as it changes the
    /// transaction.
    pub async fn get(&self, key: &str) -> Result<TxItem, Error> {
        let path = self.path(&format!("/keys/{}", segment(key)));
        decode(
            self.client
                .call(Method::GET, &path, None, Kind::Read)
                .await?,
        )
    }

    /// `PUT /kv/transactions/{id}/keys/{key}`: buffers the write.
    pub async fn put(&self, key: &str, value: &str) -> Result<TxWritten, Error> {
        let path = self.path(&format!("/keys/{}", segment(key)));
        let body = json(&types::KvWrite {
            value: value.to_owned(),
        })?;
        let answer = self
            .client
            .call(Method::PUT, &path, Some(body), Kind::Repeatable)
            .await?;
        decode(answer)
    }

    /// `DELETE /kv/transactions/{id}/keys/{key}`: buffers the delete.
    pub async fn delete(&self, key: &str) -> Result<TxDeleted, Error> {
        let path = self.path(&format!("/keys/{}", segment(key)));
        let answer = self
            .client
            .call(Method::DELETE, &path, None, Kind::Repeatable)
            .await?;
        decode(answer)
    }

    /// `POST /kv/transactions/{id}/commit` with an `Idempotency-Key`: applies every buffered write at once,
    /// never twice. `409 conflict` (a key it read changed since; the transaction is over) is
    /// [`Outcome::NothingWritten`](crate::Outcome::NothingWritten). After a `503` or a lost answer the
    /// commit is retried; if the retry finds the transaction gone (`404 transaction_not_found`) the error's
    /// outcome is [`Outcome::Unknown`](crate::Outcome::Unknown): it may have committed. Read the keys to
    /// tell.
    pub async fn commit(&self) -> Result<TxCommitted, Error> {
        let kind = Kind::Keyed(IdempotencyKey::generate());
        let answer = self
            .client
            .call(Method::POST, &self.path("/commit"), None, kind)
            .await?;
        decode(answer)
    }

    /// `POST /kv/transactions/{id}/rollback` with an `Idempotency-Key`: drops the buffered writes.
    pub async fn rollback(&self) -> Result<TxRolledBack, Error> {
        let kind = Kind::Keyed(IdempotencyKey::generate());
        let answer = self
            .client
            .call(Method::POST, &self.path("/rollback"), None, kind)
            .await?;
        decode(answer)
    }
}

impl Client {
    /// `POST /kv/transactions` with an `Idempotency-Key`: a retry after a lost answer gets the same
    /// transaction, not a second one.
    pub async fn begin(&self) -> Result<Transaction, Error> {
        let body = json(&serde_json::json!({}))?;
        let kind = Kind::Keyed(IdempotencyKey::generate());
        let answer = self
            .call(Method::POST, "/kv/transactions", Some(body), kind)
            .await?;
        let begun: TxBegun = decode(answer)?;
        Ok(Transaction {
            client: self.clone(),
            id: begun.id,
            expires_at: Some(begun.expires_at),
        })
    }

    /// A handle on a transaction begun earlier (by this caller: for any other, its id names none).
    pub fn resume_transaction(&self, id: impl Into<String>) -> Transaction {
        Transaction {
            client: self.clone(),
            id: id.into(),
            expires_at: None,
        }
    }

    /// Runs `work` in a new transaction and commits it.
    ///
    /// - When the commit answers `409 conflict` (a key `work` read changed meanwhile; nothing was
    ///   written), `work` runs again in a new transaction, within the client's [`RetryPolicy`]
    ///   (its attempts are runs here, with its backoff between them).
    /// - When `work` returns an error, the transaction is rolled back and the error returned.
    /// - Any other failure of the commit is returned as it is: one whose
    ///   [`Error::outcome`] is [`Outcome::Unknown`](crate::Outcome::Unknown) may have committed, and
    ///   `work` is not run again.
    ///
    /// `work` gets the transaction by value and must not commit or roll it back itself. Its error type
    /// takes this crate's [`Error`], so `?` works on every call inside.
    ///
    /// [`RetryPolicy`]: crate::RetryPolicy
    pub async fn transaction<T, E, F, Fut>(&self, mut work: F) -> Result<T, E>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let start = Instant::now();
        let mut runs = 0;
        loop {
            runs += 1;
            let tx = self.begin().await?;
            let value = match work(tx.clone()).await {
                Ok(value) => value,
                Err(error) => {
                    // An error of its own is the caller's to see; a transaction left open expires.
                    let _ = tx.rollback().await;
                    return Err(error);
                }
            };
            match tx.commit().await {
                Ok(_) => return Ok(value),
                Err(error) if error.is_conflict() => match self.pause(runs, start, None) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(error.into()),
                },
                Err(error) => return Err(error.into()),
            }
        }
    }
}
