//! The key/value port on DynamoDB.
//!
//! Item: `pk` (the key), `val` (the value, absent on a tombstone), `ver` (a number that only grows). A delete
//! removes `val` but keeps the item and bumps `ver`, so versions never repeat for a key.

use crate::error::{is_condition_failed, store_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::collections::HashMap;
use strata_core::Error;
use strata_core::kv::{Deleted, Key, KvStore, Value, Versioned};

pub const PK: &str = "pk";
pub const VALUE: &str = "val";
pub const VERSION: &str = "ver";

pub struct DynamoKv {
    client: Client,
    table: String,
}

impl DynamoKv {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }
}

pub(crate) fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Result<u64, Error> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::internal(format!("item attribute {name} is missing or not a number")))
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
            version: number(&item, VERSION)?,
        }))
    }

    async fn put(&self, key: &Key, value: &Value) -> Result<u64, Error> {
        // ADD on a missing attribute starts from 0, so the first write is version 1.
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.as_str().to_owned()))
            .update_expression("SET #val = :val ADD #ver :one")
            .expression_attribute_names("#val", VALUE)
            .expression_attribute_names("#ver", VERSION)
            .expression_attribute_values(":val", AttributeValue::S(value.as_str().to_owned()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| store_error("UpdateItem", e))?;
        number(&out.attributes.unwrap_or_default(), VERSION)
    }

    async fn delete(&self, key: &Key) -> Result<Deleted, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.as_str().to_owned()))
            .update_expression("REMOVE #val ADD #ver :one")
            .condition_expression("attribute_exists(#val)")
            .expression_attribute_names("#val", VALUE)
            .expression_attribute_names("#ver", VERSION)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Deleted { existed: true }),
            Err(e) if is_condition_failed(&e) => Ok(Deleted { existed: false }),
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }
}
