//! Export and import on the embedded store ([`strata_core::transfer::Transfer`]).
//!
//! An export reads one fjall snapshot of every keyspace: it sees whole write batches only, so it is the
//! state after some acknowledged write and before the next, across every service at once, while the store
//! keeps serving. Counter log entries still waiting for the fold loop are folded into their totals in the
//! export (with [`strata_core::counters::fold`], in log order), exactly as the fold loop will fold them.
//!
//! An import is one writer command per chunk of records: each record is written if its key is absent and
//! left alone if the same bytes are there already, so an import resumed after a crash writes only what is
//! missing; a key holding anything else fails the chunk (nothing of it is written).

use crate::store::fjall_error;
use crate::{Space, Store};
use async_trait::async_trait;
use fjall::Readable;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_core::Error;
use strata_core::certificates::{Certificate, ClassCode, ShareClass};
use strata_core::counters::fold;
use strata_core::idempotency::Stored;
use strata_core::transfer::{
    Imported, PAGE_BYTES, PAGE_RECORDS, Record, Service, Sink, Transfer, differs,
};
use strata_core::widgets::{Port, Widget};

/// Records per writer command on import.
const CHUNK: usize = 2_000;

#[derive(Debug)]
pub struct EmbeddedTransfer {
    store: Store,
}

impl EmbeddedTransfer {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn spaces(service: Service) -> &'static [Space] {
    match service {
        Service::Kv => &[Space::Kv],
        Service::Certificates => &[Space::Classes, Space::Certificates, Space::Requests],
        Service::Widgets => &[Space::Widgets],
        Service::Counters => &[Space::Counters, Space::CounterLog, Space::CounterRequests],
    }
}

fn text(bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::internal("a stored key is not UTF-8"))
}

fn ms(at: SystemTime) -> u64 {
    strata_core::time::epoch_millis(at)
}

/// Where a record lives and its stored bytes.
fn encode(record: &Record) -> Result<(Space, Vec<u8>, Vec<u8>), Error> {
    Ok(match record {
        Record::Kv {
            key,
            version,
            value,
        } => (
            Space::Kv,
            key.as_bytes().to_vec(),
            crate::kv::Record {
                version: *version,
                value: value.clone(),
            }
            .encode(),
        ),
        Record::Class {
            class,
            authorized,
            issued,
            next_number,
        } => (
            Space::Classes,
            class.as_bytes().to_vec(),
            crate::ledger::encode_class(&ShareClass {
                class: ClassCode::parse(class)?,
                authorized: *authorized,
                issued: *issued,
                next_number: *next_number,
            }),
        ),
        Record::Certificate {
            class,
            number,
            name,
            amount,
            issued_at_ms,
        } => {
            let class = ClassCode::parse(class)?;
            (
                Space::Certificates,
                crate::ledger::certificate_key(&class, *number),
                crate::ledger::encode_certificate(&Certificate {
                    class: class.clone(),
                    number: *number,
                    name: name.clone(),
                    amount: *amount,
                    issued_at: UNIX_EPOCH + Duration::from_millis(*issued_at_ms),
                }),
            )
        }
        Record::CertificateRequest {
            id,
            class,
            number,
            until_ms,
        } => (
            Space::Requests,
            id.as_bytes().to_vec(),
            crate::retention::encode_request(
                &crate::ledger::certificate_key(&ClassCode::parse(class)?, *number),
                *until_ms,
            ),
        ),
        Record::Widget {
            serial,
            name,
            ports,
            associations,
        } => {
            let port = |raw: &str| {
                Port::parse(raw).ok_or_else(|| Error::invalid_field("ports", "unknown port"))
            };
            let widget = Widget {
                serial: serial.clone(),
                name: name.clone(),
                ports: ports
                    .chars()
                    .map(|c| port(&c.to_string()))
                    .collect::<Result<_, _>>()?,
                associations: associations
                    .iter()
                    .map(|(p, peer)| Ok((port(p)?, peer.clone())))
                    .collect::<Result<_, Error>>()?,
            };
            (
                Space::Widgets,
                serial.as_bytes().to_vec(),
                crate::widgets::encode(&widget),
            )
        }
        Record::Counter {
            key,
            total,
            refused,
        } => (
            Space::Counters,
            key.as_bytes().to_vec(),
            crate::counters::Counter {
                total: *total,
                refused: *refused,
            }
            .encode(),
        ),
        Record::CounterRequest { id, until_ms } => (
            Space::CounterRequests,
            id.as_bytes().to_vec(),
            crate::retention::encode_marker(*until_ms),
        ),
        Record::Idempotency {
            key,
            fingerprint,
            status,
            content_type,
            body,
            until_ms,
        } => (
            Space::Idempotency,
            key.as_bytes().to_vec(),
            crate::idempotency::Record {
                expires_ms: *until_ms,
                fingerprint: fingerprint.clone(),
                stored: Stored {
                    status: *status,
                    body: body.clone(),
                    content_type: content_type.clone(),
                },
            }
            .encode(),
        ),
    })
}

/// Every record of `services` in one snapshot, in the canonical order, each handed to `emit` as it is
/// read (nothing is gathered: fjall iterates each keyspace in key order, which is the canonical order,
/// and counters, folded with their log, are the one map kept, one entry per counter).
fn walk(
    view: &crate::store::Handles,
    snapshot: &fjall::Snapshot,
    services: &[Service],
    now: u64,
    emit: &mut dyn FnMut(Record) -> Result<(), Error>,
) -> Result<(), Error> {
    let scan = |space: Space| {
        snapshot.iter(view.space(space)).map(|entry| {
            entry
                .into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(fjall_error)
        })
    };
    if services.contains(&Service::Kv) {
        for entry in scan(Space::Kv) {
            let (key, value) = entry?;
            let record = crate::kv::Record::decode(&value)?;
            emit(Record::Kv {
                key: text(&key)?,
                version: record.version,
                value: record.value,
            })?;
        }
    }
    if services.contains(&Service::Certificates) {
        for entry in scan(Space::Classes) {
            let (key, value) = entry?;
            let class = crate::ledger::decode_class(&ClassCode::parse(&text(&key)?)?, &value)?;
            emit(Record::Class {
                class: class.class.as_str().to_owned(),
                authorized: class.authorized,
                issued: class.issued,
                next_number: class.next_number,
            })?;
        }
        for entry in scan(Space::Certificates) {
            let (key, value) = entry?;
            let c = crate::ledger::decode_certificate(&key, &value)?;
            emit(Record::Certificate {
                class: c.class.as_str().to_owned(),
                number: c.number,
                name: c.name,
                amount: c.amount,
                issued_at_ms: ms(c.issued_at),
            })?;
        }
        for entry in scan(Space::Requests) {
            let (id, value) = entry?;
            let (certificate_key, expires) = crate::retention::decode_request(&value)?;
            let Some(stored) = snapshot
                .get(view.space(Space::Certificates), certificate_key)
                .map_err(fjall_error)?
            else {
                return Err(Error::internal(
                    "a ledger request record names a missing certificate",
                ));
            };
            let c = crate::ledger::decode_certificate(certificate_key, &stored)?;
            let until_ms = expires;
            if until_ms > now {
                emit(Record::CertificateRequest {
                    id: text(&id)?,
                    class: c.class.as_str().to_owned(),
                    number: c.number,
                    until_ms: strata_core::transfer::to_second(until_ms),
                })?;
            }
        }
    }
    if services.contains(&Service::Widgets) {
        for entry in scan(Space::Widgets) {
            let (serial, value) = entry?;
            let mut widget = crate::widgets::decode(&text(&serial)?, &value)?;
            widget.associations.sort();
            emit(Record::from(widget))?;
        }
    }
    if services.contains(&Service::Counters) {
        let mut counters: BTreeMap<Vec<u8>, crate::counters::Counter> = BTreeMap::new();
        for entry in scan(Space::Counters) {
            let (key, value) = entry?;
            if let Some(counter) = crate::counters::Counter::decode(Some(&value))? {
                counters.insert(key, counter);
            }
        }
        // The log in sequence order, which is the order the fold loop folds it in.
        for entry in scan(Space::CounterLog) {
            let (_, value) = entry?;
            let (value, key) = crate::counters::decode_log_entry(&value)?;
            let counter = counters.entry(key).or_default();
            let folded = fold(counter.total, &[value]);
            counter.total = folded.total;
            counter.refused += folded.refused();
        }
        for (key, counter) in counters {
            emit(Record::Counter {
                key: text(&key)?,
                total: counter.total,
                refused: counter.refused,
            })?;
        }
        for entry in scan(Space::CounterRequests) {
            let (id, marker) = entry?;
            let until_ms = crate::retention::decode_marker(&marker)?;
            if until_ms > now {
                emit(Record::CounterRequest {
                    id: text(&id)?,
                    until_ms: strata_core::transfer::to_second(until_ms),
                })?;
            }
        }
    }
    for entry in scan(Space::Idempotency) {
        let (key, value) = entry?;
        let record = crate::idempotency::Record::decode(&value)?;
        if record.expires_ms > now {
            emit(Record::Idempotency {
                key: text(&key)?,
                fingerprint: record.fingerprint,
                status: record.stored.status,
                content_type: record.stored.content_type,
                body: record.stored.body,
                until_ms: record.expires_ms,
            })?;
        }
    }
    Ok(())
}

/// What the reading thread hands the exporting task.
enum Part {
    Counts(BTreeMap<String, u64>),
    Page(Vec<Record>),
}

/// Pages the reading thread may have ready ahead of the sink: with [`PAGE_BYTES`] each, a slow reader
/// of the export holds a few MiB of it in memory, whatever the store's size.
const PAGES_AHEAD: usize = 2;

#[async_trait]
impl Transfer for EmbeddedTransfer {
    fn consistency(&self) -> &'static str {
        "one snapshot of the embedded store: every acknowledged write before it, none after it, across all services"
    }

    /// Two passes over one snapshot on a thread of its own (fjall reads block): the first counts the
    /// records (the header comes first), the second hands them out page by page, waiting while the sink
    /// is behind.
    async fn export_to(&self, services: &[Service], sink: &mut dyn Sink) -> Result<(), Error> {
        let (parts, mut ready) = tokio::sync::mpsc::channel::<Result<Part, Error>>(PAGES_AHEAD);
        let store = self.store.clone();
        let services = services.to_vec();
        let reader = tokio::task::spawn_blocking(move || {
            let read = || -> Result<(), Error> {
                let view = store.view()?;
                let snapshot = view.snapshot();
                let now = strata_core::time::now_millis();
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                walk(&view, &snapshot, &services, now, &mut |record| {
                    *counts.entry(record.kind().to_owned()).or_insert(0) += 1;
                    Ok(())
                })?;
                // The sink is gone (a client that hung up): stop reading.
                let gone = || Error::internal("the export's reader stopped");
                parts
                    .blocking_send(Ok(Part::Counts(counts)))
                    .map_err(|_| gone())?;
                let (mut page, mut bytes) = (Vec::new(), 0);
                walk(&view, &snapshot, &services, now, &mut |record| {
                    bytes += record.weight();
                    page.push(record);
                    if page.len() >= PAGE_RECORDS || bytes >= PAGE_BYTES {
                        bytes = 0;
                        parts
                            .blocking_send(Ok(Part::Page(std::mem::take(&mut page))))
                            .map_err(|_| gone())?;
                    }
                    Ok(())
                })?;
                if !page.is_empty() {
                    parts
                        .blocking_send(Ok(Part::Page(page)))
                        .map_err(|_| gone())?;
                }
                Ok(())
            };
            if let Err(e) = read() {
                let _ = parts.blocking_send(Err(e));
            }
        });
        let mut result = Ok(());
        while let Some(part) = ready.recv().await {
            result = match part {
                Ok(Part::Counts(counts)) => sink.counts(counts).await,
                Ok(Part::Page(page)) => sink.page(page).await,
                Err(e) => Err(e),
            };
            if result.is_err() {
                break;
            }
        }
        // Dropping the receiver stops the reader at its next page.
        drop(ready);
        reader
            .await
            .map_err(|e| Error::internal(format!("the export's reader failed: {e}")))?;
        result
    }

    async fn holds_any(&self, services: &[Service]) -> Result<bool, Error> {
        let view = self.store.view()?;
        let snapshot = view.snapshot();
        for service in services {
            for space in spaces(*service) {
                if !snapshot.is_empty(view.space(*space)).map_err(fjall_error)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn import(&self, records: Vec<Record>) -> Result<Imported, Error> {
        let mut total = Imported::default();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let chunk: Vec<Record> = records.by_ref().take(CHUNK).collect();
            let now = strata_core::time::now_millis();
            let mut writes = Vec::with_capacity(chunk.len());
            let mut done = Imported::default();
            for record in chunk {
                if record.until_ms().is_some_and(|until| until <= now) {
                    done.expired += 1;
                    continue;
                }
                let (space, key, value) = encode(&record)?;
                writes.push((record, space, key, value));
            }
            done += self
                .store
                .write(move |staging| {
                    let mut done = Imported::default();
                    for (record, space, key, value) in writes {
                        match staging.get(space, &key)? {
                            None => {
                                staging.put(space, key, value);
                                done.written += 1;
                            }
                            Some(existing) if existing == value => done.present += 1,
                            Some(_) => return Err(differs(&record)),
                        }
                    }
                    Ok(done)
                })
                .await?;
            total += done;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::Settings;
    use strata_core::certificates::IssueRequest;
    use strata_core::counters::CounterKey;
    use strata_core::kv::{Key, Value};
    use strata_core::transfer::check;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    async fn fill(store: &Store) {
        let stores = store.stores(&Settings::default());
        let key = |k: &str| Key::parse(k).unwrap();
        let value = |v: &str| Value::parse(v.into()).unwrap();
        stores.kv.put(&key("a"), &value("1")).await.unwrap();
        stores.kv.put(&key("a"), &value("2")).await.unwrap();
        stores.kv.put(&key("gone"), &value("x")).await.unwrap();
        stores.kv.delete(&key("gone")).await.unwrap();
        let class = ClassCode::parse("CS").unwrap();
        for (i, id) in [Some("req-1"), None, Some("req-3")].into_iter().enumerate() {
            let request = IssueRequest {
                class: class.clone(),
                name: format!("holder {i}"),
                amount: 10 + i as u64,
            };
            stores.ledger.issue(&request, id).await.unwrap();
        }
        let widget = |serial: &str, ports: &[Port]| Widget {
            serial: serial.into(),
            name: format!("widget {serial}"),
            ports: ports.to_vec(),
            associations: vec![],
        };
        stores
            .widgets
            .create(&widget("w1", &[Port::P, Port::R]))
            .await
            .unwrap();
        stores
            .widgets
            .create(&widget("w2", &[Port::P]))
            .await
            .unwrap();
        stores.widgets.associate("w1", "w2", Port::P).await.unwrap();
        let counter = CounterKey::parse("hits").unwrap();
        stores
            .counters
            .increment(&counter, 5, Some("inc-1"))
            .await
            .unwrap();
        let strata_core::idempotency::Claim::Proceed(owner) =
            stores.idempotency.claim("k#1", "fp").await.unwrap()
        else {
            panic!("a new key proceeds")
        };
        stores
            .idempotency
            .complete(
                "k#1",
                &owner,
                "fp",
                &Stored {
                    status: 201,
                    body: "{}".into(),
                    content_type: None,
                },
            )
            .await
            .unwrap();
    }

    /// What an export hands a sink, call by call.
    #[derive(Default)]
    struct Calls {
        counts: Option<BTreeMap<String, u64>>,
        pages: Vec<Vec<Record>>,
        /// Fail the page call with this index (a client that hung up).
        fail_at: Option<usize>,
    }

    #[async_trait]
    impl Sink for Calls {
        async fn counts(&mut self, counts: BTreeMap<String, u64>) -> Result<(), Error> {
            assert!(
                self.counts.is_none() && self.pages.is_empty(),
                "counts first, once"
            );
            self.counts = Some(counts);
            Ok(())
        }
        async fn page(&mut self, records: Vec<Record>) -> Result<(), Error> {
            if self.fail_at == Some(self.pages.len()) {
                return Err(Error::internal("hung up"));
            }
            self.pages.push(records);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_comes_in_bounded_pages_in_the_canonical_order() {
        let (_dir, store) = open();
        fill(&store).await;
        let stores = store.stores(&Settings::default());
        // Values big enough that pages end on bytes, keys and classes whose byte order is the trap.
        let big = "v".repeat(200 * 1024);
        for i in 0..12 {
            let key = Key::parse(&format!("big-{i}")).unwrap();
            stores
                .kv
                .put(&key, &Value::parse(big.clone()).unwrap())
                .await
                .unwrap();
        }
        for i in 0..(PAGE_RECORDS + 10) {
            let key = Key::parse(&format!("small-{i}")).unwrap();
            stores
                .kv
                .put(&key, &Value::parse("x".into()).unwrap())
                .await
                .unwrap();
        }
        for class in ["A", "AB"] {
            let code = ClassCode::parse(class).unwrap();
            stores.ledger.put_class(&code, 1_000).await.unwrap();
            let request = IssueRequest {
                class: ClassCode::parse(class).unwrap(),
                name: "n".into(),
                amount: 1,
            };
            for _ in 0..11 {
                stores.ledger.issue(&request, None).await.unwrap();
            }
        }
        let mut calls = Calls::default();
        store
            .transfer()
            .export_to(&Service::ALL, &mut calls)
            .await
            .unwrap();
        assert!(calls.pages.len() > 3, "{} pages", calls.pages.len());
        for page in &calls.pages {
            let bytes: usize = page.iter().map(Record::weight).sum();
            let last = page.last().unwrap().weight();
            assert!(page.len() <= PAGE_RECORDS, "{} records", page.len());
            assert!(
                bytes - last < PAGE_BYTES,
                "{bytes} bytes before the last record"
            );
        }
        let records: Vec<Record> = calls.pages.concat();
        let mut sorted = records.clone();
        strata_core::transfer::canonical(&mut sorted);
        assert_eq!(records, sorted, "handed out in the canonical order");
        assert_eq!(
            calls.counts.unwrap(),
            strata_core::transfer::counts(&records)
        );
        assert!(check(&records).is_empty());

        // A sink that fails (a client that hung up) ends the export, and the reading thread with it.
        let mut calls = Calls {
            fail_at: Some(1),
            ..Calls::default()
        };
        let e = store
            .transfer()
            .export_to(&Service::ALL, &mut calls)
            .await
            .unwrap_err();
        assert_eq!(e.message, "hung up");
        assert_eq!(calls.pages.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_trip_keeps_everything_and_the_numbers_go_on() {
        let (_a, source) = open();
        fill(&source).await;
        let first = source.transfer().export(&Service::ALL).await.unwrap();
        assert!(check(&first).is_empty(), "{:?}", check(&first));
        assert_eq!(
            first.iter().filter(|r| r.kind() == "certificate").count(),
            3
        );
        assert!(first.iter().any(|r| r.kind() == "certificate_request"));
        assert!(first.iter().any(|r| r.kind() == "counter_request"));
        assert!(first.iter().any(|r| r.kind() == "idempotency"));

        let (_b, target) = open();
        let transfer = target.transfer();
        assert!(!transfer.holds_any(&Service::ALL).await.unwrap());
        let imported = transfer.import(first.clone()).await.unwrap();
        assert_eq!(imported.written as usize, first.len());
        // Again, as after a crash: everything is there and identical.
        let again = transfer.import(first.clone()).await.unwrap();
        assert_eq!((again.written, again.present as usize), (0, first.len()));
        assert_eq!(transfer.export(&Service::ALL).await.unwrap(), first);

        let stores = target.stores(&Settings::default());
        let a = Key::parse("a").unwrap();
        assert_eq!(
            stores
                .kv
                .put(&a, &Value::parse("3".into()).unwrap())
                .await
                .unwrap(),
            3
        );
        let gone = Key::parse("gone").unwrap();
        assert_eq!(
            stores
                .kv
                .put(&gone, &Value::parse("y".into()).unwrap())
                .await
                .unwrap(),
            3
        );
        let request = IssueRequest {
            class: ClassCode::parse("CS").unwrap(),
            name: "holder 0".into(),
            amount: 10,
        };
        // The request record came along: a retry is the same certificate, a new issue the next number.
        assert_eq!(
            stores
                .ledger
                .issue(&request, Some("req-1"))
                .await
                .unwrap()
                .number,
            1
        );
        assert_eq!(stores.ledger.issue(&request, None).await.unwrap().number, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_differing_record_fails_its_chunk_and_writes_nothing_of_it() {
        let (_a, store) = open();
        let transfer = store.transfer();
        let kv = |key: &str, version| Record::Kv {
            key: key.into(),
            version,
            value: Some("v".into()),
        };
        transfer.import(vec![kv("b", 1)]).await.unwrap();
        let e = transfer
            .import(vec![kv("a", 1), kv("b", 2)])
            .await
            .unwrap_err();
        assert_eq!(e.code, "import_conflict");
        assert_eq!(
            transfer.export(&[Service::Kv]).await.unwrap(),
            vec![kv("b", 1)]
        );
    }

    /// Writers run while exports are taken: each export keeps every invariant, and the key/value writes of
    /// one sequential writer appear as a prefix (none after a missing one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_export_under_load_is_one_snapshot() {
        let (_a, store) = open();
        let stores = store.stores(&Settings::default());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3 {
            let (stores, stop) = (stores.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let request = IssueRequest {
                        class: ClassCode::parse("CS").unwrap(),
                        name: "n".into(),
                        amount: 1 + i % 7,
                    };
                    stores.ledger.issue(&request, None).await.unwrap();
                    let key = Key::parse(&format!("w{w}-{i:08}")).unwrap();
                    stores
                        .kv
                        .put(&key, &Value::parse("v".into()).unwrap())
                        .await
                        .unwrap();
                    i += 1;
                }
                i
            }));
        }
        let transfer = store.transfer();
        let mut seen = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let records = transfer.export(&Service::ALL).await.unwrap();
            assert!(check(&records).is_empty(), "{:?}", check(&records));
            for w in 0..3 {
                let prefix = format!("w{w}-");
                let keys: Vec<&str> = records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Kv { key, .. } if key.starts_with(&prefix) => Some(key.as_str()),
                        _ => None,
                    })
                    .collect();
                for (i, key) in keys.iter().enumerate() {
                    assert_eq!(
                        *key,
                        format!("{prefix}{i:08}"),
                        "a gap in writer {w}'s keys"
                    );
                }
            }
            seen = records.len();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for writer in writers {
            writer.await.unwrap();
        }
        assert!(seen > 10, "the writers wrote during the exports");
    }

    /// Eventual-mode increments still in the log are folded into the exported total, as the fold loop would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logged_increments_are_folded_into_the_export() {
        let (_a, store) = open();
        // Hold the fold loop's claim, so the increments stay in the log.
        assert!(store.claim_fold_loop());
        let counters = crate::counters::EmbeddedCounters::new(
            store.clone(),
            strata_core::counters::Mode::Eventual,
            Duration::from_secs(3600),
        );
        let key = CounterKey::parse("logged").unwrap();
        use strata_core::counters::Counters;
        for value in [2, 3, strata_core::counters::MAX_TOTAL] {
            counters.increment(&key, value, None).await.unwrap();
        }
        assert_eq!(
            counters.get(&key).await.unwrap(),
            None,
            "nothing folded yet"
        );
        let records = store.transfer().export(&[Service::Counters]).await.unwrap();
        // The last one does not fit: refused when folded, as the fold loop refuses it.
        assert_eq!(
            records,
            vec![Record::Counter {
                key: "logged".into(),
                total: 5,
                refused: 1
            }]
        );
    }
}
