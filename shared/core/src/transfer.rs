//! Moving data between stores: the export format (JSON lines, see `docs/export-format.md`), the checks every
//! export and every import runs, and the [`Transfer`] port each backend implements.
//!
//! A file is one header line ([`Header`]) and then one [`Record`] per line. Reading a file
//! ([`read`]) validates all of it before anything is written: every line parses, every record keeps the
//! domain rules of its service, the counts match the header (so a truncated file is refused), and the
//! records together keep the invariants ([`check`]). Records are written in one canonical order
//! ([`canonical`]), so two exports of the same data are the same lines after the header.

use crate::certificates::{ClassCode, MAX_SHARES};
use crate::counters::{CounterKey, MAX_TOTAL};
use crate::widgets::Port;
use crate::{Error, kv};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod check;
mod file;

pub use check::{Checker, Violation, check};
pub use file::{File, MAX_LINE_BYTES, ReadError, Reader, read, validate, write, write_records};

/// The name in every header's `format`.
pub const FORMAT: &str = "strata-export";
/// The format version this build writes, and the newest it reads.
pub const VERSION: u32 = 1;

/// A service whose data an export can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// Key/value pairs (with their versions and tombstones).
    Kv,
    /// Share classes, certificates and the records of keyed issues.
    Certificates,
    /// Widgets and their associations.
    Widgets,
    /// Counters and the marks of keyed increments.
    Counters,
}

impl Service {
    /// Every service, in the order a file lists them.
    pub const ALL: [Service; 4] = [
        Service::Kv,
        Service::Certificates,
        Service::Widgets,
        Service::Counters,
    ];

    /// The service's name in a file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Kv => "kv",
            Service::Certificates => "certificates",
            Service::Widgets => "widgets",
            Service::Counters => "counters",
        }
    }

    /// Parses a service's name (`400 invalid_field` otherwise).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                Error::invalid_field(
                    "services",
                    format!("unknown service {raw:?} (kv, certificates, widgets, counters)"),
                )
            })
    }

    /// A comma-separated list, e.g. `kv,counters`; duplicates are dropped.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, Error> {
        let mut out: Vec<Self> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Self::parse)
            .collect::<Result<_, _>>()?;
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(Error::invalid_field("services", "no service named"));
        }
        Ok(out)
    }
}

/// The first line of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version; a reader refuses one newer than [`VERSION`].
    pub version: u32,
    /// The store it was taken from: `embedded` or `dynamodb`.
    pub source: String,
    /// When the snapshot was taken (RFC 3339).
    pub taken_at: String,
    /// The services it holds: every record belongs to one of them, and each is complete.
    pub services: Vec<Service>,
    /// Records of each type ([`Record::kind`]) that follow.
    pub counts: BTreeMap<String, u64>,
    /// What the source store promised about the snapshot, in words.
    pub consistency: String,
}

/// One line after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// A key and its latest version; `value` is absent for a tombstone (deleted, version kept so that
    /// versions never go back).
    Kv {
        /// The key.
        key: String,
        /// Its latest version.
        version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        /// Its value; absent for a tombstone.
        value: Option<String>,
    },
    /// A share class with its totals.
    Class {
        /// The class code.
        class: String,
        /// Shares the class may issue at most.
        authorized: u64,
        /// Shares issued so far.
        issued: u64,
        /// The number the next certificate gets.
        next_number: u64,
    },
    /// An issued certificate.
    Certificate {
        /// Its class code.
        class: String,
        /// Its number within the class.
        number: u64,
        /// The holder's name.
        name: String,
        /// Shares it holds.
        amount: u64,
        /// Milliseconds since the epoch.
        issued_at_ms: u64,
    },
    /// The ledger's record of an issue under an `Idempotency-Key`, while it holds (`until_ms` whole seconds,
    /// rounded up: DynamoDB keeps only its TTL).
    CertificateRequest {
        /// The `Idempotency-Key` the issue was made under (scoped to its operation and caller).
        id: String,
        /// The class of the certificate it issued.
        class: String,
        /// The number of the certificate it issued.
        number: u64,
        /// Until when it holds (milliseconds since the epoch).
        until_ms: u64,
    },
    /// A widget with its slots and associations.
    Widget {
        /// Its serial number.
        serial: String,
        /// Its name.
        name: String,
        /// One letter per slot, e.g. `PRR`.
        ports: String,
        /// `[port, peer]` pairs in the order they were made.
        associations: Vec<(String, String)>,
    },
    /// A counter's total, with every increment its store had accepted folded in.
    Counter {
        /// The counter's key.
        key: String,
        /// Its total.
        total: u64,
        /// Increments refused because they would have taken the total past its maximum.
        refused: u64,
    },
    /// The mark of an increment made under an `Idempotency-Key`, while it holds (`until_ms` whole seconds,
    /// rounded up, as for certificate requests).
    CounterRequest {
        /// The `Idempotency-Key` the increment was made under (scoped to its operation and caller).
        id: String,
        /// Until when it holds (milliseconds since the epoch).
        until_ms: u64,
    },
    /// A completed `Idempotency-Key` answer, while it holds.
    Idempotency {
        /// The `Idempotency-Key` (scoped to its operation and caller).
        key: String,
        /// The fingerprint of the request that made the answer.
        fingerprint: String,
        /// The answer's status code.
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        /// The answer's `content-type`, when it was not JSON.
        content_type: Option<String>,
        /// The answer's body.
        body: String,
        /// Until when it holds (milliseconds since the epoch).
        until_ms: u64,
    },
}

impl From<crate::widgets::Widget> for Record {
    /// A widget as exported, whichever store it was read from.
    fn from(w: crate::widgets::Widget) -> Self {
        Record::Widget {
            serial: w.serial,
            name: w.name,
            ports: w.ports.iter().map(|p| p.as_str()).collect(),
            associations: w
                .associations
                .into_iter()
                .map(|(p, peer)| (p.as_str().to_owned(), peer))
                .collect(),
        }
    }
}

impl Record {
    /// The record's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Kv { .. } => "kv",
            Record::Class { .. } => "class",
            Record::Certificate { .. } => "certificate",
            Record::CertificateRequest { .. } => "certificate_request",
            Record::Widget { .. } => "widget",
            Record::Counter { .. } => "counter",
            Record::CounterRequest { .. } => "counter_request",
            Record::Idempotency { .. } => "idempotency",
        }
    }

    /// The service it belongs to; `None` for idempotency answers, which every service keeps.
    pub fn service(&self) -> Option<Service> {
        match self {
            Record::Kv { .. } => Some(Service::Kv),
            Record::Class { .. }
            | Record::Certificate { .. }
            | Record::CertificateRequest { .. } => Some(Service::Certificates),
            Record::Widget { .. } => Some(Service::Widgets),
            Record::Counter { .. } | Record::CounterRequest { .. } => Some(Service::Counters),
            Record::Idempotency { .. } => None,
        }
    }

    /// Its place in the canonical order: type, then its key.
    fn sort_key(&self) -> (u8, &str, u64) {
        match self {
            Record::Kv { key, .. } => (0, key, 0),
            Record::Class { class, .. } => (1, class, 0),
            Record::Certificate { class, number, .. } => (2, class, *number),
            Record::CertificateRequest { id, .. } => (3, id, 0),
            Record::Widget { serial, .. } => (4, serial, 0),
            Record::Counter { key, .. } => (5, key, 0),
            Record::CounterRequest { id, .. } => (6, id, 0),
            Record::Idempotency { key, .. } => (7, key, 0),
        }
    }

    /// Until when a retention-bound record holds; `None` for the others.
    pub fn until_ms(&self) -> Option<u64> {
        match self {
            Record::CertificateRequest { until_ms, .. }
            | Record::CounterRequest { until_ms, .. }
            | Record::Idempotency { until_ms, .. } => Some(*until_ms),
            _ => None,
        }
    }

    /// The domain rules of its service, for this record alone.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Record::Kv {
                key,
                version,
                value,
            } => {
                kv::Key::parse(key)?;
                if let Some(value) = value {
                    kv::Value::parse(value.clone())?;
                }
                if *version == 0 {
                    return Err(Error::invalid_field("version", "versions start at 1"));
                }
            }
            Record::Class {
                class,
                authorized,
                issued,
                next_number,
            } => {
                ClassCode::parse(class)?;
                if *authorized > MAX_SHARES {
                    return Err(Error::invalid_field("authorized", "over 2^53-1"));
                }
                if issued > authorized {
                    return Err(Error::invalid_field(
                        "issued",
                        format!("{issued} shares issued of {authorized} authorized"),
                    ));
                }
                if *next_number == 0 {
                    return Err(Error::invalid_field("next_number", "numbers start at 1"));
                }
            }
            Record::Certificate {
                class,
                number,
                name,
                amount,
                ..
            } => {
                ClassCode::parse(class)?;
                crate::certificates::validate_name(name)?;
                if *number == 0 {
                    return Err(Error::invalid_field("number", "numbers start at 1"));
                }
                if *amount == 0 || *amount > MAX_SHARES {
                    return Err(Error::invalid_field("amount", "from 1 to 2^53-1"));
                }
            }
            Record::CertificateRequest { id, class, .. } => {
                validate_id(id)?;
                ClassCode::parse(class)?;
            }
            Record::Widget {
                serial,
                name,
                ports,
                associations,
            } => {
                crate::widgets::validate_serial(serial, "serial")?;
                crate::widgets::validate_name(name)?;
                let ports: Vec<String> = ports.chars().map(String::from).collect();
                crate::widgets::parse_ports(&ports)?;
                for (port, peer) in associations {
                    parse_port(port)?;
                    crate::widgets::validate_serial(peer, "associations")?;
                }
            }
            Record::Counter { key, total, .. } => {
                CounterKey::parse(key)?;
                if *total > MAX_TOTAL {
                    return Err(Error::invalid_field("total", "over 2^63-1"));
                }
            }
            Record::CounterRequest { id, .. } => validate_id(id)?,
            Record::Idempotency { key, status, .. } => {
                validate_id(key)?;
                if !(100..600).contains(status) {
                    return Err(Error::invalid_field("status", "not an HTTP status"));
                }
            }
        }
        Ok(())
    }
}

/// Stored request ids are the client's key scoped to its operation and caller: longer than a key, never
/// empty, never control characters.
fn validate_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 4096 || id.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            "id",
            "empty, over 4096 bytes or with control characters",
        ));
    }
    Ok(())
}

fn parse_port(raw: &str) -> Result<Port, Error> {
    Port::parse(raw)
        .ok_or_else(|| Error::invalid_field("associations", format!("unknown port {raw:?}")))
}

/// `until_ms` of a record kept to the second (certificate and counter requests): rounded up, so it holds
/// at least as long as on its store.
pub fn to_second(until_ms: u64) -> u64 {
    until_ms.div_ceil(1000).saturating_mul(1000)
}

/// Sorts records into the canonical order (and so makes two exports of the same data equal): by type and
/// key, and each widget's associations by port and peer (DynamoDB keeps them as sets, without an order).
pub fn canonical(records: &mut [Record]) {
    for record in records.iter_mut() {
        if let Record::Widget { associations, .. } = record {
            associations.sort();
        }
    }
    records.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
}

/// How many records of each type ([`Record::kind`]) `records` holds: the header's `counts`.
pub fn counts(records: &[Record]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry(record.kind().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// The header for `records`, taken from `source` now.
pub fn header(source: &str, services: &[Service], records: &[Record], consistency: &str) -> Header {
    header_with_counts(source, services, counts(records), consistency)
}

/// The header of an export whose records are counted before they are written (a stream).
pub fn header_with_counts(
    source: &str,
    services: &[Service],
    counts: BTreeMap<String, u64>,
    consistency: &str,
) -> Header {
    Header {
        format: FORMAT.into(),
        version: VERSION,
        source: source.into(),
        taken_at: crate::time::rfc3339(std::time::SystemTime::now()),
        services: services.to_vec(),
        counts,
        consistency: consistency.into(),
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Records written.
    pub written: u64,
    /// Records already there, identical (a resumed import).
    pub present: u64,
    /// Retention-bound records past their retention by now, not written.
    pub expired: u64,
}

impl std::ops::AddAssign for Imported {
    fn add_assign(&mut self, other: Self) {
        self.written += other.written;
        self.present += other.present;
        self.expired += other.expired;
    }
}

/// A record in the target that differs from the file's: the import stops there.
pub fn differs(record: &Record) -> Error {
    Error::conflict(
        "import_conflict",
        format!(
            "the target holds {} {:?} with other contents than the file",
            record.kind(),
            record.sort_key().1
        ),
    )
}

/// What a backend offers for export and import: every record of some services, and bulk inserts that
/// accept an identical existing record (so an import resumed after a crash duplicates nothing).
#[async_trait]
pub trait Transfer: Send + Sync {
    /// What the snapshot promises (the header's `consistency`).
    fn consistency(&self) -> &'static str;
    /// Every record of `services` (and the idempotency answers, with any service), in one view as
    /// consistent as [`Self::consistency`] says; eventual-mode increments still logged are folded in.
    /// Retention-bound records already past their retention are left out. Handed to `sink` as the
    /// counts first (the header needs them), then pages in the canonical order, so a caller that
    /// writes each page out holds one page at a time.
    async fn export_to(&self, services: &[Service], sink: &mut dyn Sink) -> Result<(), Error>;
    /// [`Self::export_to`] gathered in memory (tests and small stores).
    async fn export(&self, services: &[Service]) -> Result<Vec<Record>, Error> {
        let mut all = Gather::default();
        self.export_to(services, &mut all).await?;
        Ok(all.records)
    }
    /// Whether the store holds any record of `services` (ignoring idempotency answers).
    async fn holds_any(&self, services: &[Service]) -> Result<bool, Error>;
    /// Writes `records`: each one absent is written, each one present and identical is left as it is,
    /// one present and different is `409 import_conflict` (with the records before it written).
    async fn import(&self, records: Vec<Record>) -> Result<Imported, Error>;
}

/// Where an export goes, page by page ([`Transfer::export_to`]).
#[async_trait]
pub trait Sink: Send {
    /// The records of each type that will follow; called once, before any page.
    async fn counts(&mut self, counts: BTreeMap<String, u64>) -> Result<(), Error>;
    /// The next records in the canonical order.
    async fn page(&mut self, records: Vec<Record>) -> Result<(), Error>;
}

/// Records an export hands out per page: small enough that a page in flight costs little memory, large
/// enough that a write per page costs little time.
pub const PAGE_RECORDS: usize = 1_000;
/// A page ends early once its records hold this many bytes of values (values go up to 256 KiB).
pub const PAGE_BYTES: usize = 1 << 20;

/// A sink that keeps everything ([`Transfer::export`]).
#[derive(Debug, Default)]
pub struct Gather {
    /// The counts the export announced.
    pub counts: BTreeMap<String, u64>,
    /// Every record handed out, in order.
    pub records: Vec<Record>,
}

#[async_trait]
impl Sink for Gather {
    async fn counts(&mut self, counts: BTreeMap<String, u64>) -> Result<(), Error> {
        self.counts = counts;
        Ok(())
    }
    async fn page(&mut self, records: Vec<Record>) -> Result<(), Error> {
        self.records.extend(records);
        Ok(())
    }
}

/// Hands records held in memory to `sink`: their counts, then pages (a store that gathers its export).
pub async fn hand_out(records: Vec<Record>, sink: &mut dyn Sink) -> Result<(), Error> {
    sink.counts(counts(&records)).await?;
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        sink.page(records.by_ref().take(PAGE_RECORDS).collect())
            .await?;
    }
    Ok(())
}

impl Record {
    /// Roughly the bytes it holds (its value, body or name), for [`PAGE_BYTES`].
    pub fn weight(&self) -> usize {
        match self {
            Record::Kv { key, value, .. } => key.len() + value.as_ref().map_or(0, String::len),
            Record::Idempotency { key, body, .. } => key.len() + body.len(),
            Record::Certificate { name, .. } | Record::Widget { name, .. } => name.len() + 64,
            _ => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut records = vec![
            Record::Kv {
                key: "a".into(),
                version: 3,
                value: Some("x".into()),
            },
            Record::Kv {
                key: "gone".into(),
                version: 2,
                value: None,
            },
            Record::Class {
                class: "CS".into(),
                authorized: 100,
                issued: 30,
                next_number: 3,
            },
            Record::Certificate {
                class: "CS".into(),
                number: 1,
                name: "Ada".into(),
                amount: 10,
                issued_at_ms: 1,
            },
            Record::Certificate {
                class: "CS".into(),
                number: 2,
                name: "Bob".into(),
                amount: 20,
                issued_at_ms: 2,
            },
            Record::Widget {
                serial: "w1".into(),
                name: "one".into(),
                ports: "PR".into(),
                associations: vec![("P".into(), "w2".into())],
            },
            Record::Widget {
                serial: "w2".into(),
                name: "two".into(),
                ports: "P".into(),
                associations: vec![("P".into(), "w1".into())],
            },
            Record::Counter {
                key: "c".into(),
                total: 5,
                refused: 0,
            },
        ];
        canonical(&mut records);
        records
    }

    fn file(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        write(
            &mut out,
            &header("embedded", &Service::ALL, records, "test"),
            records,
        )
        .unwrap();
        out
    }

    #[test]
    fn a_written_file_reads_back_the_same() {
        let records = sample();
        let read = read(&file(&records)[..]).unwrap();
        assert_eq!(read.records, records);
        assert_eq!(read.header.counts["kv"], 2);
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let bytes = file(&sample());
        // Whole lines missing: the counts do not match.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let cut: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        let e = read(cut.as_bytes()).unwrap_err();
        assert!(e.message.contains("counts"), "{e}");
        // A line cut in the middle: that line is named.
        let e = read(&bytes[..bytes.len() - 5]).unwrap_err();
        assert_eq!(e.line, 9, "{e}");
        assert!(read(&b""[..]).unwrap_err().message.contains("empty"));
    }

    #[test]
    fn a_newer_version_is_refused() {
        let text = String::from_utf8(file(&sample())).unwrap();
        let newer = text.replacen("\"version\":1", "\"version\":2", 1);
        let e = read(newer.as_bytes()).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("newer"), "{e}");
    }

    #[test]
    fn a_record_breaking_a_rule_names_its_line() {
        let text = String::from_utf8(file(&sample())).unwrap();
        let bad = text.replacen("\"key\":\"a\"", "\"key\":\"has space\"", 1);
        let e = read(bad.as_bytes()).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.to_string().starts_with("line 2: kv record"), "{e}");
    }

    #[test]
    fn invariants_are_checked() {
        let mut records = sample();
        assert!(check(&records).is_empty());
        // A certificate missing: a gap, and the sum is off.
        records.retain(|r| !matches!(r, Record::Certificate { number: 1, .. }));
        let found = check(&records);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].0.contains("number 1 missing") || found[1].0.contains("number 1 missing"));
        // A one-sided association.
        let mut records = sample();
        for r in &mut records {
            if let Record::Widget {
                serial,
                associations,
                ..
            } = r
                && serial == "w2"
            {
                associations.clear();
            }
        }
        let found = check(&records);
        assert!(found[0].0.contains("not the other way"), "{found:?}");
        // Over capacity.
        let mut records = sample();
        for r in &mut records {
            if let Record::Widget { serial, ports, .. } = r
                && serial == "w2"
            {
                *ports = "R".into();
            }
        }
        assert!(check(&records).iter().any(|v| v.0.contains("0 slots")));
    }
}
