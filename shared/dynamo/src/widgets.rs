//! Widgets on DynamoDB (`WidgetTable`, key `serial`): `name`, `ports` (e.g. "PRR"), the capacity per type
//! (`cP`, `cR`, `cQ`), the peers per type as string sets (`aP`, `aR`, `aQ`) and `ver`, bumped by every change.
//!
//! A claim is one `TransactWriteItems` updating both widgets, each under "exists, has a free slot of the
//! type, and is not associated with the other on it"; a release is one `TransactWriteItems` removing both
//! sides; deleting a widget is one `TransactWriteItems` that deletes it under its `ver` (so an association
//! made concurrently makes it retry) and removes it from every peer. No locks, so nothing to deadlock.

use crate::attr::{Item, ItemExt, n, s};
use crate::error::{cancellation_codes, is_condition_failed, store_error};
use crate::send::WithinDeadline;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use std::collections::HashMap;
use std::time::Duration;
use strata_core::Error;
use strata_core::widgets::{
    Port, Widget, Widgets, association_not_found, duplicate_serial, self_association,
    widget_not_found,
};

pub(crate) const SERIAL: &str = "serial";
pub(crate) const NAME: &str = "name";
pub(crate) const PORTS: &str = "ports";
pub(crate) const VERSION: &str = "ver";
/// The token of the put that created the widget.
pub(crate) const CREATED_BY: &str = "by";
/// Tries of a write that races others on the same widgets. Sixteen clients churning a few widgets made
/// a delete lose six races in a row now and then.
const ATTEMPTS: u32 = 10;

pub(crate) fn capacity_attr(port: Port) -> String {
    format!("c{}", port.as_str())
}

pub(crate) fn peers_attr(port: Port) -> String {
    format!("a{}", port.as_str())
}

fn key(serial: &str) -> Item {
    HashMap::from([(SERIAL.to_owned(), s(serial))])
}

pub(crate) fn decode(item: &Item) -> Result<Widget, Error> {
    let text = |name: &str| {
        item.text_opt(name)
            .map(str::to_owned)
            .ok_or_else(|| Error::internal(format!("widget attribute {name} is missing")))
    };
    let ports = text(PORTS)?
        .chars()
        .map(|c| Port::parse(&c.to_string()).ok_or_else(|| Error::internal("corrupt widget ports")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut associations = Vec::new();
    for port in Port::ALL {
        if let Some(peers) = item.get(&peers_attr(port)).and_then(|v| v.as_ss().ok()) {
            associations.extend(peers.iter().map(|peer| (port, peer.clone())));
        }
    }
    Ok(Widget {
        serial: text(SERIAL)?,
        name: text(NAME)?,
        ports,
        associations,
    })
}

#[derive(Debug)]
pub struct DynamoWidgets {
    client: Client,
    table: String,
}

impl DynamoWidgets {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// Takes one `port` slot on `serial` for `peer`, under the capacity and no-duplicate conditions.
    fn claim(&self, serial: &str, peer: &str, port: Port) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(serial)))
            .update_expression("ADD #peers :peer, #ver :one")
            .condition_expression(
                "attribute_exists(#serial) AND ((attribute_not_exists(#peers) AND #cap >= :one) \
                 OR (size(#peers) < #cap AND NOT contains(#peers, :name)))",
            )
            .expression_attribute_names("#serial", SERIAL)
            .expression_attribute_names("#peers", peers_attr(port))
            .expression_attribute_names("#cap", capacity_attr(port))
            .expression_attribute_names("#ver", VERSION)
            .expression_attribute_values(":peer", AttributeValue::Ss(vec![peer.to_owned()]))
            .expression_attribute_values(":name", s(peer))
            .expression_attribute_values(":one", n(1))
            .build()
            .expect("update is complete");
        TransactWriteItem::builder().update(update).build()
    }

    /// Removes `peer` from `serial`'s `port` peers, if it is there.
    fn release(&self, serial: &str, peer: &str, port: Port, require: bool) -> TransactWriteItem {
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(serial)))
            .update_expression("DELETE #peers :peer ADD #ver :one")
            .expression_attribute_names("#peers", peers_attr(port))
            .expression_attribute_names("#ver", VERSION)
            .expression_attribute_values(":peer", AttributeValue::Ss(vec![peer.to_owned()]))
            .expression_attribute_values(":one", n(1));
        update = if require {
            update
                .condition_expression("contains(#peers, :name)")
                .expression_attribute_values(":name", s(peer))
        } else {
            update
                .condition_expression("attribute_exists(#serial)")
                .expression_attribute_names("#serial", SERIAL)
        };
        TransactWriteItem::builder()
            .update(update.build().expect("update is complete"))
            .build()
    }

    /// Removes `peer` from every one of `ports` on `serial` (if `serial` still exists), in one update.
    fn release_all(&self, serial: &str, peer: &str, ports: &[Port]) -> TransactWriteItem {
        let removals: Vec<String> = ports
            .iter()
            .map(|p| format!("#a{} :peer", p.as_str()))
            .collect();
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(serial)))
            .update_expression(format!("DELETE {} ADD #ver :one", removals.join(", ")))
            .condition_expression("attribute_exists(#serial)")
            .expression_attribute_names("#serial", SERIAL)
            .expression_attribute_names("#ver", VERSION)
            .expression_attribute_values(":peer", AttributeValue::Ss(vec![peer.to_owned()]))
            .expression_attribute_values(":one", n(1));
        for port in ports {
            update = update
                .expression_attribute_names(format!("#a{}", port.as_str()), peers_attr(*port));
        }
        TransactWriteItem::builder()
            .update(update.build().expect("update is complete"))
            .build()
    }

    async fn read(&self, serial: &str) -> Result<Option<(Widget, u64)>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(serial)))
            .consistent_read(true)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        out.item
            .map(|item| {
                let version = item.num_opt(VERSION).unwrap_or(0);
                decode(&item).map(|w| (w, version))
            })
            .transpose()
    }

    /// Runs a transaction; `Ok(Some(codes))` when it was cancelled (one code per action).
    async fn transact(
        &self,
        actions: Vec<TransactWriteItem>,
    ) -> Result<Option<Vec<String>>, Error> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .within_deadline()
            .await
        {
            Ok(_) => Ok(None),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) => Ok(Some(codes)),
                None => Err(store_error("TransactWriteItems", e)),
            },
        }
    }
}

/// 5, 10, 20, … ms up to 160, each half of it jittered: racers that lost together do not retry together.
async fn back_off(attempt: u32) {
    let base = Duration::from_millis(5 << attempt.min(5));
    tokio::time::sleep(base / 2 + base.mul_f64(crate::send::jitter() / 2.0)).await;
}

#[async_trait]
impl Widgets for DynamoWidgets {
    async fn create(&self, widget: &Widget) -> Result<(), Error> {
        let ports: String = widget.ports.iter().map(|p| p.as_str()).collect();
        let token = crate::history::token();
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(SERIAL, s(&widget.serial))
            .item(NAME, s(&widget.name))
            .item(PORTS, s(&ports))
            .item(VERSION, n(1))
            .item(CREATED_BY, s(&token))
            .condition_expression("attribute_not_exists(#serial)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#serial", SERIAL);
        for port in Port::ALL {
            request = request.item(capacity_attr(port), n(widget.capacity(port) as u64));
        }
        match request.send().within_deadline().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => {
                // The SDK's retry of a put that applied meets the widget it made: recognise it by token.
                let ours = match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => c
                        .item
                        .as_ref()
                        .and_then(|item| item.text_opt(CREATED_BY))
                        .is_some_and(|by| by == token),
                    _ => false,
                };
                if ours {
                    Ok(())
                } else {
                    Err(duplicate_serial(&widget.serial))
                }
            }
            Err(e) => Err(store_error("PutItem", e)),
        }
    }

    async fn get(&self, serial: &str) -> Result<Option<Widget>, Error> {
        Ok(self.read(serial).await?.map(|(w, _)| w))
    }

    async fn delete(&self, serial: &str) -> Result<(), Error> {
        for attempt in 0..ATTEMPTS {
            let (widget, version) = self
                .read(serial)
                .await?
                .ok_or_else(|| widget_not_found(serial))?;
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(serial)))
                .condition_expression("#ver = :ver")
                .expression_attribute_names("#ver", VERSION)
                .expression_attribute_values(":ver", n(version))
                .build()
                .expect("delete is complete");
            let mut actions = vec![TransactWriteItem::builder().delete(delete).build()];
            // One update per peer (a transaction may touch an item once), dropping every port it shares.
            let mut by_peer: std::collections::BTreeMap<&str, Vec<Port>> =
                std::collections::BTreeMap::new();
            for (port, peer) in &widget.associations {
                by_peer.entry(peer).or_default().push(*port);
            }
            actions.extend(
                by_peer
                    .into_iter()
                    .map(|(peer, ports)| self.release_all(peer, serial, &ports)),
            );
            match self.transact(actions).await? {
                None => return Ok(()),
                // Changed since we read it (an association came or went): read again.
                Some(_) => back_off(attempt).await,
            }
        }
        Err(Error::unavailable(
            "the widget kept changing while being deleted; retry",
        ))
    }

    async fn associate(&self, serial: &str, peer: &str, port: Port) -> Result<(), Error> {
        if serial == peer {
            return Err(self_association());
        }
        for attempt in 0..ATTEMPTS {
            let actions = vec![
                self.claim(serial, peer, port),
                self.claim(peer, serial, port),
            ];
            let Some(codes) = self.transact(actions).await? else {
                return Ok(());
            };
            if codes.iter().any(|c| c == "ConditionalCheckFailed") {
                // Say exactly why, from the widgets as they are now.
                let a = self
                    .read(serial)
                    .await?
                    .ok_or_else(|| widget_not_found(serial))?
                    .0;
                let b = self
                    .read(peer)
                    .await?
                    .ok_or_else(|| widget_not_found(peer))?
                    .0;
                if let Some(refusal) = a.refuse(port, peer).or_else(|| b.refuse(port, serial)) {
                    return Err(refusal);
                }
            }
            // A concurrent transaction on the same widgets, or the refusal went away meanwhile: go again.
            back_off(attempt).await;
        }
        Err(Error::unavailable("the widgets are busy; retry"))
    }

    async fn dissociate(&self, serial: &str, peer: &str, port: Port) -> Result<(), Error> {
        for attempt in 0..ATTEMPTS {
            let actions = vec![
                self.release(serial, peer, port, true),
                self.release(peer, serial, port, false),
            ];
            let Some(codes) = self.transact(actions).await? else {
                return Ok(());
            };
            if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") {
                return Err(association_not_found(serial, peer, port));
            }
            back_off(attempt).await;
        }
        Err(Error::unavailable("the widgets are busy; retry"))
    }
}
