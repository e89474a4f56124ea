//! The bodies of requests and answers, as the contract writes them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A key, its value and the version that wrote it (`GET`/`PUT /kv/keys/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KvItem {
    pub key: String,
    pub value: String,
    /// Greater than every earlier version of the key.
    pub version: u64,
}

/// The answer of `DELETE /kv/keys/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KvDeleted {
    pub key: String,
    /// `false` when the key was absent (nothing was written then).
    pub deleted: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct KvWrite<'a> {
    pub value: &'a str,
}

/// The answer of `POST /increment`, by the server's counter mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// Strong mode (`200`): the increment is in `total`.
    Total { key: String, total: u64 },
    /// Eventual mode (`202`): the increment is durably logged and will be folded once.
    Accepted { key: String, accepted: u64 },
}

#[derive(Debug, Serialize)]
pub(crate) struct Increment<'a> {
    pub key: &'a str,
    pub value: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CounterTotalAfter {
    pub key: String,
    pub value: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CounterAccepted {
    pub key: String,
    pub accepted: u64,
}

/// A share class (`PUT`/`GET /share-classes/{class}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShareClass {
    pub class: String,
    pub authorized: u64,
    pub issued: u64,
    pub remaining: u64,
    /// The number the next certificate of the class gets.
    pub next_number: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ShareClassWrite {
    pub authorized: u64,
}

/// The body of `POST /certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateIssue {
    pub name: String,
    pub amount: u64,
    pub class: String,
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Certificate {
    /// `<CLASS>-<number>`, e.g. `CS-1`.
    pub id: String,
    pub class: String,
    pub number: u64,
    pub name: String,
    pub amount: u64,
    /// RFC 3339 in UTC with milliseconds.
    pub issued_at: String,
}

/// A page of `GET /certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CertificatePage {
    pub certificates: Vec<Certificate>,
    /// The `after` of the next page; `None` on the last.
    pub next_after: Option<u64>,
}

/// The body of `POST /widgets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewWidget {
    pub serial_number: String,
    pub name: String,
    /// 1 to 3 of `"P"`, `"R"`, `"Q"`.
    pub ports: Vec<String>,
}

/// A widget as `GET /widgets/{serial}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Widget {
    pub serial_number: String,
    pub name: String,
    pub ports: Vec<String>,
    pub associations: Vec<Link>,
    /// Free slots by port type.
    pub free: BTreeMap<String, u64>,
}

/// One association seen from a widget.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    pub port: String,
    pub peer: String,
}

/// The answer of `POST /widgets/{serial}/associations`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Association {
    pub serial_number: String,
    pub peer: String,
    pub port: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct AssociationWrite<'a> {
    pub peer: &'a str,
    pub port: &'a str,
}
