//! The ledger's items: keys, slots, intents, and their attributes read back.

use super::{
    AMOUNT, AT, AUTHORIZED, CLASS, ID, INTENT_KEPT, ISSUED, LEDGER, N, NAME, NEXT, NUMBER,
    PENDING_NUMBERS, PK, UNTIL,
};
use crate::attr::{Item, ItemExt, TTL, n, s};
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_core::Error;
use strata_core::certificates::{Certificate, ClassCode, ShareClass};
use strata_core::retention::{is_expired, ttl_seconds};

/// A request's name in the class item: `r` (with an idempotency key) or `u`, 12 characters of a SHA-256 of
/// its id (72 bits: ids of other requests, another caller's keys included, do not collide with it), then
/// its time in tenths of a second, base 36 (7 characters until 2217), so that anyone can tell an abandoned
/// slot and find its intent.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Slot {
    /// The first 13 characters: kind and hash; the intent's key.
    pub(super) request: String,
    /// The request's time, to the tenth of a second below.
    pub(super) at_ms: u64,
}

impl Slot {
    pub(super) fn new(request_id: &str, at_ms: u64) -> Self {
        Self {
            request: request_of(request_id),
            at_ms: at_ms / 100 * 100,
        }
    }

    pub(super) fn name(&self) -> String {
        format!("{}{}", self.request, base36(self.at_ms / 100))
    }

    pub(super) fn parse(name: &str) -> Option<Self> {
        let (request, at) = (name.get(..13)?, name.get(13..)?);
        let tenths = u64::from_str_radix(at, 36).ok()?;
        matches!(&request[..1], "r" | "u").then(|| Self {
            request: request.to_owned(),
            at_ms: tenths * 100,
        })
    }

    pub(super) fn keyed(&self) -> bool {
        self.request.starts_with('r')
    }

    /// The intent's item key.
    pub(super) fn intent_key(&self) -> Item {
        intent_key(&self.request)
    }
}

/// `r`/`u` and 12 characters of the SHA-256 of a request id.
fn request_of(request_id: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let digest = Sha256::digest(request_id.as_bytes());
    let mut out = String::with_capacity(13);
    out.push(if request_id.starts_with('r') {
        'r'
    } else {
        'u'
    });
    // 9 bytes, 6 bits a character.
    let bits = digest[..9]
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    for i in (0..12).rev() {
        out.push(ALPHABET[((bits >> (i * 6)) & 63) as usize] as char);
    }
    out
}

fn intent_key(request: &str) -> Item {
    let prefix = if request.starts_with('r') {
        "req"
    } else {
        "int"
    };
    key(format!("{prefix}#{request}"), 0)
}

fn base36(mut v: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII")
}

pub(super) fn key(pk: String, number: u64) -> Item {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk)),
        (N.to_owned(), n(number)),
    ])
}

pub(super) fn class_key(class: &ClassCode) -> Item {
    key(format!("class#{}", class.as_str()), 0)
}

pub(super) fn certificate_key(class: &ClassCode, number: u64) -> Item {
    key(format!("cert#{}", class.as_str()), number)
}

pub(super) fn decode_class(class: &ClassCode, item: &Item) -> Result<ShareClass, Error> {
    let item = item.attrs(LEDGER);
    Ok(ShareClass {
        class: class.clone(),
        authorized: item.num(AUTHORIZED)?,
        issued: item.num(ISSUED)?,
        next_number: item.num(NEXT)?,
    })
}

pub(super) fn decode_certificate(class: &ClassCode, item: &Item) -> Result<Certificate, Error> {
    let item = item.attrs(LEDGER);
    Ok(Certificate {
        class: class.clone(),
        number: item.num(N)?,
        name: item.text(NAME)?.to_owned(),
        amount: item.num(AMOUNT)?,
        issued_at: UNIX_EPOCH + Duration::from_millis(item.num(AT)?),
    })
}

/// The slots of a class item, with their numbers.
pub(crate) fn slots(item: &Item) -> Vec<(String, u64)> {
    item.get(PENDING_NUMBERS)
        .and_then(|p| p.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(name, v)| Some((name.clone(), v.as_n().ok()?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// An issue's intent, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Intent {
    pub(crate) id: String,
    pub(crate) class: ClassCode,
    /// Name and amount: absent from a record imported without them (it has its number).
    pub(crate) name: Option<String>,
    pub(crate) amount: Option<u64>,
    pub(crate) at_ms: u64,
    pub(crate) until_ms: u64,
    pub(crate) number: Option<u64>,
}

impl Intent {
    pub(crate) fn decode(item: &Item) -> Result<Self, Error> {
        let required = item.attrs(LEDGER);
        Ok(Self {
            id: required.text(ID)?.to_owned(),
            class: ClassCode::parse(required.text(CLASS)?)?,
            name: item.text_opt(NAME).map(str::to_owned),
            amount: item.num_opt(AMOUNT),
            at_ms: required.num(AT)?,
            until_ms: required.num(UNTIL)?,
            number: item.num_opt(NUMBER),
        })
    }

    pub(super) fn certificate(&self, number: u64) -> Result<Certificate, Error> {
        let missing = || Error::internal(format!("intent {} has no name or amount", self.id));
        Ok(Certificate {
            class: self.class.clone(),
            number,
            name: self.name.clone().ok_or_else(missing)?,
            amount: self.amount.ok_or_else(missing)?,
            issued_at: UNIX_EPOCH + Duration::from_millis(self.at_ms),
        })
    }

    pub(super) fn expired(&self) -> bool {
        is_expired(
            UNIX_EPOCH + Duration::from_millis(self.until_ms),
            SystemTime::now(),
        )
    }
}

/// The item of an intent (see the module docs).
pub(crate) fn intent_item(
    request_id: &str,
    class: &str,
    name_amount: Option<(&str, u64)>,
    at_ms: u64,
    until_ms: u64,
    number: Option<u64>,
) -> Item {
    let mut item = intent_key(&request_of(request_id));
    item.insert(ID.into(), s(request_id));
    item.insert(CLASS.into(), s(class));
    if let Some((name, amount)) = name_amount {
        item.insert(NAME.into(), s(name));
        item.insert(AMOUNT.into(), n(amount));
    }
    item.insert(AT.into(), n(at_ms));
    item.insert(UNTIL.into(), n(until_ms));
    if let Some(number) = number {
        item.insert(NUMBER.into(), n(number));
    }
    let until = UNIX_EPOCH + Duration::from_millis(until_ms);
    item.insert(TTL.into(), n(ttl_seconds(until + INTENT_KEPT)));
    item
}

/// The request id's intent key in the ledger table (for export and import).
pub(super) fn intent_key_of(request_id: &str) -> Item {
    intent_key(&request_of(request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_names_its_request_and_time_in_20_characters() {
        let slot = Slot::new("rmy-key", 1_800_000_000_123);
        let name = slot.name();
        assert_eq!(name.len(), 20, "{name}");
        assert!(name.starts_with('r'));
        assert_eq!(Slot::parse(&name), Some(slot.clone()));
        assert_eq!(slot.at_ms, 1_800_000_000_100);
        assert_ne!(
            Slot::new("rmy-kez", 1_800_000_000_123).request,
            slot.request
        );
        assert!(Slot::new("uabc", 1).request.starts_with('u'));
        assert_eq!(Slot::parse("short"), None);
    }
}
