//! Idempotency records on DynamoDB (table `IdempotencyTable`, key `id`), in the pattern of Powertools for
//! AWS Lambda: a conditional put claims the key (in progress, with a short expiry), the response completes it
//! (kept for the retention of [`strata_core::Settings`]; `ttl` lets DynamoDB delete it afterwards), a failure
//! that should not be replayed deletes it. The claim carries its own token ([`Owner`]), so the SDK's retry of a
//! claim that applied recognises it as its own, and only the claim's owner completes or releases it: a
//! request that outlived its claim leaves the claim of the request that took the key over alone.
//!
//! The claim is the only reader, and it replaces a record whose `until` has passed: DynamoDB may keep an
//! expired record for days, and a key reused after its retention is a new request, never a replay of the
//! old answer nor a `422`. `until` includes [`strata_core::retention::CLOCK_SKEW_MARGIN`] for completed
//! records; an in-progress claim holds [`IN_PROGRESS_TTL`], which already outlasts any request by far more
//! than any skew.

use crate::attr::{Item, ItemExt, TTL, n, s};
use crate::error::{is_condition_failed, store_error};
use crate::send::WithinDeadline;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use strata_core::Error;
use strata_core::idempotency::{
    Claim, IN_PROGRESS_TTL, Idempotency, Owner, Stored, in_progress, mismatch,
};
use strata_core::retention::{holds_until, ttl_seconds};
use strata_core::time::{epoch_millis, now_millis};

pub(crate) const ID: &str = "id";
pub(crate) const STATE: &str = "st";
pub(crate) const FINGERPRINT: &str = "fp";
/// Until when the record holds, in milliseconds (in progress: the claim; completed: the retention and the
/// clock-skew margin); past it the record is absent to every claim.
pub(crate) const UNTIL: &str = "until";
pub(crate) const STATUS: &str = "status";
/// The claim's own token: a retry of the claim's `PutItem` after a lost answer meets its own claim, and
/// must proceed rather than answer `409 request_in_progress` to the request that holds it.
const OWNER: &str = "own";
/// The answer's content type, when it was not JSON.
pub(crate) const CONTENT_TYPE: &str = "ct";
pub(crate) const BODY: &str = "body";

const IN_PROGRESS: &str = "in_progress";
pub(crate) const COMPLETED: &str = "completed";

#[derive(Debug)]
pub struct DynamoIdempotency {
    client: Client,
    table: String,
    /// How long a completed response is replayed.
    retention: Duration,
}

impl DynamoIdempotency {
    pub fn new(client: Client, table: String, retention: Duration) -> Self {
        Self {
            client,
            table,
            retention,
        }
    }
}

/// A live record of another request: its answer to replay, `422` for another request under the key, `409`
/// while it runs.
fn found(record: &Item, fingerprint: &str) -> Result<Stored, Error> {
    if record.text_opt(FINGERPRINT) != Some(fingerprint) {
        return Err(mismatch());
    }
    if record.text_opt(STATE) != Some(COMPLETED) {
        return Err(in_progress());
    }
    let status = record.num_opt(STATUS).and_then(|v| u16::try_from(v).ok());
    match (status, record.text_opt(BODY)) {
        (Some(status), Some(body)) => Ok(Stored {
            status,
            body: body.to_owned(),
            content_type: record.text_opt(CONTENT_TYPE).map(str::to_owned),
        }),
        _ => Err(Error::internal(
            "completed idempotency record without a response",
        )),
    }
}

#[async_trait]
impl Idempotency for DynamoIdempotency {
    async fn look(&self, key: &str, fingerprint: &str) -> Result<Option<Stored>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(ID, s(key))
            .consistent_read(true)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        match out.item {
            Some(item)
                if item
                    .num_opt(UNTIL)
                    .is_some_and(|until| until >= now_millis()) =>
            {
                found(&item, fingerprint).map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn claim(&self, key: &str, fingerprint: &str) -> Result<Claim, Error> {
        let now = now_millis();
        let until = now + IN_PROGRESS_TTL.as_millis() as u64;
        // An abandoned claim (its request died before completing) is useless past `until`; DynamoDB may
        // delete it soon after.
        let ttl = ttl_seconds(holds_until(SystemTime::now(), IN_PROGRESS_TTL));
        let owner = Owner::generate();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(ID, s(key))
            .item(STATE, s(IN_PROGRESS))
            .item(FINGERPRINT, s(fingerprint))
            .item(OWNER, s(owner.as_str()))
            .item(UNTIL, n(until))
            .item(TTL, n(ttl))
            .condition_expression("attribute_not_exists(#id) OR #until < :now")
            .expression_attribute_names("#id", ID)
            .expression_attribute_names("#until", UNTIL)
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .within_deadline()
            .await;
        let e = match result {
            Ok(_) => return Ok(Claim::Proceed(owner)),
            Err(e) if is_condition_failed(&e) => e,
            Err(e) => return Err(store_error("PutItem", e)),
        };
        let old = match e.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(c)) => {
                c.item.clone().unwrap_or_default()
            }
            _ => HashMap::new(),
        };
        if old.text_opt(STATE) == Some(IN_PROGRESS) && old.text_opt(OWNER) == Some(owner.as_str()) {
            return Ok(Claim::Proceed(owner));
        }
        found(&old, fingerprint).map(Claim::Replay)
    }

    async fn complete(
        &self,
        key: &str,
        owner: &Owner,
        _fingerprint: &str,
        response: &Stored,
    ) -> Result<bool, Error> {
        let until = holds_until(SystemTime::now(), self.retention);
        let mut expression =
            "SET #st = :completed, #until = :until, #ttl = :ttl, #status = :status, #body = :body"
                .to_owned();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(ID, s(key))
            // Only the claim's owner, and only while it is in progress: a request that outlived its claim
            // leaves the claim of the request that took the key over alone.
            .condition_expression("#st = :in_progress AND #own = :own")
            .expression_attribute_names("#st", STATE)
            .expression_attribute_names("#own", OWNER)
            .expression_attribute_names("#until", UNTIL)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#body", BODY)
            .expression_attribute_values(":completed", s(COMPLETED))
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":own", s(owner.as_str()))
            .expression_attribute_values(":until", n(epoch_millis(until)))
            .expression_attribute_values(":ttl", n(ttl_seconds(until)))
            .expression_attribute_values(":status", n(u64::from(response.status)))
            .expression_attribute_values(":body", s(&response.body))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(content_type) = &response.content_type {
            expression.push_str(", #ct = :ct");
            request = request
                .expression_attribute_names("#ct", CONTENT_TYPE)
                .expression_attribute_values(":ct", s(content_type));
        }
        let e = match request
            .update_expression(expression)
            .send()
            .within_deadline()
            .await
        {
            Ok(_) => return Ok(true),
            Err(e) if is_condition_failed(&e) => e,
            Err(e) => return Err(store_error("UpdateItem", e)),
        };
        let old = match e.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => c.item.as_ref(),
            _ => None,
        };
        if old.is_some_and(|old| {
            old.text_opt(STATE) == Some(COMPLETED) && old.text_opt(OWNER) == Some(owner.as_str())
        }) {
            // The SDK's retry of this write after its answer was lost: it applied.
            return Ok(true);
        }
        tracing::warn!(
            "an idempotency claim expired before its request ended, and another request holds the key: \
             this request's answer is not kept"
        );
        Ok(false)
    }

    async fn release(&self, key: &str, owner: &Owner) -> Result<(), Error> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(ID, s(key))
            .condition_expression("#st = :in_progress AND #own = :own")
            .expression_attribute_names("#st", STATE)
            .expression_attribute_names("#own", OWNER)
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":own", s(owner.as_str()))
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Released already (a retry after a lost answer), or the claim is another request's now.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(store_error("DeleteItem", e)),
        }
    }
}
