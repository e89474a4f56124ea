//! The key/value port on DynamoDB.
//!
//! Item: `pk` (the key), `val` (the value, absent on a tombstone), `ver` (a number that only grows). A delete
//! removes `val` but keeps the item and bumps `ver`, so versions never repeat for a key. A single-key PUT or
//! DELETE is one `UpdateItem` that also records its token and the version it made in the item's
//! [`history`](crate::history), and is never retried blindly: after a lost answer one read of the item tells
//! whether it applied (and at which version), or the answer is "outcome unknown" (`503`).

use crate::attr::{Item, ItemExt, n, s};
use crate::error::{is_condition_failed, store_error};
use crate::history;
use crate::send::WithinDeadline;
use crate::send::{Sent, no_retries, unrepeatable};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::collections::HashMap;
use strata_core::Error;
use strata_core::kv::{Deleted, Key, KvStore, Value, Versioned};

pub const PK: &str = "pk";
pub const VALUE: &str = "val";
pub const VERSION: &str = "ver";

#[derive(Debug)]
pub struct DynamoKv {
    client: Client,
    table: String,
}

impl DynamoKv {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }
}

/// The names of a single-key write: value, version and the write history.
fn names() -> HashMap<String, String> {
    let mut names = history::names();
    names.insert("#val".to_owned(), VALUE.to_owned());
    names.insert("#ver".to_owned(), VERSION.to_owned());
    names
}

fn values(token: &str, value: Option<&Value>) -> Item {
    let mut values = history::values(token);
    values.insert(":one".to_owned(), n(1));
    if let Some(value) = value {
        values.insert(":val".to_owned(), s(value.as_str()));
    }
    values
}

impl DynamoKv {
    /// One single-key write, `Some(value)` a put, `None` a delete (only of a present value), sent at most
    /// once (see [`crate::send`]): the version it made, or `None` when a delete found no value.
    async fn write_once(&self, key: &Key, value: Option<&Value>) -> Result<Option<u64>, Error> {
        let token = history::token();
        let bump = "#ver = if_not_exists(#ver, :hzero) + :one";
        let expression = match value {
            Some(_) => format!(
                "SET #val = :val, {bump}, {}",
                history::push("if_not_exists(#ver, :hzero) + :one")
            ),
            None => format!(
                "REMOVE #val SET {bump}, {}",
                history::push("if_not_exists(#ver, :hzero) + :one")
            ),
        };
        let sent = unrepeatable(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(key.as_str()))
                .update_expression(&expression)
                .set_condition_expression(
                    value.is_none().then(|| "attribute_exists(#val)".to_owned()),
                )
                .set_expression_attribute_names(Some(names()))
                .set_expression_attribute_values(Some(values(&token, value)))
                .return_values(ReturnValue::UpdatedNew)
                .customize()
                .config_override(no_retries())
                .send()
        })
        .await;
        match sent {
            Sent::Answered(Ok(out)) => out.attributes.unwrap_or_default().num(VERSION).map(Some),
            Sent::Answered(Err(e)) if is_condition_failed(&e) => Ok(None),
            Sent::Answered(Err(e)) => Err(store_error("UpdateItem", e)),
            Sent::Unknown(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "UpdateItem may have applied");
                history::read_back(&self.client, &self.table, (PK, key.as_str()), &token)
                    .await
                    .map(Some)
            }
        }
    }
}

#[async_trait]
impl KvStore for DynamoKv {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.as_str().to_owned()))
            .consistent_read(true)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let Some(value) = item.get(VALUE) else {
            return Ok(None);
        };
        let value = value
            .as_s()
            .map_err(|_| Error::internal("item attribute val is not a string"))?
            .clone();
        Ok(Some(Versioned {
            value,
            version: item.num(VERSION)?,
        }))
    }

    async fn put(&self, key: &Key, value: &Value) -> Result<u64, Error> {
        let version = self.write_once(key, Some(value)).await?;
        version.ok_or_else(|| Error::internal("an unconditional put was refused"))
    }

    async fn delete(&self, key: &Key) -> Result<Deleted, Error> {
        let version = self.write_once(key, None).await?;
        Ok(Deleted {
            existed: version.is_some(),
        })
    }
}
