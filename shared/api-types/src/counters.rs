//! The counter bodies (CONTRACT.md §4): `/increment`.

use crate::schema::{NO_CONTROL, integer, string};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The longest counter key in bytes (`strata_core::counters::MAX_KEY_BYTES`, which the service checks is
/// the same).
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest total, 2^63 - 1 (`strata_core::counters::MAX_TOTAL`, likewise).
pub const MAX_TOTAL: u64 = i64::MAX as u64;

/// The schema of a counter key: what `strata_core::counters::CounterKey::parse` accepts.
#[derive(Debug)]
pub struct CounterKeyString;

impl PartialSchema for CounterKeyString {
    fn schema() -> RefOr<Schema> {
        string(
            Some("1 to 1024 bytes of UTF-8 without control characters (spaces are fine)."),
            Some(1),
            Some(MAX_KEY_BYTES),
            Some(NO_CONTROL),
        )
        .into()
    }
}

impl ToSchema for CounterKeyString {}

/// An increment: any `u64` (the total is bounded, not the increment).
fn increment_value() -> utoipa::openapi::Object {
    integer(0, Some(u64::MAX))
}

/// A total, or an accepted increment that fits in one: `0..=MAX_TOTAL`.
fn total() -> utoipa::openapi::Object {
    integer(0, Some(MAX_TOTAL))
}

fn new_total() -> utoipa::openapi::Object {
    ObjectBuilder::from(total())
        .description(Some("The new total."))
        .build()
}

/// The body of `POST /increment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct Increment {
    #[schema(value_type = CounterKeyString)]
    pub key: String,
    /// What to add.
    #[schema(schema_with = increment_value)]
    pub value: u64,
}

/// Strong mode's answer to an increment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct CounterTotalAfter {
    #[schema(value_type = CounterKeyString)]
    pub key: String,
    /// The new total.
    #[schema(schema_with = new_total)]
    pub value: u64,
}

/// Eventual mode's answer to an increment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct CounterAccepted {
    #[schema(value_type = CounterKeyString)]
    pub key: String,
    /// The increment, durably logged; folded into the total once.
    #[schema(schema_with = total)]
    pub accepted: u64,
}

/// The answer of `GET /increment/{key}`: `{"<key>": total}`, one property. Its JSON and its schema are
/// written by hand (the key is the property's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterTotal {
    /// The counter's key.
    pub key: String,
    /// The total folded so far.
    pub total: u64,
}

impl Serialize for CounterTotal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(&self.key, &self.total)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for CounterTotal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneProperty;

        impl<'de> Visitor<'de> for OneProperty {
            type Value = CounterTotal;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with one property, a counter's key and its total")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CounterTotal, A::Error> {
                let (key, total) = map
                    .next_entry()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(2, &self));
                }
                Ok(CounterTotal { key, total })
            }
        }

        deserializer.deserialize_map(OneProperty)
    }
}

impl PartialSchema for CounterTotal {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "One property: the counter's key, whose value is its total.",
            ))
            .min_properties(Some(1))
            .max_properties(Some(1))
            .additional_properties(Some(AdditionalProperties::RefOr(total().into())))
            .into()
    }
}

impl ToSchema for CounterTotal {}
