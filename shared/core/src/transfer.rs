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
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};

/// The name in every header's `format`.
pub const FORMAT: &str = "strata-export";
/// The format version this build writes, and the newest it reads.
pub const VERSION: u32 = 1;

/// A service whose data an export can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Kv,
    Certificates,
    Widgets,
    Counters,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Kv,
        Service::Certificates,
        Service::Widgets,
        Service::Counters,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Kv => "kv",
            Service::Certificates => "certificates",
            Service::Widgets => "widgets",
            Service::Counters => "counters",
        }
    }

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
        key: String,
        version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    /// A share class with its totals.
    Class {
        class: String,
        authorized: u64,
        issued: u64,
        next_number: u64,
    },
    Certificate {
        class: String,
        number: u64,
        name: String,
        amount: u64,
        /// Milliseconds since the epoch.
        issued_at_ms: u64,
    },
    /// The ledger's record of an issue under an `Idempotency-Key`, while it holds (`until_ms` whole seconds,
    /// rounded up: DynamoDB keeps only its TTL).
    CertificateRequest {
        id: String,
        class: String,
        number: u64,
        /// Until when it holds (milliseconds since the epoch).
        until_ms: u64,
    },
    Widget {
        serial: String,
        name: String,
        /// One letter per slot, e.g. `PRR`.
        ports: String,
        /// `[port, peer]` pairs in the order they were made.
        associations: Vec<(String, String)>,
    },
    /// A counter's total, with every increment its store had accepted folded in.
    Counter {
        key: String,
        total: u64,
        refused: u64,
    },
    /// The mark of an increment made under an `Idempotency-Key`, while it holds (`until_ms` whole seconds,
    /// rounded up, as for certificate requests).
    CounterRequest { id: String, until_ms: u64 },
    /// A completed `Idempotency-Key` answer, while it holds.
    Idempotency {
        key: String,
        fingerprint: String,
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
        body: String,
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

/// A broken invariant across records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The invariants records must keep together: certificate numbers of each class are 1 to `next_number - 1`
/// with no gap, the class's `issued` is the sum of their amounts, every certificate and certificate request
/// names a class and a certificate that is there; associations are symmetric, name widgets that are there,
/// never a widget itself, never twice, and stay within each widget's slots; no key appears twice.
pub fn check(records: &[Record]) -> Vec<Violation> {
    let mut checker = Checker::default();
    for record in records {
        checker.add(record);
    }
    checker.finish()
}

/// [`check`] one record at a time, for a file or an export streamed through: it keeps what the invariants
/// need (each record's key, classes, certificate numbers, widgets' slots and associations), never a
/// value, a name or an answer's body, so its memory grows with the number of records, not their size.
#[derive(Debug, Default)]
pub struct Checker {
    seen: HashSet<(u8, String, u64)>,
    duplicates: Vec<Violation>,
    classes: HashMap<String, (u64, u64)>,
    certificates: HashMap<String, (Vec<u64>, u64)>,
    requests: Vec<(String, String, u64)>,
    /// serial → (ports, associations)
    widgets: HashMap<String, (String, Vec<(String, String)>)>,
}

impl Checker {
    pub fn add(&mut self, record: &Record) {
        let (kind, key, number) = record.sort_key();
        if !self.seen.insert((kind, key.to_owned(), number)) && self.duplicates.len() < 100 {
            self.duplicates.push(Violation(format!(
                "{} {key:?} appears twice",
                record.kind()
            )));
        }
        match record {
            Record::Class {
                class,
                issued,
                next_number,
                ..
            } => {
                self.classes.insert(class.clone(), (*issued, *next_number));
            }
            Record::Certificate {
                class,
                number,
                amount,
                ..
            } => {
                let entry = self.certificates.entry(class.clone()).or_default();
                entry.0.push(*number);
                entry.1 = entry.1.saturating_add(*amount);
            }
            Record::CertificateRequest {
                id, class, number, ..
            } => self.requests.push((id.clone(), class.clone(), *number)),
            Record::Widget {
                serial,
                ports,
                associations,
                ..
            } => {
                self.widgets
                    .insert(serial.clone(), (ports.clone(), associations.clone()));
            }
            _ => {}
        }
    }

    /// The invariants broken by the records added (at most 100 listed).
    pub fn finish(self) -> Vec<Violation> {
        let Checker {
            duplicates: mut out,
            classes,
            mut certificates,
            requests,
            widgets,
            ..
        } = self;
        let mut bad = |message: String| {
            if out.len() < 100 {
                out.push(Violation(message));
            }
        };
        for (class, (numbers, _)) in &certificates {
            if !classes.contains_key(class) {
                bad(format!(
                    "{} certificates of class {class}, which is not in the file",
                    numbers.len()
                ));
            }
        }
        for (class, (issued, next_number)) in &classes {
            let (mut numbers, sum) = certificates.remove(class).unwrap_or_default();
            numbers.sort_unstable();
            let expected = next_number - 1;
            if numbers.len() as u64 != expected || numbers.iter().zip(1..).any(|(n, i)| *n != i) {
                let first_gap = (1..=expected).find(|n| numbers.binary_search(n).is_err());
                bad(format!(
                    "class {class}: {} certificates for numbers 1 to {expected} (next number {next_number}){}",
                    numbers.len(),
                    first_gap.map_or(String::new(), |n| format!(", number {n} missing"))
                ));
            }
            if sum != *issued {
                bad(format!(
                    "class {class}: issued {issued}, but its certificates add up to {sum}"
                ));
            }
        }
        for (id, class, number) in &requests {
            if classes
                .get(class.as_str())
                .is_none_or(|(_, next)| number >= next)
            {
                bad(format!(
                    "certificate request {id:?} names {class}-{number}, which is not in the file"
                ));
            }
        }
        for (serial, (ports, associations)) in &widgets {
            let mut pairs = HashSet::new();
            for port in Port::ALL {
                let capacity = ports.matches(port.as_str()).count();
                let used = associations
                    .iter()
                    .filter(|(p, _)| p == port.as_str())
                    .count();
                if used > capacity {
                    bad(format!(
                        "widget {serial:?}: {used} associations on port {} with {capacity} slots",
                        port.as_str()
                    ));
                }
            }
            for (port, peer) in associations.iter() {
                if peer == serial {
                    bad(format!("widget {serial:?} is associated with itself"));
                }
                if !pairs.insert((port, peer)) {
                    bad(format!(
                        "widget {serial:?} is associated with {peer:?} on port {port} twice"
                    ));
                }
                match widgets.get(peer.as_str()) {
                    None => bad(format!(
                        "widget {serial:?} is associated with {peer:?}, which is not in the file"
                    )),
                    Some((_, theirs)) => {
                        if !theirs.iter().any(|(p, s)| p == port && s == serial) {
                            bad(format!(
                                "widget {serial:?} is associated with {peer:?} on port {port}, but not the other way"
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Why a file cannot be read: the line (1 is the header; 0 for the file as a whole) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}", if *.line == 0 { .message.clone() } else { format!("line {}: {}", .line, .message) })]
pub struct ReadError {
    pub line: u64,
    pub message: String,
}

fn at(line: u64, message: impl Into<String>) -> ReadError {
    ReadError {
        line,
        message: message.into(),
    }
}

/// A file read whole and found valid.
#[derive(Debug)]
pub struct File {
    pub header: Header,
    pub records: Vec<Record>,
}

/// The longest line a reader takes: a record at its limits (a 256 KiB value, every byte escaped as
/// `\u00XX`) is under 2 MiB. A longer line is refused, not buffered.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Reads and validates a whole file into memory (tests, small files): [`Reader`], then [`check`].
pub fn read(input: impl BufRead) -> Result<File, ReadError> {
    let mut reader = Reader::new(input)?;
    let mut records = Vec::new();
    let mut checker = Checker::default();
    while let Some(record) = reader.next_record()? {
        checker.add(&record);
        records.push(record);
    }
    let header = reader.finish()?;
    violations(checker)?;
    Ok(File { header, records })
}

/// Reads and validates a whole file without keeping its records (the first pass of an import): the
/// header, every record, the counts and the invariants. Memory: [`Checker`]'s, and one line.
pub fn validate(input: impl BufRead) -> Result<Header, ReadError> {
    let mut reader = Reader::new(input)?;
    let mut checker = Checker::default();
    while let Some(record) = reader.next_record()? {
        checker.add(&record);
    }
    let header = reader.finish()?;
    violations(checker)?;
    Ok(header)
}

fn violations(checker: Checker) -> Result<(), ReadError> {
    let violations = checker.finish();
    if violations.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = violations.iter().map(|v| v.0.clone()).collect();
    Err(at(
        0,
        format!("the records break invariants: {}", list.join("; ")),
    ))
}

/// A file read one record at a time: the header when it is made, then each record checked alone
/// (parse, domain rules, the services the header names), then [`Reader::finish`] checks the counts. The
/// invariants across records are the caller's ([`Checker`]).
pub struct Reader<R> {
    input: R,
    header: Header,
    line: u64,
    buffer: Vec<u8>,
    counts: BTreeMap<String, u64>,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header: the format, and a version this build reads.
    pub fn new(mut input: R) -> Result<Self, ReadError> {
        let mut buffer = Vec::new();
        if !read_line(&mut input, &mut buffer, 1)? {
            return Err(at(0, "the file is empty: no header"));
        }
        let first = std::str::from_utf8(&buffer).map_err(|e| at(1, format!("cannot read: {e}")))?;
        let probe: serde_json::Value = serde_json::from_str(first)
            .map_err(|e| at(1, format!("the header is not JSON: {e}")))?;
        if probe.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(at(
                1,
                format!("not a {FORMAT} file (no \"format\": \"{FORMAT}\")"),
            ));
        }
        match probe.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v > u64::from(VERSION) => {
                return Err(at(
                    1,
                    format!(
                        "format version {v} is newer than this strata reads (up to {VERSION}); use a newer strata"
                    ),
                ));
            }
            Some(0) | None => return Err(at(1, "the header has no valid \"version\"")),
            Some(_) => {}
        }
        let header: Header =
            serde_json::from_value(probe).map_err(|e| at(1, format!("invalid header: {e}")))?;
        Ok(Self {
            input,
            header,
            line: 1,
            buffer,
            counts: BTreeMap::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next record, checked alone; `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        self.line += 1;
        let number = self.line;
        if !read_line(&mut self.input, &mut self.buffer, number)? {
            return Ok(None);
        }
        let line = std::str::from_utf8(&self.buffer)
            .map_err(|e| at(number, format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            return Err(at(number, "an empty line"));
        }
        let record: Record = serde_json::from_str(line)
            .map_err(|e| at(number, format!("not a valid record: {e}")))?;
        record
            .validate()
            .map_err(|e| at(number, format!("{} record: {}", record.kind(), e.message)))?;
        if let Some(service) = record.service()
            && !self.header.services.contains(&service)
        {
            return Err(at(
                number,
                format!(
                    "a {} record, but the header does not list {}",
                    record.kind(),
                    service.as_str()
                ),
            ));
        }
        *self.counts.entry(record.kind().to_owned()).or_insert(0) += 1;
        Ok(Some(record))
    }

    /// Once every record is read: the counts must match the header's (a file cut at a line boundary is
    /// refused as truncated). Returns the header.
    pub fn finish(self) -> Result<Header, ReadError> {
        let declared: BTreeMap<_, _> = self
            .header
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        if declared != self.counts {
            return Err(at(
                0,
                format!(
                    "the records do not match the header's counts (truncated or altered?): header {declared:?}, file {:?}",
                    self.counts
                ),
            ));
        }
        Ok(self.header)
    }
}

/// One line into `buffer` (without its `\n`); `false` at the end of the input. A line over
/// [`MAX_LINE_BYTES`] is refused before more of it is buffered.
fn read_line(
    input: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    number: u64,
) -> Result<bool, ReadError> {
    use std::io::Read;
    buffer.clear();
    let read = input
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buffer)
        .map_err(|e| at(number, format!("cannot read: {e}")))?;
    if read == 0 {
        return Ok(false);
    }
    if buffer.last() == Some(&b'\n') {
        buffer.pop();
        if buffer.last() == Some(&b'\r') {
            buffer.pop();
        }
    } else if buffer.len() > MAX_LINE_BYTES {
        return Err(at(number, format!("a line over {MAX_LINE_BYTES} bytes")));
    }
    Ok(true)
}

/// Serialises records one a line.
pub fn write_records(mut out: impl Write, records: &[Record]) -> std::io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes the header and the records, one a line.
pub fn write(mut out: impl Write, header: &Header, records: &[Record]) -> std::io::Result<()> {
    serde_json::to_writer(&mut out, header)?;
    out.write_all(b"\n")?;
    for record in records {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
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
    pub counts: BTreeMap<String, u64>,
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
