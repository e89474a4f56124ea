//! Export and import on DynamoDB ([`strata_core::transfer::Transfer`]).
//!
//! DynamoDB has no snapshot across items. What an export guarantees: every item is read with a strongly
//! consistent `Scan` or `Query` (each item as of some moment after the export began); a class and its
//! certificates are consistent with each other, because each class item is read first and then exactly its
//! numbers below the `next` it read (a certificate whose item is not written yet comes from the class
//! item's pending entries, as any reader of the ledger finishes it); counter log entries not folded yet are
//! folded into the totals read (exact when no fold loop runs meanwhile: in strong mode, or with the server
//! stopped). Across items of different classes, widgets or keys there is no common moment, so the
//! exporter checks the invariants ([`strata_core::transfer::check`]) before it writes a file.
//!
//! Scans come in hash order, not the canonical one: key/value records (values up to 256 KiB) are scanned
//! for their keys, which are sorted, and read back in key order a batch at a time, so an export never
//! holds every value; the other records are small and are gathered and sorted in memory.
//!
//! An import writes each record with a `PutItem` conditioned on the item being absent; when it is there,
//! one consistent read decides: the same record (an import resumed after a crash) is accepted, anything else
//! is `409 import_conflict`. Records are written a bounded number at a time, in parallel.

use crate::attr::{Item, ItemExt, n, s};
use crate::config::Tables;
use crate::error::{is_condition_failed, store_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use strata_core::Error;
use strata_core::certificates::ClassCode;
use strata_core::counters::{MAX_TOTAL, fold};
use strata_core::retention::{CLOCK_SKEW_MARGIN, ttl_seconds};
use strata_core::time::now_millis;
use strata_core::transfer::{
    Imported, PAGE_BYTES, PAGE_RECORDS, Record, Service, Sink, Transfer, canonical, counts, differs,
};
use strata_core::widgets::Port;

/// Conditional puts in flight at once.
const PARALLEL: usize = 32;
/// Items per page of an export's scans.
const PAGE: i32 = 1_000;
/// Keys per `BatchGetItem`: DynamoDB's most.
const BATCH_KEYS: usize = 100;
/// Attempts per page when the store is unavailable or throttles.
const PAGE_ATTEMPTS: u32 = 5;
/// What errors call an exported item's attribute that is missing or malformed.
const ATTR: &str = "attribute";

#[derive(Debug)]
pub struct DynamoTransfer {
    client: Client,
    tables: Tables,
    /// The retention the deployment runs with: an eventual-mode increment still in the log has its
    /// request's marker written only when folded, a retention from then.
    retention: Duration,
}

impl DynamoTransfer {
    pub fn new(client: Client, tables: Tables, retention: Duration) -> Self {
        Self {
            client,
            tables,
            retention,
        }
    }

    /// Every item of `table` (consistent reads), `limit` items at most when given. In pages of at most
    /// [`PAGE`] items, each retried by [`paged`].
    async fn scan(&self, table: &str, limit: Option<i32>) -> Result<Vec<Item>, Error> {
        self.scan_projected(table, limit, None).await
    }

    /// [`Self::scan`], each item cut to the attribute `projection` names (`None`: all).
    async fn scan_projected(
        &self,
        table: &str,
        limit: Option<i32>,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, Error> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = paged("Scan", || {
                self.client
                    .scan()
                    .table_name(table)
                    .consistent_read(true)
                    .limit(limit.unwrap_or(PAGE))
                    .set_exclusive_start_key(start.clone())
                    .set_projection_expression(projection.map(|_| "#p".to_owned()))
                    .set_expression_attribute_names(
                        projection.map(|name| HashMap::from([("#p".to_owned(), name.to_owned())])),
                    )
                    .send()
            })
            .await?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() || limit.is_some() {
                return Ok(out);
            }
        }
    }

    /// Every key of the key/value table, sorted. Only the keys: an export holds every key, never every
    /// value (DynamoDB bills the scan by the items' whole size all the same).
    async fn kv_keys(&self) -> Result<Vec<String>, Error> {
        let items = self
            .scan_projected(&self.tables.kv, None, Some(crate::kv::PK))
            .await?;
        let mut keys = items
            .iter()
            .map(|item| item.attrs(ATTR).text(crate::kv::PK).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort();
        Ok(keys)
    }

    /// The key/value records of `keys` (sorted), read back [`BATCH_KEYS`] at a time with consistent reads,
    /// handed to `sink` in pages as they come: what is held at once is one batch and one page.
    async fn kv_pages(&self, keys: &[String], sink: &mut dyn Sink) -> Result<(), Error> {
        let mut page = Vec::new();
        let mut bytes = 0;
        for batch in keys.chunks(BATCH_KEYS) {
            let mut items = self
                .batch_get(&self.tables.kv, crate::kv::PK, batch)
                .await?;
            for key in batch {
                // Deletes leave tombstones: a key once scanned is there when read back.
                let item = items.remove(key).ok_or_else(|| {
                    Error::internal(format!("the key {key} disappeared during the export"))
                })?;
                let record = Record::Kv {
                    key: key.clone(),
                    version: item.attrs(ATTR).num(crate::kv::VERSION)?,
                    value: item.text_opt(crate::kv::VALUE).map(str::to_owned),
                };
                bytes += record.weight();
                page.push(record);
                if page.len() >= PAGE_RECORDS || bytes >= PAGE_BYTES {
                    sink.page(std::mem::take(&mut page)).await?;
                    bytes = 0;
                }
            }
        }
        if !page.is_empty() {
            sink.page(page).await?;
        }
        Ok(())
    }

    /// The items of `keys` (the table's partition key `key_name`), by key, with consistent reads; keys
    /// DynamoDB leaves unprocessed (a batch over its 16 MB answer, or throttling) are asked again.
    async fn batch_get(
        &self,
        table: &str,
        key_name: &str,
        keys: &[String],
    ) -> Result<HashMap<String, Item>, Error> {
        let mut out = HashMap::with_capacity(keys.len());
        let mut pending: Vec<Item> = keys
            .iter()
            .map(|k| HashMap::from([(key_name.to_owned(), s(k))]))
            .collect();
        let mut unprocessed = 0;
        while !pending.is_empty() {
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .expect("keys are set");
            let answer = paged("BatchGetItem", || {
                self.client
                    .batch_get_item()
                    .request_items(table, request.clone())
                    .send()
            })
            .await?;
            for item in answer
                .responses
                .and_then(|mut r| r.remove(table))
                .unwrap_or_default()
            {
                out.insert(item.attrs(ATTR).text(key_name)?.to_owned(), item);
            }
            pending = answer
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if !pending.is_empty() {
                // Throttled or over one answer's size: the rest after a pause, as DynamoDB asks.
                unprocessed += 1;
                tokio::time::sleep(Duration::from_millis(50 * unprocessed.min(20))).await;
            }
        }
        Ok(out)
    }

    /// Every record of `services` but the key/value ones (and the idempotency answers), sorted.
    async fn small_records(&self, services: &[Service]) -> Result<Vec<Record>, Error> {
        use crate::ledger as l;
        let now = now_millis();
        let mut out = Vec::new();
        if services.contains(&Service::Certificates) {
            for item in self.scan(&self.tables.ledger, None).await? {
                let attrs = item.attrs(ATTR);
                let pk = attrs.text(l::PK)?;
                if let Some(code) = pk.strip_prefix("class#") {
                    let class = ClassCode::parse(code)?;
                    let next = attrs.num(l::NEXT)?;
                    out.push(Record::Class {
                        class: code.to_owned(),
                        authorized: attrs.num(l::AUTHORIZED)?,
                        issued: attrs.num(l::ISSUED)?,
                        next_number: next,
                    });
                    let mut found = std::collections::HashSet::new();
                    for cert in self.certificates(code, next - 1).await? {
                        let cert = cert.attrs(ATTR);
                        let number = cert.num(l::N)?;
                        found.insert(number);
                        out.push(Record::Certificate {
                            class: code.to_owned(),
                            number,
                            name: cert.text(l::NAME)?.to_owned(),
                            amount: cert.num(l::AMOUNT)?,
                            issued_at_ms: cert.num(l::AT)?,
                        });
                    }
                    // Allocated, item not written yet: the class item read above holds its number, its
                    // intent the rest.
                    let ledger = l::DynamoLedger::new(
                        self.client.clone(),
                        self.tables.ledger.clone(),
                        Vec::new(),
                        self.retention,
                    );
                    for c in ledger.pending_certificates(&class, &item).await? {
                        {
                            if c.number < next && found.insert(c.number) {
                                out.push(Record::Certificate {
                                    class: code.to_owned(),
                                    number: c.number,
                                    name: c.name,
                                    amount: c.amount,
                                    issued_at_ms: strata_core::time::epoch_millis(c.issued_at),
                                });
                            }
                        }
                    }
                } else if pk.starts_with("req#") {
                    // A keyed issue's intent: the record of its key once it has its number. Without one,
                    // its certificate is pending (exported above), or the key's idempotency answer,
                    // exported too, holds it.
                    let intent = l::Intent::decode(&item)?;
                    if let (Some(id), Some(number)) = (intent.id.strip_prefix('r'), intent.number)
                        && intent.until_ms > now
                    {
                        out.push(Record::CertificateRequest {
                            id: id.to_owned(),
                            class: intent.class.as_str().to_owned(),
                            number,
                            until_ms: intent.until_ms,
                        });
                    }
                }
            }
        }
        if services.contains(&Service::Widgets) {
            for item in self.scan(&self.tables.widgets, None).await? {
                out.push(Record::from(crate::widgets::decode(&item)?));
            }
        }
        if services.contains(&Service::Counters) {
            let mut counters: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for item in self.scan(&self.tables.counters, None).await? {
                counters.insert(
                    item.attrs(ATTR).text(crate::counters::KEY)?.to_owned(),
                    (
                        item.attrs(ATTR).num(crate::counters::TOTAL)?,
                        item.num_opt(crate::counters::REFUSED).unwrap_or(0),
                    ),
                );
            }
            let mut entries = Vec::new();
            // Markers in their table, and any the log still holds from before they moved there (or from
            // strong mode): `done#…` with a `ttl`; the log's other items are entries. A request marked in
            // both places is one record, until the later of the two.
            let mut markers: BTreeMap<String, u64> = BTreeMap::new();
            let mut items = self.scan(&self.tables.counter_markers, None).await?;
            items.extend(self.scan(&self.tables.counter_log, None).await?);
            for item in items {
                let id = item.attrs(ATTR).text(crate::counters::ID)?;
                let marker = item.contains_key(crate::TTL);
                if let Some(request) = id.strip_prefix("done#")
                    && marker
                {
                    let until_ms = item.attrs(ATTR).num(crate::TTL)?.saturating_mul(1000);
                    if until_ms > now {
                        let until = markers.entry(request.to_owned()).or_default();
                        *until = (*until).max(until_ms);
                    }
                } else if crate::aggregator::Entry::is_entry(id, marker) {
                    let entry: crate::aggregator::Entry = serde_dynamo::from_item(item)
                        .map_err(|e| Error::internal(format!("a counter log entry: {e}")))?;
                    entries.push(entry);
                }
            }
            // In the order the fold loop folds them; each keyed one leaves its request's marker, and one
            // whose request is marked already counts nothing (as the fold consumes it).
            entries.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            let until = std::time::SystemTime::now() + self.retention + CLOCK_SKEW_MARGIN;
            for entry in entries {
                if let Some(request) = entry.request() {
                    if markers.contains_key(request) {
                        continue;
                    }
                    markers.insert(request.to_owned(), ttl_seconds(until) * 1000);
                }
                let counter = counters.entry(entry.key.clone()).or_default();
                let folded = fold(counter.0, &[entry.value]);
                counter.0 = folded.total;
                counter.1 += folded.refused();
            }
            for (id, until_ms) in markers {
                out.push(Record::CounterRequest { id, until_ms });
            }
            for (key, (total, refused)) in counters {
                out.push(Record::Counter {
                    key,
                    total,
                    refused,
                });
            }
        }
        for item in self.scan(&self.tables.idempotency, None).await? {
            use crate::idempotency as i;
            if item.text_opt(i::STATE) != Some(i::COMPLETED) {
                continue;
            }
            let attrs = item.attrs(ATTR);
            let until_ms = attrs.num(i::UNTIL)?;
            if until_ms <= now {
                continue;
            }
            out.push(Record::Idempotency {
                key: attrs.text(i::ID)?.to_owned(),
                fingerprint: attrs.text(i::FINGERPRINT)?.to_owned(),
                status: u16::try_from(attrs.num(i::STATUS)?)
                    .map_err(|_| Error::internal("an idempotency status out of range"))?,
                content_type: item.text_opt(i::CONTENT_TYPE).map(str::to_owned),
                body: attrs.text(i::BODY)?.to_owned(),
                until_ms,
            });
        }
        canonical(&mut out);
        Ok(out)
    }

    /// Certificates of `class` numbered 1 to `last`.
    async fn certificates(&self, class: &str, last: u64) -> Result<Vec<Item>, Error> {
        let mut out = Vec::new();
        if last == 0 {
            return Ok(out);
        }
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.ledger)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk AND #n BETWEEN :first AND :last")
                .expression_attribute_names("#pk", crate::ledger::PK)
                .expression_attribute_names("#n", crate::ledger::N)
                .expression_attribute_values(":pk", s(&format!("cert#{class}")))
                .expression_attribute_values(":first", n(1))
                .expression_attribute_values(":last", n(last))
                .limit(PAGE)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| store_error("Query", e))?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// The table and the item a record is stored as, and the attribute names of its key.
    fn item(&self, record: &Record) -> (String, Item, &'static [&'static str]) {
        use crate::ledger as l;
        const LEDGER_KEY: &[&str] = &[l::PK, l::N];
        match record {
            Record::Kv {
                key,
                version,
                value,
            } => {
                let mut item = Item::from([
                    (crate::kv::PK.into(), s(key)),
                    (crate::kv::VERSION.into(), n(*version)),
                ]);
                if let Some(value) = value {
                    item.insert(crate::kv::VALUE.into(), s(value));
                }
                (self.tables.kv.clone(), item, &[crate::kv::PK])
            }
            Record::Class {
                class,
                authorized,
                issued,
                next_number,
            } => (
                self.tables.ledger.clone(),
                Item::from([
                    (l::PK.into(), s(&format!("class#{class}"))),
                    (l::N.into(), n(0)),
                    (l::AUTHORIZED.into(), n(*authorized)),
                    (l::ISSUED.into(), n(*issued)),
                    (l::REMAINING.into(), n(authorized - issued)),
                    (l::NEXT.into(), n(*next_number)),
                    (l::PENDING_NUMBERS.into(), AttributeValue::M(HashMap::new())),
                ]),
                LEDGER_KEY,
            ),
            Record::Certificate {
                class,
                number,
                name,
                amount,
                issued_at_ms,
            } => (
                self.tables.ledger.clone(),
                Item::from([
                    (l::PK.into(), s(&format!("cert#{class}"))),
                    (l::N.into(), n(*number)),
                    (l::NAME.into(), s(name)),
                    (l::AMOUNT.into(), n(*amount)),
                    (l::AT.into(), n(*issued_at_ms)),
                ]),
                LEDGER_KEY,
            ),
            Record::CertificateRequest {
                id,
                class,
                number,
                until_ms,
            } => (
                self.tables.ledger.clone(),
                // The ledger's intent of a keyed issue, finished: its id is the key with an `r` before it.
                // Its time is the one its retention runs from.
                l::intent_item(
                    &format!("r{id}"),
                    class,
                    None,
                    until_ms
                        .saturating_sub((self.retention + CLOCK_SKEW_MARGIN).as_millis() as u64),
                    *until_ms,
                    Some(*number),
                ),
                LEDGER_KEY,
            ),
            Record::Widget {
                serial,
                name,
                ports,
                associations,
            } => {
                use crate::widgets as w;
                let mut item = Item::from([
                    (w::SERIAL.into(), s(serial)),
                    (w::NAME.into(), s(name)),
                    (w::PORTS.into(), s(ports)),
                    (w::VERSION.into(), n(1)),
                    (w::CREATED_BY.into(), s("import")),
                ]);
                for port in Port::ALL {
                    let capacity = ports.matches(port.as_str()).count() as u64;
                    item.insert(w::capacity_attr(port), n(capacity));
                    let peers: Vec<String> = associations
                        .iter()
                        .filter(|(p, _)| p == port.as_str())
                        .map(|(_, peer)| peer.clone())
                        .collect();
                    // DynamoDB has no empty sets: no peers is no attribute.
                    if !peers.is_empty() {
                        item.insert(w::peers_attr(port), AttributeValue::Ss(peers));
                    }
                }
                (self.tables.widgets.clone(), item, &[w::SERIAL])
            }
            Record::Counter {
                key,
                total,
                refused,
            } => (
                self.tables.counters.clone(),
                Item::from([
                    (crate::counters::KEY.into(), s(key)),
                    (crate::counters::TOTAL.into(), n(*total)),
                    (crate::counters::ROOM.into(), n(MAX_TOTAL - total)),
                    (crate::counters::REFUSED.into(), n(*refused)),
                ]),
                &[crate::counters::KEY],
            ),
            // Into the log table, where both modes honour a marker: strong mode reads markers only there,
            // and eventual mode's entry for the request would take the marker's id (see
            // `crate::counters`). It expires from there as any marker left from before they moved.
            Record::CounterRequest { id, until_ms } => (
                self.tables.counter_log.clone(),
                Item::from([
                    (
                        crate::counters::ID.into(),
                        s(&crate::counters::marker_id(id)),
                    ),
                    (crate::TTL.into(), n(until_ms.div_ceil(1000))),
                ]),
                &[crate::counters::ID],
            ),
            Record::Idempotency {
                key,
                fingerprint,
                status,
                content_type,
                body,
                until_ms,
            } => {
                use crate::idempotency as i;
                let mut item = Item::from([
                    (i::ID.into(), s(key)),
                    (i::STATE.into(), s(i::COMPLETED)),
                    (i::FINGERPRINT.into(), s(fingerprint)),
                    (i::UNTIL.into(), n(*until_ms)),
                    (crate::TTL.into(), n(until_ms.div_ceil(1000))),
                    (i::STATUS.into(), n(u64::from(*status))),
                    (i::BODY.into(), s(body)),
                ]);
                if let Some(ct) = content_type {
                    item.insert(i::CONTENT_TYPE.into(), s(ct));
                }
                (self.tables.idempotency.clone(), item, &[i::ID])
            }
        }
    }

    /// Puts one record unless its item is there; an item that is there must be the same record.
    async fn put(self: Arc<Self>, record: Record) -> Result<bool, Error> {
        let (table, item, key_names) = self.item(&record);
        let key: Item = key_names
            .iter()
            .map(|name| ((*name).to_owned(), item[*name].clone()))
            .collect();
        let result = self
            .client
            .put_item()
            .table_name(&table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", key_names[0])
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => {
                let existing = self
                    .client
                    .get_item()
                    .table_name(&table)
                    .set_key(Some(key))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| store_error("GetItem", e))?
                    .item
                    .unwrap_or_default();
                let same = item.iter().all(|(name, value)| {
                    // Sets come back in any order; widgets' write bookkeeping is not data.
                    name == crate::widgets::CREATED_BY
                        || match (value, existing.get(name)) {
                            (AttributeValue::Ss(a), Some(AttributeValue::Ss(b))) => {
                                let (mut a, mut b) = (a.clone(), b.clone());
                                a.sort();
                                b.sort();
                                a == b
                            }
                            (a, b) => Some(a) == b,
                        }
                });
                if same {
                    Ok(false)
                } else {
                    Err(differs(&record))
                }
            }
            Err(e) => Err(store_error("PutItem", e)),
        }
    }
}

/// One page's call, sent again a few times while DynamoDB is unavailable or throttles: a full 1 MB page of
/// consistent reads can take DynamoDB Local longer than one call's timeout.
async fn paged<T, E, Fut>(operation: &str, mut call: impl FnMut() -> Fut) -> Result<T, Error>
where
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(out) => return Ok(out),
            Err(e) => {
                let e = store_error(operation, e);
                if attempt >= PAGE_ATTEMPTS || e.retry_after.is_none() {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
    }
}

#[async_trait]
impl Transfer for DynamoTransfer {
    fn consistency(&self) -> &'static str {
        "DynamoDB: every item read strongly consistent; each share class consistent with its certificates; no common moment across other items, checked by the invariants"
    }

    /// DynamoDB's scans come in hash order, not the canonical one. Key/value records, which carry values
    /// of up to 256 KiB, are scanned for their keys only, sorted, and read back in key order a batch at a
    /// time (the values are read twice: once by the scan, which DynamoDB bills by the whole item, once by
    /// the batch); the other records, small, are gathered and sorted in memory. Key/value records come
    /// first in the canonical order, so they are handed out as they are read.
    async fn export_to(&self, services: &[Service], sink: &mut dyn Sink) -> Result<(), Error> {
        let others = self.small_records(services).await?;
        let keys = if services.contains(&Service::Kv) {
            self.kv_keys().await?
        } else {
            Vec::new()
        };
        let mut per_type = counts(&others);
        if !keys.is_empty() {
            per_type.insert("kv".to_owned(), keys.len() as u64);
        }
        sink.counts(per_type).await?;
        self.kv_pages(&keys, sink).await?;
        let mut others = others.into_iter().peekable();
        while others.peek().is_some() {
            sink.page(others.by_ref().take(PAGE_RECORDS).collect())
                .await?;
        }
        Ok(())
    }

    async fn holds_any(&self, services: &[Service]) -> Result<bool, Error> {
        for service in services {
            let tables: Vec<&String> = match service {
                Service::Kv => vec![&self.tables.kv],
                Service::Certificates => vec![&self.tables.ledger],
                Service::Widgets => vec![&self.tables.widgets],
                Service::Counters => vec![
                    &self.tables.counters,
                    &self.tables.counter_log,
                    &self.tables.counter_markers,
                ],
            };
            for table in tables {
                if !self.scan(table, Some(1)).await?.is_empty() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn import(&self, records: Vec<Record>) -> Result<Imported, Error> {
        let this = Arc::new(Self {
            client: self.client.clone(),
            tables: self.tables.clone(),
            retention: self.retention,
        });
        let mut done = Imported::default();
        let now = now_millis();
        let mut running = tokio::task::JoinSet::new();
        let mut first_error = None;
        for record in records {
            if record.until_ms().is_some_and(|until| until <= now) {
                done.expired += 1;
                continue;
            }
            while running.len() >= PARALLEL {
                collect(&mut running, &mut done, &mut first_error).await;
            }
            if first_error.is_some() {
                break;
            }
            running.spawn(this.clone().put(record));
        }
        while !running.is_empty() {
            collect(&mut running, &mut done, &mut first_error).await;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}

async fn collect(
    running: &mut tokio::task::JoinSet<Result<bool, Error>>,
    done: &mut Imported,
    first_error: &mut Option<Error>,
) {
    match running.join_next().await {
        Some(Ok(Ok(true))) => done.written += 1,
        Some(Ok(Ok(false))) => done.present += 1,
        Some(Ok(Err(e))) => {
            first_error.get_or_insert(e);
        }
        Some(Err(e)) => {
            first_error.get_or_insert(Error::internal(format!("an import task failed: {e}")));
        }
        None => {}
    }
}
