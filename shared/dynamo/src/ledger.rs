//! The certificate ledger on DynamoDB.
//!
//! Items (table `LedgerTable`, key `pk` + numeric `n`):
//! - the share class, `pk = "class#CS", n = 0`: `auth`, `issued`, `remaining`, `next`, and `pnum`, the
//!   numbers allocated whose certificate may not be written yet, by slot (a 20-character name for the
//!   request, see [`Slot`]);
//! - each certificate, `pk = "cert#CS", n = <number>` (so a `Query` lists a class in number order);
//! - each issue's intent, written before its number is allocated: the class, name, amount and time, so that
//!   anyone can write the certificate of a number whose request died. For an issue with an idempotency key
//!   it is also the ledger's record of the key, `pk = "req#<slot>", n = 0`, which gets the certificate's
//!   number unless the HTTP layer recorded the answer (see below), and holds for the retention of
//!   [`strata_core::Settings`] from the issue (`until`; past it the record is ignored whether DynamoDB has
//!   deleted it or not, and an issue under the key is a new one); without a key it is
//!   `pk = "int#<slot>", n = 0`. Intents carry `ttl`, 30 days past
//!   `until`: a number whose request died is written by the next issue, read or listing of its class (see
//!   below), long before that.
//!
//! An issue is four writes, none of them a transaction: the intent (`PutItem`, only if absent), the number
//! (`UpdateItem` of the class item: takes `next`, adds the shares and records `pnum.<slot> = next`, under
//! `remaining >= :amount AND attribute_not_exists(pnum.<slot>)`, so there is no read-then-write race and
//! nothing to retry under contention, and a retry of an attempt that applied, the SDK's after a lost answer,
//! finds its own slot instead of taking a second number), the certificate (`PutItem`, only if absent), and
//! the slot's removal from the class item. A slot is removed only once its number is durable elsewhere: in
//! the certificate and, with a key, where a retry under the key finds it. With a key the slot waits for the
//! HTTP layer's word on the request ([`Ledger::settled`], see `settle`): its answer recorded, the record
//! holds the number for longer than the intent would and answers every retry, so the slot goes at once
//! (still four writes, the HTTP layer's two on top); otherwise the intent gets the number first. So an
//! issue writes the class item twice, 1 WRU each: the class item holds counters and at most [`MAX_PENDING`]
//! slots of about 30 bytes, under 1 KB however many issues run at once, whatever the names (names live in
//! the intents). That is 500 issues/s per class, the ceiling of the best public gapless counter on DynamoDB
//! (a read, then a transaction over the counter and the item: 2 WRU on the counter), with exactly-once after
//! lost answers on top. One write of the class item (1,000/s) would need the allocation and the
//! certificate's write in one call, and DynamoDB cannot write the number an update computes into another
//! item; a transaction over both items costs 2 WRU on the class item by itself.
//!
//! If the process dies between allocating and writing (or, with a key, before the request is settled), the
//! slot stays, and whoever sees it next (a later issue of the class, a read of the missing number, a
//! listing, a retry with the same key) writes the certificate from the intent, and gives a keyed intent its
//! number before it removes the slot: a number is never lost and never used twice. Only the request that
//! made a slot removes it at once; anyone else who writes its certificate leaves the slot for [`GRACE`],
//! longer than any request's deadline, so that the owner's retries still find it; after that anyone may
//! remove it.
//! At most [`MAX_PENDING`] slots are kept: past that, issues of the class answer `503` (with nothing
//! allocated) until the certificates are written.
//!
//! Once the number is allocated the certificate is issued: if writing it then fails, the issue still
//! answers `201` (the intent holds everything, and the next reader or issue of the class writes it). A
//! failure before that point may or may not have allocated (DynamoDB's answer can be lost after the write):
//! the issue looks for its slot, and otherwise answers `503`, "outcome unknown" — with an
//! `Idempotency-Key`, a retry returns the certificate if there is one and issues it otherwise.

use crate::attr::{Item, ItemExt, n, s};
use crate::error::{is_condition_failed, store_error};
use crate::send::WithinDeadline;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;
use std::sync::Mutex;
#[cfg(feature = "faults")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};
use strata_core::Error;
use strata_core::certificates::{
    Certificate, CertificateId, ClassCode, IssueRequest, Ledger, ShareClass, below_issued,
    class_not_found, insufficient,
};
use strata_core::retention::holds_until;
use strata_core::time::{epoch_millis, now_millis};

pub(crate) const PK: &str = "pk";
pub(crate) const N: &str = "n";
pub(crate) const AUTHORIZED: &str = "auth";
pub(crate) const ISSUED: &str = "issued";
pub(crate) const REMAINING: &str = "remaining";
pub(crate) const NEXT: &str = "next";
/// Slot → number, for the numbers allocated whose certificate may not be written yet.
pub(crate) const PENDING_NUMBERS: &str = "pnum";
pub(crate) const NAME: &str = "name";
pub(crate) const AMOUNT: &str = "amount";
pub(crate) const AT: &str = "at";
pub(crate) const CLASS: &str = "class";
/// An intent's request id (the idempotency key with `r` before it, or `u` and a fresh id).
pub(crate) const ID: &str = "id";
/// An intent's number, once its certificate is written (keyed issues only).
pub(crate) const NUMBER: &str = "number";
/// Until when (ms since the epoch) a keyed intent is the record of its key.
pub(crate) const UNTIL: &str = "until";

/// A slot this old belongs to a request past its deadline (see `strata_core::deadline`), which died or
/// gave up: issues of its class write its certificate (readers do so at once, as they need it). Not
/// sooner: an issue of a live request that is merely slow would be written twice, and a refused write is
/// billed too.
pub const ABANDONED: Duration = Duration::from_secs(10);
/// After this no attempt of the request that made a slot can still arrive (every request's deadline is
/// shorter, see `strata_core::deadline`), so anyone may remove the slot.
pub const GRACE: Duration = Duration::from_secs(30);
/// Most slots in one class item: 24 of at most 31 bytes each (a 20-character name, a number of up to 16
/// digits, DynamoDB's map overhead) and the counters stay under 1 KB, so every write of the class item is
/// 1 WRU. Far above the issues of one class in flight at once on one item's 1,000 writes/s.
pub const MAX_PENDING: usize = 24;
/// Intents outlive their record's retention by this much, so that a number whose request died is written
/// from its intent whenever its class is next issued, read or listed.
const INTENT_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
const ATTEMPTS: usize = 5;
/// What errors call a ledger item's attribute that is missing or malformed.
const LEDGER: &str = "ledger item attribute";

mod issue;
mod item;
mod recovery;
mod settle;

use issue::Pending;
pub(crate) use item::{Intent, intent_item, slots};
use item::{Slot, certificate_key, class_key, decode_certificate, decode_class};
use settle::Unsettled;

#[derive(Debug)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    defaults: Vec<(ClassCode, u64)>,
    /// How long an issue under an idempotency key is remembered.
    retention: Duration,
    /// Fault injection for tests: when set, the next issue stops right after allocating its number, as if
    /// the Lambda died there.
    #[cfg(feature = "faults")]
    fail_after_allocation: AtomicBool,
    /// This process's keyed issues whose slot waits for the HTTP layer's word (see `settle`).
    unsettled: Mutex<Unsettled>,
}

impl DynamoLedger {
    pub fn new(
        client: Client,
        table: String,
        defaults: Vec<(ClassCode, u64)>,
        retention: Duration,
    ) -> Self {
        Self {
            client,
            table,
            defaults,
            retention,
            #[cfg(feature = "faults")]
            fail_after_allocation: AtomicBool::new(false),
            unsettled: Mutex::new(Unsettled::new()),
        }
    }

    /// Test hook: makes the next issue fail right after it allocated its number.
    #[cfg(feature = "faults")]
    pub fn inject_failure_after_allocation(&self) {
        self.fail_after_allocation.store(true, Ordering::SeqCst);
    }

    fn default_of(&self, class: &ClassCode) -> Option<u64> {
        self.defaults
            .iter()
            .find(|(c, _)| c == class)
            .map(|(_, a)| *a)
    }

    async fn get(&self, key: Item) -> Result<Option<Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .within_deadline()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item)
    }

    /// Creates a default class's item the first time it is needed (no-op if it exists).
    async fn materialize_default(&self, class: &ClassCode, authorized: u64) -> Result<(), Error> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(class_key(class)))
            .item(AUTHORIZED, n(authorized))
            .item(ISSUED, n(0))
            .item(REMAINING, n(authorized))
            .item(NEXT, n(1))
            .item(PENDING_NUMBERS, AttributeValue::M(HashMap::new()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(store_error("PutItem", e)),
        }
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn put_class(&self, class: &ClassCode, authorized: u64) -> Result<ShareClass, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(class_key(class)))
            .update_expression(
                "SET #auth = :auth, #issued = if_not_exists(#issued, :zero), \
                 #remaining = :auth - if_not_exists(#issued, :zero), #next = if_not_exists(#next, :one), \
                 #pnum = if_not_exists(#pnum, :empty)",
            )
            .condition_expression("attribute_not_exists(#pk) OR #issued <= :auth")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#auth", AUTHORIZED)
            .expression_attribute_names("#issued", ISSUED)
            .expression_attribute_names("#remaining", REMAINING)
            .expression_attribute_names("#next", NEXT)
            .expression_attribute_names("#pnum", PENDING_NUMBERS)
            .expression_attribute_values(":auth", n(authorized))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(out) => decode_class(class, &out.attributes.unwrap_or_default()),
            Err(e) if is_condition_failed(&e) => {
                let issued = old_item(&e)
                    .map(|item| item.attrs(LEDGER).num(ISSUED))
                    .transpose()?
                    .unwrap_or(0);
                Err(below_issued(class, issued, authorized))
            }
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }

    async fn get_class(&self, class: &ClassCode) -> Result<Option<ShareClass>, Error> {
        match self.get(class_key(class)).await? {
            Some(item) => decode_class(class, &item).map(Some),
            None => Ok(self.default_of(class).map(|authorized| ShareClass {
                class: class.clone(),
                authorized,
                issued: 0,
                next_number: 1,
            })),
        }
    }

    async fn issue(
        &self,
        request: &IssueRequest,
        request_id: Option<&str>,
    ) -> Result<Certificate, Error> {
        // Slots and intents are keyed by request: the client's key, or a fresh id.
        let key = request_id;
        let request_id = match key {
            Some(id) => format!("r{id}"),
            None => format!("u{}", uuid_like()),
        };
        let at = now_millis();
        let until = epoch_millis(holds_until(
            UNIX_EPOCH + Duration::from_millis(at),
            self.retention,
        ));
        let intent = intent_item(
            &request_id,
            request.class.as_str(),
            Some((&request.name, request.amount)),
            at,
            until,
            None,
        );
        if let Some(there) = self.put_intent(intent.clone()).await? {
            let earlier = Intent::decode(&there)?;
            // The SDK's retry of this very write finds it applied; anything else is an earlier request
            // under the same key.
            let own_retry = earlier.at_ms == at && earlier.id == request_id;
            if !own_retry
                && let Some(certificate) =
                    self.resume(request, &request_id, intent, earlier).await?
            {
                return Ok(certificate);
            }
        }
        let slot = Slot::new(&request_id, at);
        let mine = |number: u64| Pending {
            slot: slot.clone(),
            intent: Intent {
                id: request_id.clone(),
                class: request.class.clone(),
                name: Some(request.name.clone()),
                amount: Some(request.amount),
                at_ms: at,
                until_ms: until,
                number: None,
            },
            certificate: Certificate {
                class: request.class.clone(),
                number,
                name: request.name.clone(),
                amount: request.amount,
                issued_at: UNIX_EPOCH + Duration::from_millis(at),
            },
        };
        let own_number = |item: &Item| {
            slots(item)
                .into_iter()
                .find(|(name, _)| *name == slot.name())
                .map(|(_, number)| number)
        };
        for _ in 0..ATTEMPTS {
            let item = match self.allocate(request, &slot).await {
                Ok(Ok(item)) => item,
                Ok(Err(None)) => {
                    let authorized = self
                        .default_of(&request.class)
                        .ok_or_else(|| class_not_found(&request.class))?;
                    self.materialize_default(&request.class, authorized).await?;
                    continue;
                }
                Ok(Err(Some(item))) => {
                    if let Some(number) = own_number(&item) {
                        // An earlier attempt of this very request allocated (its answer was lost).
                        return self.finish_own(request, mine(number), key).await;
                    }
                    if item.attrs(LEDGER).num(REMAINING)? < request.amount {
                        return Err(insufficient(
                            &request.class,
                            item.attrs(LEDGER).num(REMAINING)?,
                            request.amount,
                        ));
                    }
                    // The class has MAX_PENDING certificates pending: write what can be written, then retry.
                    tracing::warn!(
                        class = request.class.as_str(),
                        "too many pending certificates"
                    );
                    self.finish_others(&request.class, &item, Duration::ZERO, false)
                        .await?;
                    continue;
                }
                Err(e) => {
                    // The allocation may have applied with its answer lost: look for the slot.
                    let failure = store_error("UpdateItem", e);
                    let class = self
                        .get(class_key(&request.class))
                        .await
                        .map_err(|_| unknown())?;
                    return match class.as_ref().and_then(own_number) {
                        Some(number) => self.finish_own(request, mine(number), key).await,
                        None if failure.kind == strata_core::Kind::Internal => Err(failure),
                        None => Err(unknown()),
                    };
                }
            };
            let number = own_number(&item).unwrap_or(item.attrs(LEDGER).num(NEXT)? - 1);
            #[cfg(feature = "faults")]
            if self.fail_after_allocation.swap(false, Ordering::SeqCst) {
                return Err(Error::internal(
                    "injected failure after allocating a certificate number",
                ));
            }
            let certificate = self.finish_own(request, mine(number), key).await?;
            // Finish what dead requests left behind, so their numbers show up without waiting for a read.
            self.finish_others(&request.class, &item, ABANDONED, true)
                .await?;
            return Ok(certificate);
        }
        Err(Error::unavailable(
            "too many certificates of this class are being written; retry",
        ))
    }

    async fn get_certificate(&self, id: &CertificateId) -> Result<Option<Certificate>, Error> {
        if let Some(item) = self.get(certificate_key(&id.class, id.number)).await? {
            return decode_certificate(&id.class, &item).map(Some);
        }
        // A number below `next` is allocated: if its item is missing, it is pending; finish it and look again.
        let Some(class) = self.get(class_key(&id.class)).await? else {
            return Ok(None);
        };
        if id.number >= class.attrs(LEDGER).num(NEXT)? {
            return Ok(None);
        }
        self.finish_others(&id.class, &class, Duration::ZERO, false)
            .await?;
        match self.get(certificate_key(&id.class, id.number)).await? {
            Some(item) => decode_certificate(&id.class, &item).map(Some),
            None => Err(Error::unavailable(
                "the certificate is still being written; retry",
            )),
        }
    }

    async fn list(
        &self,
        class: &ClassCode,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Certificate>, Error> {
        let Some(class_item) = self.get(class_key(class)).await? else {
            return Ok(Vec::new());
        };
        let next = class_item.attrs(LEDGER).num(NEXT)?;
        let expected = next
            .saturating_sub(after.saturating_add(1))
            .min(u64::from(limit));
        for repaired in [false, true] {
            let certificates = self.query_page(class, after, limit).await?;
            // Gapless means exactly the numbers after+1, after+2, … below `next`; anything else is pending.
            let complete = certificates.len() as u64 >= expected
                && certificates
                    .iter()
                    .enumerate()
                    .all(|(i, c)| c.number == after + 1 + i as u64);
            if complete || repaired {
                return Ok(certificates);
            }
            self.finish_others(class, &class_item, Duration::ZERO, false)
                .await?;
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn settled(&self, request_id: &str, recorded: bool) {
        self.settle(request_id, recorded).await;
    }
}

impl DynamoLedger {
    /// Up to `limit` certificates numbered above `after`, following `LastEvaluatedKey`: one `Query` page
    /// stops at 1 MB, which 1,000 certificates with long names pass.
    async fn query_page(
        &self,
        class: &ClassCode,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Certificate>, Error> {
        let mut certificates = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #n > :after")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#n", N)
                .expression_attribute_values(":pk", s(&format!("cert#{}", class.as_str())))
                .expression_attribute_values(":after", n(after))
                .consistent_read(true)
                .limit((limit as usize - certificates.len()) as i32)
                .set_exclusive_start_key(start)
                .send()
                .within_deadline()
                .await
                .map_err(|e| store_error("Query", e))?;
            for item in out.items.unwrap_or_default() {
                certificates.push(decode_certificate(class, &item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() && certificates.len() < limit as usize => {
                    start = Some(key)
                }
                _ => return Ok(certificates),
            }
        }
    }
}

/// An issue whose allocation may or may not have happened.
fn unknown() -> Error {
    Error::unavailable(
        "the store did not confirm the issue, which may or may not have happened; \
         retry with the same Idempotency-Key to get the certificate exactly once",
    )
}

fn old_item<R>(e: &aws_sdk_dynamodb::error::SdkError<UpdateItemError, R>) -> Option<Item> {
    match e.as_service_error()? {
        UpdateItemError::ConditionalCheckFailedException(c) => c.item.clone(),
        _ => None,
    }
}

fn uuid_like() -> String {
    strata_core::kv::tx::TxId::generate().as_str().to_owned()
}
