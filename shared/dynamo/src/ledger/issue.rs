//! The writes of an issue: its intent, its number, its certificate, and the resumption of an earlier
//! request under the same key.

use super::item::{Intent, Slot, certificate_key, class_key, intent_key_of, slots};
use super::{
    AMOUNT, AT, DynamoLedger, ID, ISSUED, MAX_PENDING, NAME, NEXT, NUMBER, PENDING_NUMBERS, PK,
    REMAINING, old_item,
};
use crate::attr::{Item, n, s};
use crate::error::{is_condition_failed, store_error};
use crate::send::WithinDeadline;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_core::Error;
use strata_core::certificates::{Certificate, CertificateId, IssueRequest, Ledger, replay_of};

/// A number allocated to an intent.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) slot: Slot,
    pub(super) intent: Intent,
    pub(super) certificate: Certificate,
}

impl DynamoLedger {
    /// Writes the intent, only if there is none under its key: `Ok(Some(item))` is the one there.
    pub(super) async fn put_intent(&self, item: Item) -> Result<Option<Item>, Error> {
        self.put_intent_if(item, None).await
    }

    /// Writes the intent if there is none, or (with `replacing`) if the one there is still the one written
    /// at that time: `Ok(Some(item))` is the one there instead.
    pub(super) async fn put_intent_if(
        &self,
        item: Item,
        replacing: Option<u64>,
    ) -> Result<Option<Item>, Error> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#pk", PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let put = match replacing {
            None => put.condition_expression("attribute_not_exists(#pk)"),
            Some(at) => put
                .condition_expression("attribute_not_exists(#pk) OR #at = :at")
                .expression_attribute_names("#at", AT)
                .expression_attribute_values(":at", n(at)),
        };
        match put.send().within_deadline().await {
            Ok(_) => Ok(None),
            Err(e) if is_condition_failed(&e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Some(c.item.clone().unwrap_or_default()))
                }
                _ => Ok(Some(Item::new())),
            },
            Err(e) => Err(store_error("PutItem", e)),
        }
    }

    /// Writes a pending certificate (if not written yet), gives a keyed intent its number, and removes the
    /// slot (`remove`: its own request, or anyone past [`GRACE`]). Safe to run any number of times, by
    /// anyone: each write is idempotent.
    pub(super) async fn finish(&self, pending: &Pending, remove: bool) -> Result<(), Error> {
        self.write_certificate(pending).await?;
        if pending.slot.keyed() {
            self.give_number(pending).await?;
        }
        if remove {
            self.remove_slot(&pending.certificate.class, &pending.slot.name())
                .await?;
        }
        Ok(())
    }

    /// Writes a pending certificate, if not written yet.
    async fn write_certificate(&self, pending: &Pending) -> Result<(), Error> {
        let certificate = &pending.certificate;
        let mut item = certificate_key(&certificate.class, certificate.number);
        item.insert(NAME.into(), s(&certificate.name));
        item.insert(AMOUNT.into(), n(certificate.amount));
        item.insert(AT.into(), n(pending.intent.at_ms));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .within_deadline()
            .await;
        match put {
            Ok(_) => Ok(()),
            // Written already: by an earlier attempt, or by someone who found the slot.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(store_error("PutItem", e)),
        }
    }

    /// The record of the key (a keyed intent) gets its certificate's number, only if it is still this
    /// issue's: a key reused past its retention replaces the intent, and the new one is not this.
    pub(super) async fn give_number(&self, pending: &Pending) -> Result<(), Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(pending.slot.intent_key()))
            .update_expression("SET #number = :number")
            .condition_expression("#at = :at")
            .expression_attribute_names("#number", NUMBER)
            .expression_attribute_names("#at", AT)
            .expression_attribute_values(":number", n(pending.certificate.number))
            .expression_attribute_values(":at", n(pending.intent.at_ms))
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }

    /// Allocates a number for `request` under `slot` (retried by the SDK: a retry of an attempt that
    /// applied finds the slot). `Ok(Err(item))`: refused, with the class item as it was.
    pub(super) async fn allocate(
        &self,
        request: &IssueRequest,
        slot: &Slot,
    ) -> Result<Result<Item, Option<Item>>, SdkError<UpdateItemError, HttpResponse>> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(class_key(&request.class)))
            .update_expression(
                "SET #next = #next + :one, #issued = #issued + :amount, #remaining = #remaining - :amount, \
                 #pnum.#slot = #next",
            )
            .condition_expression(
                "#remaining >= :amount AND attribute_not_exists(#pnum.#slot) AND size(#pnum) < :cap",
            )
            .expression_attribute_names("#next", NEXT)
            .expression_attribute_names("#issued", ISSUED)
            .expression_attribute_names("#remaining", REMAINING)
            .expression_attribute_names("#pnum", PENDING_NUMBERS)
            .expression_attribute_names("#slot", slot.name())
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":amount", n(request.amount))
            .expression_attribute_values(":cap", n(MAX_PENDING as u64))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(out) => Ok(Ok(out.attributes.unwrap_or_default())),
            Err(e) if is_condition_failed(&e) => Ok(Err(old_item(&e))),
            Err(e) => Err(e),
        }
    }

    /// Finishes this request's own pending certificate; once the number is allocated the certificate is
    /// issued, so a failure to write it now is logged and left to the next reader or issue (see the module
    /// docs). `own_key`: the request id of a keyed issue whose number this request allocated; its slot
    /// then waits for the HTTP layer's word (see `settle`).
    pub(super) async fn finish_own(
        &self,
        request: &IssueRequest,
        pending: Pending,
        own_key: Option<&str>,
    ) -> Result<Certificate, Error> {
        let c = &pending.certificate;
        if c.class != request.class || c.name != request.name || c.amount != request.amount {
            return Err(strata_core::idempotency::mismatch());
        }
        let certificate = pending.certificate.clone();
        let result = match own_key {
            Some(request_id) => self.write_certificate(&pending).await.map(|()| {
                self.unsettled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(request_id, pending, Instant::now());
            }),
            None => self.finish(&pending, true).await,
        };
        if let Err(e) = result {
            tracing::warn!(certificate = %certificate.id(), error = %e, "certificate allocated but not written yet; it stays pending");
        }
        Ok(certificate)
    }

    /// A keyed issue whose key has an intent from an earlier request: its certificate if it has one (or
    /// gets one: the earlier attempt allocated), `Ok(None)` if this request is to issue anew (nothing was
    /// allocated under the key, or the key's record expired), after taking the intent over.
    pub(super) async fn resume(
        &self,
        request: &IssueRequest,
        request_id: &str,
        mine: Item,
        earlier: Intent,
    ) -> Result<Option<Certificate>, Error> {
        let mut earlier = earlier;
        if earlier.number.is_none() {
            // Allocated and not finished, or not allocated. A slot is removed only once its number is durable
            // elsewhere: in the intent, or in the HTTP layer's record of the answer, which answers every
            // retry under the key while it holds (so none gets here). Reading the class item and then the
            // intent again cannot miss both.
            let slot = Slot::new(request_id, earlier.at_ms);
            if let Some(class) = self.get(class_key(&earlier.class)).await?
                && let Some((_, number)) = slots(&class)
                    .into_iter()
                    .find(|(name, _)| *name == slot.name())
            {
                let certificate = earlier.certificate(number)?;
                let pending = Pending {
                    slot,
                    intent: earlier.clone(),
                    certificate,
                };
                if !earlier.expired() {
                    return self.finish_own(request, pending, None).await.map(Some);
                }
                // Issued under this key past its retention (writing it kept failing): write it; this request
                // is a new one under a free key.
                self.finish(&pending, true).await?;
                earlier.number = Some(pending.certificate.number);
            } else if let Some(item) = self.get(intent_key_of(request_id)).await? {
                earlier = Intent::decode(&item)?;
            }
        }
        if let Some(number) = earlier.number
            && !earlier.expired()
        {
            let id = CertificateId {
                class: earlier.class.clone(),
                number,
            };
            let Some(certificate) = self.get_certificate(&id).await? else {
                return Err(Error::internal(format!(
                    "the record of a key points to a missing certificate {}",
                    id.class.as_str()
                )));
            };
            let until = UNIX_EPOCH + Duration::from_millis(earlier.until_ms);
            if let Some(c) = replay_of(request, certificate, until, SystemTime::now())? {
                return Ok(Some(c));
            }
        }
        // Nothing allocated under the key, or its record expired: this request takes the intent over, if
        // no other request did meanwhile.
        let (at, id) = (mine.get(AT).cloned(), mine.get(ID).cloned());
        match self.put_intent_if(mine, Some(earlier.at_ms)).await? {
            None => Ok(None),
            // The SDK's retry of this very write, which applied.
            Some(there) if there.get(AT) == at.as_ref() && there.get(ID) == id.as_ref() => Ok(None),
            Some(_) => Err(Error::unavailable(
                "another request with this Idempotency-Key is running; retry",
            )),
        }
    }
}
