//! Stock certificates (CONTRACT.md §2): per share class, certificate numbers 1, 2, 3, … with no gaps and no
//! duplicates whatever the concurrency, retries and crashes, and never more shares than authorized.
//!
//! Every store allocates a number and records the certificate in one atomic step (DynamoDB: the share-class
//! item is the serialization point; embedded: one writer command). Each issue carries a request id, the
//! client's `Idempotency-Key` when it sent one: issuing twice with one request id yields one certificate.

use crate::Error;
use async_trait::async_trait;
use std::time::SystemTime;

/// Largest amount or authorization: 2^53 − 1, the largest integer every JSON client reads exactly.
pub const MAX_SHARES: u64 = (1 << 53) - 1;
/// Longest holder name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Most certificates one listing page returns.
pub const MAX_PAGE: u32 = 1000;
/// Certificates one listing page returns when the client does not say.
pub const DEFAULT_PAGE: u32 = 100;

/// A share class code: 1 to 8 letters A–Z (`CS`, `PS`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassCode(String);

impl ClassCode {
    /// Validates a client's class code (`400 invalid_class` otherwise).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if (1..=8).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Error::invalid(
                "invalid_class",
                format!(
                    "a share class code is 1 to 8 letters A-Z, not {}",
                    crate::error::quote(raw)
                ),
            )
            .with("field", "class"))
        }
    }

    /// The code as written, e.g. `CS`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A certificate id as clients see it: `<class>-<number>`, e.g. `CS-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateId {
    /// The class the certificate belongs to.
    pub class: ClassCode,
    /// Its number within the class, from 1.
    pub number: u64,
}

impl CertificateId {
    /// Anything that is not an id we could have issued is an unknown certificate (`404`).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let unknown = || {
            Error::not_found(
                "certificate_not_found",
                format!("no certificate {}", crate::error::quote(raw)),
            )
        };
        let (class, number) = raw.split_once('-').ok_or_else(unknown)?;
        let class = ClassCode::parse(class).map_err(|_| unknown())?;
        if number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let number = number.parse().map_err(|_| unknown())?;
        Ok(Self { class, number })
    }
}

impl std::fmt::Display for CertificateId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.class.as_str(), self.number)
    }
}

/// A holder name: 1 to 256 characters.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(Error::invalid_field(
            "name",
            format!("`name` must be 1 to {MAX_NAME_CHARS} characters, not {chars}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            "name",
            "`name` must not contain control characters",
        ));
    }
    Ok(())
}

/// A share class and its running totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareClass {
    /// The class's code.
    pub class: ClassCode,
    /// Shares the class may issue at most.
    pub authorized: u64,
    /// Shares issued so far (the sum of every certificate's amount).
    pub issued: u64,
    /// The number the next certificate gets (certificates issued so far + 1).
    pub next_number: u64,
}

impl ShareClass {
    /// Shares still to issue: `authorized - issued`.
    pub fn remaining(&self) -> u64 {
        self.authorized - self.issued
    }
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The class it is of.
    pub class: ClassCode,
    /// Its number within the class: 1, 2, … without gaps.
    pub number: u64,
    /// The holder's name.
    pub name: String,
    /// Shares it holds.
    pub amount: u64,
    /// When it was issued.
    pub issued_at: SystemTime,
}

impl Certificate {
    /// Its id as clients see it, `<class>-<number>`.
    pub fn id(&self) -> String {
        format!("{}-{}", self.class.as_str(), self.number)
    }
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// The class to issue from.
    pub class: ClassCode,
    /// The holder's name.
    pub name: String,
    /// Shares to issue.
    pub amount: u64,
}

/// What a ledger does with the certificate an earlier issue with the same idempotency key made: the same
/// request gets it back while the key's record holds (until `expires_at`: the configured retention,
/// [`crate::Settings::retention`], after the issue; see [`crate::retention`]); another request under that key is
/// `422 idempotency_key_reused`; from `expires_at` on the key is free (`Ok(None)`: issue anew, a new
/// certificate, whatever the request).
pub fn replay_of(
    request: &IssueRequest,
    earlier: Certificate,
    expires_at: SystemTime,
    now: SystemTime,
) -> Result<Option<Certificate>, Error> {
    if crate::retention::is_expired(expires_at, now) {
        return Ok(None);
    }
    if earlier.class != request.class
        || earlier.name != request.name
        || earlier.amount != request.amount
    {
        return Err(crate::idempotency::mismatch());
    }
    Ok(Some(earlier))
}

/// Shares are short: `409 insufficient_shares` with what is left; no number was used.
pub fn insufficient(class: &ClassCode, remaining: u64, amount: u64) -> Error {
    Error::conflict(
        "insufficient_shares",
        format!(
            "class {} has {remaining} shares left, {amount} were requested",
            class.as_str()
        ),
    )
    .with("remaining", remaining)
}

/// `404 class_not_found`: the class does not exist and is not a default one.
pub fn class_not_found(class: &ClassCode) -> Error {
    Error::not_found(
        "class_not_found",
        format!("no share class {}", class.as_str()),
    )
}

/// The authorization may not drop below what is already issued.
pub fn below_issued(class: &ClassCode, issued: u64, authorized: u64) -> Error {
    Error::conflict(
        "authorized_below_issued",
        format!(
            "class {} has {issued} shares issued; the authorization cannot drop to {authorized}",
            class.as_str()
        ),
    )
    .with("issued", issued)
}

/// The share classes that exist from the first start, unless configured otherwise: [`crate::defaults::SHARE_CLASSES`].
pub fn default_classes() -> Vec<(ClassCode, u64)> {
    parse_default_classes(crate::defaults::SHARE_CLASSES)
        .expect("defaults::SHARE_CLASSES parses (tested)")
}

/// Parses `CS=2600000,PS=750000` (an empty string: no default classes).
pub fn parse_default_classes(raw: &str) -> Result<Vec<(ClassCode, u64)>, Error> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let bad = || {
                Error::invalid(
                    "invalid_default_classes",
                    format!("{pair:?} is not CLASS=AUTHORIZED"),
                )
            };
            let (class, authorized) = pair.split_once('=').ok_or_else(bad)?;
            let authorized: u64 = authorized.trim().parse().map_err(|_| bad())?;
            if authorized > MAX_SHARES {
                return Err(bad());
            }
            Ok((ClassCode::parse(class.trim())?, authorized))
        })
        .collect()
}

/// The ledger port.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Creates the class or changes its authorization (never below the shares already issued).
    async fn put_class(&self, class: &ClassCode, authorized: u64) -> Result<ShareClass, Error>;
    /// The class with its totals, or `None` if it does not exist (a default class exists from the start).
    async fn get_class(&self, class: &ClassCode) -> Result<Option<ShareClass>, Error>;
    /// Allocates the next number and stores the certificate, atomically and durably. With a `request_id`
    /// (the client's idempotency key), the same id always yields the same certificate, even across crashes.
    async fn issue(
        &self,
        request: &IssueRequest,
        request_id: Option<&str>,
    ) -> Result<Certificate, Error>;
    /// The certificate, or `None` if that number was never issued.
    async fn get_certificate(&self, id: &CertificateId) -> Result<Option<Certificate>, Error>;
    /// Certificates of a class numbered above `after`, in number order, at most `limit`.
    async fn list(
        &self,
        class: &ClassCode,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Certificate>, Error>;
    /// The HTTP layer's word on a request this store ran with `request_id`: its answer is now recorded
    /// for its key (`recorded`), or never will be (released after a `5xx`, or the record's write failed).
    /// A store that keeps a request's memory in the item it wrote, so that a retry after a crash finds it,
    /// may let that memory go once the answer is recorded: a retry then gets the recorded answer. Never
    /// fails: a memory kept too long costs bytes, not correctness.
    async fn settled(&self, _request_id: &str, _recorded: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_codes() {
        for ok in ["CS", "PS", "A", "ABCDEFGH"] {
            assert_eq!(ClassCode::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "cs", "C1", "ABCDEFGHI", "C S", "É"] {
            assert_eq!(
                ClassCode::parse(bad).unwrap_err().code,
                "invalid_class",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn certificate_ids() {
        let id = CertificateId::parse("CS-12").unwrap();
        assert_eq!(
            (id.class.as_str(), id.number, id.to_string()),
            ("CS", 12, "CS-12".to_owned())
        );
        for bad in [
            "CS",
            "CS-",
            "CS-0",
            "CS-01",
            "cs-1",
            "CS-1-2",
            "CS--1",
            "CS-+1",
            "-1",
            "CS-99999999999999999999",
        ] {
            assert_eq!(
                CertificateId::parse(bad).unwrap_err().code,
                "certificate_not_found",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("Salt Bae").is_ok());
        assert!(validate_name(&"é".repeat(256)).is_ok());
        for bad in [String::new(), "é".repeat(257), "a\u{0}b".into()] {
            assert_eq!(validate_name(&bad).unwrap_err().extra["field"], "name");
        }
    }

    #[test]
    fn default_classes_parse() {
        let parsed = parse_default_classes("CS=2600000, PS=750000").unwrap();
        assert_eq!(parsed, default_classes());
        assert_eq!(
            default_classes(),
            [
                (ClassCode("CS".into()), 2_600_000),
                (ClassCode("PS".into()), 750_000)
            ]
        );
        assert!(parse_default_classes("").unwrap().is_empty());
        for bad in ["CS", "CS=x", "cs=1", "CS=9007199254740992"] {
            assert!(parse_default_classes(bad).is_err(), "{bad:?}");
        }
    }
}
