//! Attribute values and the item type, the small vocabulary every item mapping here uses.

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// An item as the SDK reads and writes it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// A number attribute of `item`, if it has one.
pub(crate) fn num(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// A string attribute of `item`, if it has one.
pub(crate) fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

/// The attribute every expiring item carries: when (whole seconds since the epoch) DynamoDB may delete it.
/// The template enables `TimeToLiveSpecification` on it for every table that holds such items. DynamoDB
/// deletes lazily (up to days late), so readers and conditional writes compare it (or a finer deadline
/// kept beside it) with the clock themselves, see [`strata_core::retention`].
pub const TTL: &str = "ttl";

/// A string attribute.
pub(crate) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// A number attribute.
pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
