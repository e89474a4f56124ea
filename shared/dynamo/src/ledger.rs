//! The certificate ledger on DynamoDB.
//!
//! Items (table `LedgerTable`, key `pk` + numeric `n`):
//! - the share class, `pk = "class#CS", n = 0`: `auth`, `issued`, `remaining`, `next` and `pending`, a map of
//!   certificates whose number is allocated but whose item may not be written yet (request id → name, amount,
//!   time), with their numbers in `pnum` (request id → number);
//! - each certificate, `pk = "cert#CS", n = <number>` (so a `Query` lists a class in number order);
//! - for issues with an idempotency key, `pk = "req#<key>", n = 0` → the certificate's number and class.
//!
//! An issue is two calls. First one `UpdateItem` on the class item, the serialization point: it takes the next
//! number, adds the shares and records the pending certificate, under `remaining >= :amount`, so there is no
//! read-then-write race and nothing to retry under contention. Then one `TransactWriteItems` writes the
//! certificate (only if absent) and the request record and removes the pending entry. If the process dies in
//! between, the pending entry stays, and whoever sees it next (a later issue of the class, a read of the
//! missing number, a retry with the same key) finishes it with that same idempotent transaction: a number is
//! never lost and never used twice.
//!
//! One class item takes about 1,000 writes per second on DynamoDB, so one class tops out near 1,000 issues/s.

use crate::attr::{n, now_ms, s};
use crate::error::{is_condition_failed, store_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
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
    class_not_found, insufficient,
};

type Item = HashMap<String, AttributeValue>;

const PK: &str = "pk";
const N: &str = "n";
const AUTHORIZED: &str = "auth";
const ISSUED: &str = "issued";
const REMAINING: &str = "remaining";
const NEXT: &str = "next";
const PENDING: &str = "pending";
/// The numbers of the pending entries (request id → number), apart from `pending` because DynamoDB cannot
/// put the old `next` inside a map value it writes in the same update.
const PENDING_NUMBERS: &str = "pnum";
const NAME: &str = "name";
const AMOUNT: &str = "amount";
const AT: &str = "at";
const CLASS: &str = "class";

/// A pending entry older than this is taken to belong to a request that died, and is finished by others.
const STALE_PENDING: Duration = Duration::from_secs(2);
const ATTEMPTS: usize = 5;

pub struct DynamoLedger {
    client: Client,
    table: String,
    defaults: Vec<(ClassCode, u64)>,
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
fn decode_pending(
    class: &ClassCode,
    item: &Item,
    request_id: &str,
) -> Result<Option<(Certificate, bool)>, Error> {
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
    let indexed = entry
        .get("idx")
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false);
    Ok(Some((certificate, indexed)))
}

impl DynamoLedger {
    pub fn new(client: Client, table: String, defaults: Vec<(ClassCode, u64)>) -> Self {
        Self {
            client,
            table,
            defaults,
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
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(store_error("PutItem", e)),
        }
    }

    /// Writes a pending certificate (if not written yet) and its request record, and clears the entry.
    /// Safe to run any number of times, by anyone.
    async fn finish(
        &self,
        certificate: &Certificate,
        request_id: &str,
        indexed: bool,
    ) -> Result<(), Error> {
        let mut item = certificate_key(&certificate.class, certificate.number);
        item.insert(NAME.into(), s(&certificate.name));
        item.insert(AMOUNT.into(), n(certificate.amount));
        item.insert(
            AT.into(),
            n(certificate
                .issued_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64),
        );
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .expect("put is complete");
        let clear = Update::builder()
            .table_name(&self.table)
            .set_key(Some(class_key(&certificate.class)))
            .update_expression("REMOVE #pending.#rid, #pnum.#rid")
            .expression_attribute_names("#pending", PENDING)
            .expression_attribute_names("#pnum", PENDING_NUMBERS)
            .expression_attribute_names("#rid", request_id)
            .build()
            .expect("update is complete");
        let mut actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(clear.clone()).build(),
        ];
        if indexed {
            let mut record = request_key(request_id);
            record.insert(CLASS.into(), s(certificate.class.as_str()));
            record.insert("number".into(), n(certificate.number));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(record))
                .build()
                .expect("put is complete");
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_transaction_canceled_exception()) =>
            {
                // Someone else wrote the certificate (or is writing it right now): make sure the entry is gone.
                // The request record, if any, was written by whoever wrote the certificate.
                let item = self
                    .get(certificate_key(&certificate.class, certificate.number))
                    .await?;
                if item.is_none() {
                    return Err(Error::unavailable(
                        "a concurrent request is finishing this certificate; retry",
                    ));
                }
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(clear.key))
                    .update_expression("REMOVE #pending.#rid, #pnum.#rid")
                    .expression_attribute_names("#pending", PENDING)
                    .expression_attribute_names("#pnum", PENDING_NUMBERS)
                    .expression_attribute_names("#rid", request_id)
                    .send()
                    .await
                    .map_err(|e| store_error("UpdateItem", e))?;
                Ok(())
            }
            Err(e) => Err(store_error("TransactWriteItems", e)),
        }
    }

    /// Finishes every pending entry of a class item that is older than `older_than` (all when zero).
    async fn finish_stale(
        &self,
        class: &ClassCode,
        item: &Item,
        older_than: Duration,
    ) -> Result<(), Error> {
        let Some(AttributeValue::M(pending)) = item.get(PENDING) else {
            return Ok(());
        };
        let cutoff = now_ms().saturating_sub(older_than.as_millis() as u64);
        for request_id in pending.keys() {
            let Some((certificate, indexed)) = decode_pending(class, item, request_id)? else {
                continue;
            };
            let at = certificate
                .issued_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64;
            if older_than.is_zero() || at < cutoff {
                tracing::info!(certificate = %certificate.id(), "finishing a pending certificate left by another request");
                self.finish(&certificate, request_id, indexed).await?;
            }
        }
        Ok(())
    }

    /// The certificate a request record points to.
    async fn by_request(&self, request_id: &str) -> Result<Option<Certificate>, Error> {
        let Some(record) = self.get(request_key(request_id)).await? else {
            return Ok(None);
        };
        let class = ClassCode::parse(&text(&record, CLASS)?)?;
        let id = CertificateId {
            class,
            number: num(&record, "number")?,
        };
        self.get_certificate(&id).await
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
            .send()
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
        if let Some(id) = request_id
            && let Some(certificate) = self.by_request(id).await?
        {
            return Ok(certificate);
        }
        // Pending entries are keyed by request: the client's key, or a fresh id.
        let pending_id = match request_id {
            Some(id) => format!("r{id}"),
            None => format!("u{}", uuid_like()),
        };
        let at = now_ms();
        for _ in 0..ATTEMPTS {
            let entry = AttributeValue::M(HashMap::from([
                (NAME.to_owned(), s(&request.name)),
                (AMOUNT.to_owned(), n(request.amount)),
                (AT.to_owned(), n(at)),
                ("idx".to_owned(), AttributeValue::Bool(request_id.is_some())),
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
                .condition_expression("#remaining >= :amount AND attribute_not_exists(#pending.#rid)")
                .expression_attribute_names("#next", NEXT)
                .expression_attribute_names("#issued", ISSUED)
                .expression_attribute_names("#remaining", REMAINING)
                .expression_attribute_names("#pending", PENDING)
                .expression_attribute_names("#pnum", PENDING_NUMBERS)
                .expression_attribute_names("#rid", &pending_id)
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":amount", n(request.amount))
                .expression_attribute_values(":entry", entry)
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match result {
                Ok(out) => {
                    let item = out.attributes.unwrap_or_default();
                    let certificate = Certificate {
                        class: request.class.clone(),
                        number: num(&item, NEXT)? - 1,
                        name: request.name.clone(),
                        amount: request.amount,
                        issued_at: UNIX_EPOCH + Duration::from_millis(at),
                    };
                    if self.fail_after_allocation.swap(false, Ordering::SeqCst) {
                        return Err(Error::internal(
                            "injected failure after allocating a certificate number",
                        ));
                    }
                    self.finish(&certificate, &pending_id, request_id.is_some())
                        .await?;
                    // Finish what dead requests left behind, so their numbers show up without waiting for a read.
                    self.finish_stale(&request.class, &item, STALE_PENDING)
                        .await?;
                    return Ok(certificate);
                }
                Err(e) if is_condition_failed(&e) => {
                    let Some(item) = old_item(&e) else {
                        let authorized = self
                            .default_of(&request.class)
                            .ok_or_else(|| class_not_found(&request.class))?;
                        self.materialize_default(&request.class, authorized).await?;
                        continue;
                    };
                    if let Some((certificate, indexed)) =
                        decode_pending(&request.class, &item, &pending_id)?
                    {
                        // This request allocated before (an earlier attempt died): finish that one.
                        self.finish(&certificate, &pending_id, indexed).await?;
                        return Ok(certificate);
                    }
                    return Err(insufficient(
                        &request.class,
                        num(&item, REMAINING)?,
                        request.amount,
                    ));
                }
                Err(e) => return Err(store_error("UpdateItem", e)),
            }
        }
        Err(Error::unavailable("the share class is busy; retry"))
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
        self.finish_stale(&id.class, &class, Duration::ZERO).await?;
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
                .limit(limit as i32)
                .send()
                .await
                .map_err(|e| store_error("Query", e))?;
            let certificates = out
                .items
                .unwrap_or_default()
                .iter()
                .map(|item| decode_certificate(class, item))
                .collect::<Result<Vec<_>, _>>()?;
            // Gapless means exactly the numbers after+1, after+2, … below `next`; anything else is pending.
            let complete = certificates.len() as u64 >= expected
                && certificates
                    .iter()
                    .enumerate()
                    .all(|(i, c)| c.number == after + 1 + i as u64);
            if complete || repaired {
                return Ok(certificates);
            }
            self.finish_stale(class, &class_item, Duration::ZERO)
                .await?;
        }
        unreachable!("the loop returns on its second pass")
    }
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
