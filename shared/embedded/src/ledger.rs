//! The certificate ledger on the embedded store.
//!
//! Keyspaces: `classes` (class code → authorized, issued, next number), `certificates` (class code, a zero
//! byte, the number big-endian → amount, issue time, name; so a range scan lists a class in number order) and
//! `requests` (request id → certificate key and expiry, for idempotent issues; see [`crate::retention`]). An issue is one writer command: it
//! checks the request id, the shares left, allocates the number and writes the certificate and the class in
//! the same durable batch, so a crash can never leave a gap or a duplicate.
//!
//! Default classes are not written at start-up: a default class that was never touched reads as freshly
//! created, and the first write stores it.

use crate::retention::after;
use crate::{Space, Store};
use async_trait::async_trait;
use fjall::Readable;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_core::Error;
use strata_core::certificates::{
    Certificate, CertificateId, ClassCode, IssueRequest, Ledger, ShareClass, below_issued,
    insufficient, replay_of,
};

#[derive(Debug)]
pub struct EmbeddedLedger {
    store: Store,
    defaults: Vec<(ClassCode, u64)>,
    /// How long an issue's request record holds.
    retention: Duration,
}

fn corrupt() -> Error {
    Error::internal("corrupt ledger record")
}

fn u64_at(bytes: &[u8], index: usize) -> Result<u64, Error> {
    let chunk = bytes.get(index * 8..index * 8 + 8).ok_or_else(corrupt)?;
    Ok(u64::from_be_bytes(chunk.try_into().map_err(|_| corrupt())?))
}

/// Format version, then authorized, issued and the next number (u64, big-endian each).
pub(crate) fn encode_class(c: &ShareClass) -> Vec<u8> {
    let mut out = crate::format::versioned(24);
    out.extend(
        [c.authorized, c.issued, c.next_number]
            .iter()
            .flat_map(|n| n.to_be_bytes()),
    );
    out
}

pub(crate) fn decode_class(class: &ClassCode, bytes: &[u8]) -> Result<ShareClass, Error> {
    let bytes = crate::format::payload("share class record", bytes)?;
    Ok(ShareClass {
        class: class.clone(),
        authorized: u64_at(bytes, 0)?,
        issued: u64_at(bytes, 1)?,
        next_number: u64_at(bytes, 2)?,
    })
}

pub(crate) fn certificate_key(class: &ClassCode, number: u64) -> Vec<u8> {
    let mut key = class.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

pub(crate) fn encode_certificate(c: &Certificate) -> Vec<u8> {
    let millis = strata_core::time::epoch_millis(c.issued_at);
    let mut out = crate::format::versioned(16 + c.name.len());
    out.extend_from_slice(&c.amount.to_be_bytes());
    out.extend_from_slice(&millis.to_be_bytes());
    out.extend_from_slice(c.name.as_bytes());
    out
}

pub(crate) fn decode_certificate(key: &[u8], value: &[u8]) -> Result<Certificate, Error> {
    let split = key.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
    let class = ClassCode::parse(std::str::from_utf8(&key[..split]).map_err(|_| corrupt())?)?;
    let number = u64::from_be_bytes(key[split + 1..].try_into().map_err(|_| corrupt())?);
    let value = crate::format::payload("certificate record", value)?;
    Ok(Certificate {
        class,
        number,
        amount: u64_at(value, 0)?,
        issued_at: UNIX_EPOCH + Duration::from_millis(u64_at(value, 1)?),
        name: String::from_utf8(value.get(16..).ok_or_else(corrupt)?.to_vec())
            .map_err(|_| corrupt())?,
    })
}

impl EmbeddedLedger {
    pub fn new(store: Store, defaults: Vec<(ClassCode, u64)>, retention: Duration) -> Self {
        Self {
            store,
            defaults,
            retention,
        }
    }

    /// A class as stored, or as a default class that was never touched reads.
    fn class_from(
        defaults: &[(ClassCode, u64)],
        class: &ClassCode,
        stored: Option<&[u8]>,
    ) -> Result<Option<ShareClass>, Error> {
        match stored {
            Some(bytes) => decode_class(class, bytes).map(Some),
            None => Ok(defaults
                .iter()
                .find(|(c, _)| c == class)
                .map(|(_, authorized)| ShareClass {
                    class: class.clone(),
                    authorized: *authorized,
                    issued: 0,
                    next_number: 1,
                })),
        }
    }
}

#[async_trait]
impl Ledger for EmbeddedLedger {
    async fn put_class(&self, class: &ClassCode, authorized: u64) -> Result<ShareClass, Error> {
        let (class, defaults) = (class.clone(), self.defaults.clone());
        self.store
            .write(move |staging| {
                let stored = staging.get(Space::Classes, class.as_str().as_bytes())?;
                let mut current = Self::class_from(&defaults, &class, stored.as_deref())?
                    .unwrap_or(ShareClass {
                        class: class.clone(),
                        authorized: 0,
                        issued: 0,
                        next_number: 1,
                    });
                if authorized < current.issued {
                    return Err(below_issued(&class, current.issued, authorized));
                }
                current.authorized = authorized;
                staging.put(
                    Space::Classes,
                    class.as_str().as_bytes().to_vec(),
                    encode_class(&current),
                );
                Ok(current)
            })
            .await
    }

    async fn get_class(&self, class: &ClassCode) -> Result<Option<ShareClass>, Error> {
        let stored = self.store.read(Space::Classes, class.as_str().as_bytes())?;
        Self::class_from(&self.defaults, class, stored.as_deref())
    }

    async fn issue(
        &self,
        request: &IssueRequest,
        request_id: Option<&str>,
    ) -> Result<Certificate, Error> {
        let (request, request_id, defaults, retention) = (
            request.clone(),
            request_id.map(str::to_owned),
            self.defaults.clone(),
            self.retention,
        );
        self.store
            .write(move |staging| {
                if let Some(id) = &request_id
                    && let Some(record) = staging.get(Space::Requests, id.as_bytes())?
                {
                    let (key, expires) = crate::retention::decode_request(&record)?;
                    let value = staging.get(Space::Certificates, key)?.ok_or_else(corrupt)?;
                    let earlier = decode_certificate(key, &value)?;
                    let expires_at = UNIX_EPOCH + Duration::from_millis(expires);
                    if let Some(certificate) =
                        replay_of(&request, earlier, expires_at, SystemTime::now())?
                    {
                        return Ok(certificate);
                    }
                }
                let stored = staging.get(Space::Classes, request.class.as_str().as_bytes())?;
                let mut class = Self::class_from(&defaults, &request.class, stored.as_deref())?
                    .ok_or_else(|| strata_core::certificates::class_not_found(&request.class))?;
                if class.remaining() < request.amount {
                    return Err(insufficient(
                        &request.class,
                        class.remaining(),
                        request.amount,
                    ));
                }
                let certificate = Certificate {
                    class: request.class.clone(),
                    number: class.next_number,
                    name: request.name,
                    amount: request.amount,
                    issued_at: SystemTime::now(),
                };
                class.next_number += 1;
                class.issued += request.amount;
                let key = certificate_key(&certificate.class, certificate.number);
                staging.put(
                    Space::Classes,
                    request.class.as_str().as_bytes().to_vec(),
                    encode_class(&class),
                );
                staging.put(
                    Space::Certificates,
                    key.clone(),
                    encode_certificate(&certificate),
                );
                if let Some(id) = request_id {
                    let expires =
                        strata_core::time::epoch_millis(after(certificate.issued_at, retention));
                    staging.put(
                        Space::Requests,
                        id.into_bytes(),
                        crate::retention::encode_request(&key, expires),
                    );
                }
                Ok(certificate)
            })
            .await
    }

    async fn get_certificate(&self, id: &CertificateId) -> Result<Option<Certificate>, Error> {
        let key = certificate_key(&id.class, id.number);
        match self.store.read(Space::Certificates, &key)? {
            Some(value) => decode_certificate(&key, &value).map(Some),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        class: &ClassCode,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Certificate>, Error> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let range = certificate_key(class, first)..=certificate_key(class, u64::MAX);
        let mut out = Vec::new();
        // A snapshot sees whole batches only, so a listing never shows a class ahead of its certificates.
        let view = self.store.view()?;
        for entry in view
            .snapshot()
            .range(view.space(Space::Certificates), range)
            .take(limit as usize)
        {
            let (key, value) = entry.into_inner().map_err(crate::store::fjall_error)?;
            out.push(decode_certificate(&key, &value)?);
        }
        Ok(out)
    }
}
