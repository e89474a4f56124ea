//! WebSocket sessions on DynamoDB (`WsSessionTable`, key `connection`): the connection's open transaction,
//! with a TTL past API Gateway's two-hour limit on a connection's life.

use crate::attr::{Item, ItemExt};
use crate::error::{is_condition_failed, store_error};
use crate::send::WithinDeadline;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::time::{Duration, SystemTime};
use strata_core::Error;
use strata_core::kv::line::Connections;
use strata_core::kv::tx::TxId;
use strata_core::time::epoch_seconds;

const CONNECTION: &str = "connection";
const TX: &str = "tx";
const TTL: &str = crate::attr::TTL;
const KEEP: Duration = Duration::from_secs(3 * 3600);

#[derive(Debug)]
pub struct DynamoConnections {
    client: Client,
    table: String,
}

impl DynamoConnections {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }
}

fn tx_of(item: Option<&Item>) -> Option<TxId> {
    TxId::parse(item?.text_opt(TX)?).ok()
}

#[async_trait]
impl Connections for DynamoConnections {
    async fn transaction(&self, connection: &str) -> Result<Option<TxId>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(CONNECTION, AttributeValue::S(connection.to_owned()))
            .consistent_read(true)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(tx_of(out.item.as_ref()))
    }

    async fn set_transaction(&self, connection: &str, tx: Option<&TxId>) -> Result<(), Error> {
        let ttl = AttributeValue::N(epoch_seconds(SystemTime::now() + KEEP).to_string());
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(CONNECTION, AttributeValue::S(connection.to_owned()))
            .expression_attribute_names("#tx", TX)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":ttl", ttl);
        let request = match tx {
            Some(tx) => request
                .update_expression("SET #tx = :tx, #ttl = :ttl")
                .expression_attribute_values(":tx", AttributeValue::S(tx.as_str().to_owned())),
            None => request.update_expression("SET #ttl = :ttl REMOVE #tx"),
        };
        request
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("UpdateItem", e))?;
        Ok(())
    }

    async fn replace_transaction(
        &self,
        connection: &str,
        expected: Option<&TxId>,
        new: Option<&TxId>,
    ) -> Result<bool, Error> {
        let ttl = AttributeValue::N(epoch_seconds(SystemTime::now() + KEEP).to_string());
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(CONNECTION, AttributeValue::S(connection.to_owned()))
            .expression_attribute_names("#tx", TX)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":ttl", ttl)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match new {
            Some(tx) => request
                .update_expression("SET #tx = :tx, #ttl = :ttl")
                .expression_attribute_values(":tx", AttributeValue::S(tx.as_str().to_owned())),
            None => request.update_expression("SET #ttl = :ttl REMOVE #tx"),
        };
        let request = match expected {
            Some(tx) => request
                .condition_expression("#tx = :expected")
                .expression_attribute_values(
                    ":expected",
                    AttributeValue::S(tx.as_str().to_owned()),
                ),
            None => request.condition_expression("attribute_not_exists(#tx)"),
        };
        match request.send().within_deadline().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => {
                // Already what this call asked for: the SDK's retry of an attempt that applied (transaction
                // ids are fresh, so no other request sets the same one).
                let now = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        tx_of(c.item.as_ref())
                    }
                    _ => return Ok(false),
                };
                Ok(now.as_ref() == new && new != expected)
            }
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }

    async fn forget(&self, connection: &str) -> Result<Option<TxId>, Error> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(CONNECTION, AttributeValue::S(connection.to_owned()))
            .return_values(ReturnValue::AllOld)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("DeleteItem", e))?;
        Ok(tx_of(out.attributes.as_ref()))
    }
}
