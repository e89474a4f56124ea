//! Attribute values and the item type, the small vocabulary every item mapping here uses.

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use strata_core::Error;

/// An item as the SDK reads and writes it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Typed reads of an item's attributes.
///
/// `num` (and [`Attrs`]' `num` and `text`) are for attributes the item must have: a missing or malformed
/// one is an internal error naming it ("item attribute version is missing or not a number");
/// [`ItemExt::attrs`] names the item otherwise in those errors.
pub(crate) trait ItemExt {
    /// A number attribute, if the item has one.
    fn num_opt(&self, name: &str) -> Option<u64>;
    /// A string attribute, if the item has one.
    fn text_opt(&self, name: &str) -> Option<&str>;
    /// The item, its errors calling an attribute `"{what} {name}"`.
    fn attrs(&self, what: &'static str) -> Attrs<'_>;

    /// A number attribute the item must have.
    fn num(&self, name: &str) -> Result<u64, Error> {
        self.attrs("item attribute").num(name)
    }
}

impl ItemExt for Item {
    fn num_opt(&self, name: &str) -> Option<u64> {
        self.get(name)?.as_n().ok()?.parse().ok()
    }

    fn text_opt(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_s().ok().map(String::as_str)
    }

    fn attrs(&self, what: &'static str) -> Attrs<'_> {
        Attrs { item: self, what }
    }
}

/// An item whose errors call its attributes `"{what} {name}"` ("ledger item attribute next ...").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attrs<'a> {
    item: &'a Item,
    what: &'static str,
}

impl<'a> Attrs<'a> {
    /// A number attribute the item must have.
    pub(crate) fn num(self, name: &str) -> Result<u64, Error> {
        self.item
            .num_opt(name)
            .ok_or_else(|| self.missing(name, "a number"))
    }

    /// A string attribute the item must have.
    pub(crate) fn text(self, name: &str) -> Result<&'a str, Error> {
        self.item
            .text_opt(name)
            .ok_or_else(|| self.missing(name, "a string"))
    }

    fn missing(self, name: &str, kind: &str) -> Error {
        Error::internal(format!("{} {name} is missing or not {kind}", self.what))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_attributes_name_themselves_when_missing_or_malformed() {
        let item = Item::from([("v".to_owned(), n(7)), ("t".to_owned(), s("x"))]);
        assert_eq!(item.num("v").unwrap(), 7);
        assert_eq!(item.text_opt("t"), Some("x"));
        assert_eq!(item.num_opt("t"), None);
        assert_eq!(
            item.num("t").unwrap_err().message,
            "item attribute t is missing or not a number"
        );
        assert_eq!(
            item.attrs("ledger item attribute")
                .text("v")
                .unwrap_err()
                .message,
            "ledger item attribute v is missing or not a string"
        );
    }
}
