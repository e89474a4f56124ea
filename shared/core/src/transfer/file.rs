//! Files: reading one (header, then each record checked alone, then the counts), writing one.

use super::{Checker, FORMAT, Header, Record, VERSION};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// Why a file cannot be read: the line (1 is the header; 0 for the file as a whole) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}", if *.line == 0 { .message.clone() } else { format!("line {}: {}", .line, .message) })]
pub struct ReadError {
    /// The line (1 is the header; 0 for the file as a whole).
    pub line: u64,
    /// What is wrong.
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
    /// The file's header.
    pub header: Header,
    /// Every record, in the file's order.
    pub records: Vec<Record>,
}

/// The longest line a reader takes: a record at its limits (a 256 KiB value, every byte escaped as
/// `\u00XX`) is under 2 MiB. A longer line is refused, not buffered.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Reads and validates a whole file into memory (tests, small files): [`Reader`], then [`check`](super::check).
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
#[derive(Debug)]
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

    /// The file's header, read when the reader was made.
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
