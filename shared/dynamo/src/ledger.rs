//! The certificate ledger on DynamoDB.
//!
//! Items (table `LedgerTable`, key `pk` + numeric `n`):
//! - the share class, `pk = "class#CS", n = 0`: `auth`, `issued`, `remaining`, `next` and `pending`, a map of
//!   certificates whose number is allocated but whose item may not be written yet (request id → name, amount,
//!   time), with their numbers in `pnum` (request id → number);
//! - each certificate, `pk = "cert#CS", n = <number>` (so a `Query` lists a class in number order);
//! - for issues with an idempotency key, `pk = "req#<key>", n = 0` → the certificate's number and class,
//!   kept for the retention of [`strata_core::Settings`] from the issue (`ttl`; past it the record is
//!   ignored whether DynamoDB has deleted it or not, and an issue under the key is a new one).
//!
//! An issue is two calls. First one `UpdateItem` on the class item, the serialization point: it takes the next
//! number, adds the shares and records the pending certificate under the request's id, under
//! `remaining >= :amount AND attribute_not_exists(pending.<id>)`, so there is no read-then-write race, nothing
//! to retry under contention, and a retry of an attempt that applied (the SDK's, after a lost answer) finds
//! its own entry instead of taking a second number. Then one `TransactWriteItems` writes the certificate (only
//! if absent) and the request record and removes the pending entry. If the process dies in between, the entry
//! stays, and whoever sees it next (a later issue of the class, a read of the missing number, a listing, a
//! retry with the same key) finishes it with that same idempotent transaction: a number is never lost and
//! never used twice.
//!
//! Only the request that made an entry removes it at once. Anyone else who writes its certificate marks it
//! done and leaves it for [`GRACE`], longer than any request's deadline, so that the owner's retries still
//! find their entry; after that anyone may remove it. At most [`MAX_PENDING`] entries are kept, so the class
//! item stays small however long finishing keeps failing: past that, issues of the class answer `503` (with
//! nothing written) until the entries are finished.
//!
//! Once the number is allocated the certificate is issued: if writing its item then fails, the issue still
//! answers `201` (the entry holds everything, and the next reader or issue of the class writes it). A failure
//! before that point may or may not have allocated (DynamoDB's answer can be lost after the write): the issue
//! looks for its entry, and otherwise answers `503`, "outcome unknown" — with an `Idempotency-Key`, a retry
//! returns the certificate if there is one and issues it otherwise.
//!
//! One class item takes about 1,000 writes per second on DynamoDB, so one class tops out near 1,000 issues/s.

use crate::attr::{TTL, n, now_ms, s};
use crate::error::{is_condition_failed, store_error};
use crate::send::WithinDeadline;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};
use strata_core::Error;
use strata_core::certificates::{
    Certificate, CertificateId, ClassCode, IssueRequest, Ledger, ShareClass, below_issued,
    class_not_found, insufficient, replay_of,
};
use strata_core::retention::{holds_until, is_expired, ttl_seconds};

type Item = HashMap<String, AttributeValue>;

pub(crate) const PK: &str = "pk";
pub(crate) const N: &str = "n";
pub(crate) const AUTHORIZED: &str = "auth";
pub(crate) const ISSUED: &str = "issued";
pub(crate) const REMAINING: &str = "remaining";
pub(crate) const NEXT: &str = "next";
pub(crate) const PENDING: &str = "pending";
/// The numbers of the pending entries (request id → number), apart from `pending` because DynamoDB cannot
/// put the old `next` inside a map value it writes in the same update.
pub(crate) const PENDING_NUMBERS: &str = "pnum";
pub(crate) const NAME: &str = "name";
pub(crate) const AMOUNT: &str = "amount";
pub(crate) const AT: &str = "at";
pub(crate) const CLASS: &str = "class";

/// A pending entry this old most likely belongs to a request that died: issues of its class write its
/// certificate (readers do so at once, as they need it).
const ABANDONED: Duration = Duration::from_secs(2);
/// After this no attempt of the request that made a pending entry can still arrive (every request's deadline
/// is shorter, see `strata_core::deadline`), so anyone may remove the entry.
pub const GRACE: Duration = Duration::from_secs(30);
/// Most pending entries in one class item (each up to about 1.1 KB), far above the requests in flight.
pub const MAX_PENDING: usize = 64;
const ATTEMPTS: usize = 5;
/// Marks a pending entry whose certificate someone other than its request wrote.
const DONE: &str = "done";

/// Who finishes a pending entry: its own request removes it; anyone else marks it done until [`GRACE`].
#[derive(Clone, Copy, PartialEq)]
enum Finisher {
    Owner,
    Other,
}

pub struct DynamoLedger {
    client: Client,
    table: String,
    defaults: Vec<(ClassCode, u64)>,
    /// How long an issue under an idempotency key is remembered.
    retention: Duration,
    /// Fault injection for tests: when set, the next issue stops right after allocating its number, as if
    /// the Lambda died there.
    fail_after_allocation: AtomicBool,
}

fn num(item: &Item, name: &str) -> Result<u64, Error> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Error::internal(format!(
                "ledger item attribute {name} is missing or not a number"
            ))
        })
}

fn text(item: &Item, name: &str) -> Result<String, Error> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .ok_or_else(|| {
            Error::internal(format!(
                "ledger item attribute {name} is missing or not a string"
            ))
        })
}

fn key(pk: String, number: u64) -> Item {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk)),
        (N.to_owned(), n(number)),
    ])
}

fn class_key(class: &ClassCode) -> Item {
    key(format!("class#{}", class.as_str()), 0)
}

fn certificate_key(class: &ClassCode, number: u64) -> Item {
    key(format!("cert#{}", class.as_str()), number)
}

fn request_key(request_id: &str) -> Item {
    key(format!("req#{request_id}"), 0)
}

fn decode_class(class: &ClassCode, item: &Item) -> Result<ShareClass, Error> {
    Ok(ShareClass {
        class: class.clone(),
        authorized: num(item, AUTHORIZED)?,
        issued: num(item, ISSUED)?,
        next_number: num(item, NEXT)?,
    })
}

fn decode_certificate(class: &ClassCode, item: &Item) -> Result<Certificate, Error> {
    Ok(Certificate {
        class: class.clone(),
        number: num(item, N)?,
        name: text(item, NAME)?,
        amount: num(item, AMOUNT)?,
        issued_at: UNIX_EPOCH + Duration::from_millis(num(item, AT)?),
    })
}

/// The pending entry `request_id` of a class item, as a certificate.
pub(crate) fn decode_pending(
    class: &ClassCode,
    item: &Item,
    request_id: &str,
) -> Result<Option<Pending>, Error> {
    let map = |name: &str| item.get(name).and_then(|v| v.as_m().ok());
    let (Some(entry), Some(number)) = (
        map(PENDING)
            .and_then(|p| p.get(request_id))
            .and_then(|e| e.as_m().ok()),
        map(PENDING_NUMBERS)
            .and_then(|p| p.get(request_id))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok()),
    ) else {
        return Ok(None);
    };
    let certificate = Certificate {
        class: class.clone(),
        number,
        name: text(entry, NAME)?,
        amount: num(entry, AMOUNT)?,
        issued_at: UNIX_EPOCH + Duration::from_millis(num(entry, AT)?),
    };
    let flag = |name: &str| {
        entry
            .get(name)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false)
    };
    Ok(Some(Pending {
        certificate,
        indexed: flag("idx"),
        done: flag(DONE),
    }))
}

/// A pending entry of a class item.
pub(crate) struct Pending {
    pub(crate) certificate: Certificate,
    /// Made by a request with an idempotency key: its certificate comes with a request record.
    indexed: bool,
    /// Its certificate is written; only the entry is left.
    done: bool,
}

impl Pending {
    fn at_ms(&self) -> u64 {
        millis(self.certificate.issued_at)
    }
}

fn millis(at: std::time::SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
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
            fail_after_allocation: AtomicBool::new(false),
        }
    }

    /// Test hook: makes the next issue fail right after it allocated its number.
    #[doc(hidden)]
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
            .item(PENDING, AttributeValue::M(HashMap::new()))
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

    /// Writes a pending certificate (if not written yet) and its request record, and removes the entry or
    /// marks it done (see [`Finisher`]). Safe to run any number of times, by anyone.
    async fn finish(&self, pending: &Pending, request_id: &str, by: Finisher) -> Result<(), Error> {
        let certificate = &pending.certificate;
        let remove =
            by == Finisher::Owner || pending.at_ms() + (GRACE.as_millis() as u64) < now_ms();
        let mut item = certificate_key(&certificate.class, certificate.number);
        item.insert(NAME.into(), s(&certificate.name));
        item.insert(AMOUNT.into(), n(certificate.amount));
        item.insert(AT.into(), n(pending.at_ms()));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .expect("put is complete");
        let mut actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder()
                .update(self.clear(&certificate.class, request_id, remove))
                .build(),
        ];
        if pending.indexed {
            let mut record = request_key(request_id);
            record.insert(CLASS.into(), s(certificate.class.as_str()));
            record.insert("number".into(), n(certificate.number));
            record.insert(
                TTL.into(),
                n(ttl_seconds(holds_until(
                    certificate.issued_at,
                    self.retention,
                ))),
            );
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(record))
                .build()
                .expect("put is complete");
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        // The SDK gives the call one ClientRequestToken for all its attempts: a retry after a lost answer
        // is a no-op.
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .within_deadline()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_transaction_canceled_exception()) =>
            {
                // Someone else wrote the certificate (with its record), or is writing it right now, or
                // removed the entry after writing it.
                let item = self
                    .get(certificate_key(&certificate.class, certificate.number))
                    .await?;
                if item.is_none() {
                    return Err(Error::unavailable(
                        "a concurrent request is finishing this certificate; retry",
                    ));
                }
                if remove {
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(class_key(&certificate.class)))
                        .update_expression("REMOVE #pending.#rid, #pnum.#rid")
                        .expression_attribute_names("#pending", PENDING)
                        .expression_attribute_names("#pnum", PENDING_NUMBERS)
                        .expression_attribute_names("#rid", request_id)
                        .send()
                        .within_deadline()
                        .await
                        .map_err(|e| store_error("UpdateItem", e))?;
                }
                Ok(())
            }
            Err(e) => Err(store_error("TransactWriteItems", e)),
        }
    }

    /// The class item's side of finishing: remove the entry, or mark it done (only if it is still there).
    fn clear(&self, class: &ClassCode, request_id: &str, remove: bool) -> Update {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(class_key(class)))
            .expression_attribute_names("#pending", PENDING)
            .expression_attribute_names("#rid", request_id);
        let update = if remove {
            update
                .update_expression("REMOVE #pending.#rid, #pnum.#rid")
                .expression_attribute_names("#pnum", PENDING_NUMBERS)
        } else {
            update
                .update_expression("SET #pending.#rid.#done = :done")
                .condition_expression("attribute_exists(#pending.#rid)")
                .expression_attribute_names("#done", DONE)
                .expression_attribute_values(":done", AttributeValue::Bool(true))
        };
        update.build().expect("update is complete")
    }

    /// Finishes the pending entries of a class item older than `older_than` (all when zero) that are not
    /// done yet, and removes done ones past [`GRACE`]. With `best_effort`, failures are logged, not returned
    /// (an issue that allocated its own number answers `201` whatever happens here).
    async fn finish_others(
        &self,
        class: &ClassCode,
        item: &Item,
        older_than: Duration,
        best_effort: bool,
    ) -> Result<(), Error> {
        let Some(AttributeValue::M(pending)) = item.get(PENDING) else {
            return Ok(());
        };
        let now = now_ms();
        for request_id in pending.keys() {
            let Some(entry) = decode_pending(class, item, request_id)? else {
                continue;
            };
            let age = now.saturating_sub(entry.at_ms());
            let due = if entry.done {
                age > GRACE.as_millis() as u64
            } else {
                older_than.is_zero() || age > older_than.as_millis() as u64
            };
            if !due {
                continue;
            }
            if !entry.done {
                tracing::info!(certificate = %entry.certificate.id(), "finishing a pending certificate of another request");
            }
            match self.finish(&entry, request_id, Finisher::Other).await {
                Ok(()) => {}
                Err(e) if best_effort => {
                    tracing::warn!(error = %e, "cannot finish a pending certificate; it stays pending")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The certificate an earlier issue with this idempotency key made, while its record holds; `422` if
    /// that issue asked for another certificate.
    async fn by_request(
        &self,
        request: &IssueRequest,
        request_id: &str,
    ) -> Result<Option<Certificate>, Error> {
        // Records are kept under the pending entry's id, the key with an `r` before it.
        let Some(record) = self.get(request_key(&format!("r{request_id}"))).await? else {
            return Ok(None);
        };
        let class = ClassCode::parse(&text(&record, CLASS)?)?;
        let id = CertificateId {
            class,
            number: num(&record, "number")?,
        };
        match self.get_certificate(&id).await? {
            Some(earlier) => {
                // Honoured for the retention plus the clock-skew margin, as every reader of records does.
                let expires_at =
                    strata_core::retention::holds_until(earlier.issued_at, self.retention);
                replay_of(request, earlier, expires_at, std::time::SystemTime::now())
            }
            None => Err(Error::internal(format!(
                "request record {request_id} points to a missing certificate"
            ))),
        }
    }

    /// Allocates a number for `request` under the pending entry `pending_id` (retried by the SDK: a retry of
    /// an attempt that applied finds the entry). `Ok(Err(item))`: refused, with the class item as it was.
    async fn allocate(
        &self,
        request: &IssueRequest,
        pending_id: &str,
        at: u64,
        indexed: bool,
    ) -> Result<Result<Item, Option<Item>>, SdkError<UpdateItemError, HttpResponse>> {
        let entry = AttributeValue::M(HashMap::from([
            (NAME.to_owned(), s(&request.name)),
            (AMOUNT.to_owned(), n(request.amount)),
            (AT.to_owned(), n(at)),
            ("idx".to_owned(), AttributeValue::Bool(indexed)),
        ]));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(class_key(&request.class)))
            .update_expression(
                "SET #next = #next + :one, #issued = #issued + :amount, #remaining = #remaining - :amount, \
                 #pending.#rid = :entry, #pnum.#rid = #next",
            )
            .condition_expression(
                "#remaining >= :amount AND attribute_not_exists(#pending.#rid) AND size(#pending) < :cap",
            )
            .expression_attribute_names("#next", NEXT)
            .expression_attribute_names("#issued", ISSUED)
            .expression_attribute_names("#remaining", REMAINING)
            .expression_attribute_names("#pending", PENDING)
            .expression_attribute_names("#pnum", PENDING_NUMBERS)
            .expression_attribute_names("#rid", pending_id)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":amount", n(request.amount))
            .expression_attribute_values(":entry", entry)
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
                 #pending = if_not_exists(#pending, :empty), #pnum = if_not_exists(#pnum, :empty)",
            )
            .condition_expression("attribute_not_exists(#pk) OR #issued <= :auth")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#auth", AUTHORIZED)
            .expression_attribute_names("#issued", ISSUED)
            .expression_attribute_names("#remaining", REMAINING)
            .expression_attribute_names("#next", NEXT)
            .expression_attribute_names("#pending", PENDING)
            .expression_attribute_names("#pnum", PENDING_NUMBERS)
            .expression_attribute_values(":auth", n(authorized))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send().within_deadline()
            .await;
        match result {
            Ok(out) => decode_class(class, &out.attributes.unwrap_or_default()),
            Err(e) if is_condition_failed(&e) => {
                let issued = old_item(&e)
                    .map(|item| num(&item, ISSUED))
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
        // Pending entries are keyed by request: the client's key, or a fresh id.
        let pending_id = match request_id {
            Some(id) => format!("r{id}"),
            None => format!("u{}", uuid_like()),
        };
        if let Some(id) = request_id {
            // An earlier attempt with this key is either still pending in the class item or finished with a
            // request record; finishing moves it from one to the other in one transaction, so reading them in
            // this order cannot miss it.
            if let Some(class) = self.get(class_key(&request.class)).await?
                && let Some(pending) = decode_pending(&request.class, &class, &pending_id)?
            {
                let until = holds_until(pending.certificate.issued_at, self.retention);
                if !is_expired(until, std::time::SystemTime::now()) {
                    return self.finish_own(request, pending, &pending_id).await;
                }
                // An issue under this key stayed pending past its retention (writing it kept failing): it
                // is issued, so write it and drop its entry; this request is a new one under a free key.
                self.finish(&pending, &pending_id, Finisher::Owner).await?;
            }
            if let Some(certificate) = self.by_request(request, id).await? {
                return Ok(certificate);
            }
        }
        let at = now_ms();
        for _ in 0..ATTEMPTS {
            let item = match self
                .allocate(request, &pending_id, at, request_id.is_some())
                .await
            {
                Ok(Ok(item)) => item,
                Ok(Err(None)) => {
                    let authorized = self
                        .default_of(&request.class)
                        .ok_or_else(|| class_not_found(&request.class))?;
                    self.materialize_default(&request.class, authorized).await?;
                    continue;
                }
                Ok(Err(Some(item))) => {
                    if let Some(pending) = decode_pending(&request.class, &item, &pending_id)? {
                        // An earlier attempt of this very request allocated (its answer was lost).
                        return self.finish_own(request, pending, &pending_id).await;
                    }
                    if num(&item, REMAINING)? < request.amount {
                        return Err(insufficient(
                            &request.class,
                            num(&item, REMAINING)?,
                            request.amount,
                        ));
                    }
                    // The class has MAX_PENDING certificates pending: finish what can be finished, then retry.
                    tracing::warn!(
                        class = request.class.as_str(),
                        "too many pending certificates"
                    );
                    self.finish_others(&request.class, &item, Duration::ZERO, false)
                        .await?;
                    continue;
                }
                Err(e) => {
                    // The allocation may have applied with its answer lost: look for the entry.
                    let failure = store_error("UpdateItem", e);
                    let class = self
                        .get(class_key(&request.class))
                        .await
                        .map_err(|_| unknown())?;
                    return match class
                        .as_ref()
                        .map(|c| decode_pending(&request.class, c, &pending_id))
                        .transpose()?
                        .flatten()
                    {
                        Some(pending) => self.finish_own(request, pending, &pending_id).await,
                        None if failure.kind == strata_core::Kind::Internal => Err(failure),
                        None => Err(unknown()),
                    };
                }
            };
            let number = num(&item, NEXT)? - 1;
            let pending = Pending {
                certificate: Certificate {
                    class: request.class.clone(),
                    number,
                    name: request.name.clone(),
                    amount: request.amount,
                    issued_at: UNIX_EPOCH + Duration::from_millis(at),
                },
                indexed: request_id.is_some(),
                done: false,
            };
            if self.fail_after_allocation.swap(false, Ordering::SeqCst) {
                return Err(Error::internal(
                    "injected failure after allocating a certificate number",
                ));
            }
            let certificate = self.finish_own(request, pending, &pending_id).await?;
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
        if id.number >= num(&class, NEXT)? {
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
        let next = num(&class_item, NEXT)?;
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
}

impl DynamoLedger {
    /// Finishes this request's own entry; once the number is allocated the certificate is issued, so a
    /// failure to write its item now is logged and left to the next reader or issue (see the module docs).
    async fn finish_own(
        &self,
        request: &IssueRequest,
        pending: Pending,
        pending_id: &str,
    ) -> Result<Certificate, Error> {
        if pending.certificate.name != request.name || pending.certificate.amount != request.amount
        {
            return Err(strata_core::idempotency::mismatch());
        }
        if let Err(e) = self.finish(&pending, pending_id, Finisher::Owner).await {
            tracing::warn!(certificate = %pending.certificate.id(), error = %e, "certificate allocated but not written yet; it stays pending");
        }
        Ok(pending.certificate)
    }

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
