//! The last few writes of an item, by token: how a write whose answer was lost finds out whether it applied.
//!
//! A write that must not apply twice (see [`crate::send::unrepeatable`]) carries a fresh token and pushes
//! `(token, number it left)` onto the item's history, `h0`/`g0` the newest, in the same update. When the
//! answer is lost, one consistent read tells: the token is there (applied; and what it left, e.g. the
//! version), or it is not (not applied, still in flight, or pushed out by [`DEPTH`] later writes): then the
//! outcome is unknown, and the write is never sent again.

use crate::attr::{Item, ItemExt, n, s};
use crate::send::{WithinDeadline, outcome_unknown};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use strata_core::Error;

/// Writes remembered per item. Pushed out only by this many writes of the same item before the read that
/// looks for the token, which follows the lost answer at once.
pub(crate) const DEPTH: usize = 4;

/// A fresh token for one write.
pub(crate) fn token() -> String {
    strata_core::kv::tx::TxId::generate().as_str().to_owned()
}

/// `SET` clauses (without the keyword) that push the write's token (`:htok`) and `after`, an operand that
/// evaluates to the number the write leaves (computed from the item before the write).
pub(crate) fn push(after: &str) -> String {
    let mut clauses = Vec::with_capacity(2 * DEPTH);
    for i in (1..DEPTH).rev() {
        clauses.push(format!("#h{i} = if_not_exists(#h{}, :hnone)", i - 1));
        clauses.push(format!("#g{i} = if_not_exists(#g{}, :hzero)", i - 1));
    }
    clauses.push("#h0 = :htok".to_owned());
    clauses.push(format!("#g0 = {after}"));
    clauses.join(", ")
}

/// The expression attribute names [`push`] uses.
pub(crate) fn names() -> HashMap<String, String> {
    (0..DEPTH)
        .flat_map(|i| {
            [
                (format!("#h{i}"), format!("h{i}")),
                (format!("#g{i}"), format!("g{i}")),
            ]
        })
        .collect()
}

/// The expression attribute values [`push`] uses (`:hzero` may serve the caller's own expression too).
pub(crate) fn values(token: &str) -> Item {
    HashMap::from([
        (":htok".to_owned(), s(token)),
        (":hnone".to_owned(), s("-")),
        (":hzero".to_owned(), n(0)),
    ])
}

/// After the write with `token` to the item `key` (attribute, value) of `table` lost its answer: what it
/// left, read back from the item with one consistent read, or "outcome unknown" (`503`) when the item does
/// not remember it or cannot be read.
pub(crate) async fn read_back(
    client: &Client,
    table: &str,
    key: (&str, &str),
    token: &str,
) -> Result<u64, Error> {
    let out = client
        .get_item()
        .table_name(table)
        .key(key.0, s(key.1))
        .consistent_read(true)
        .send()
        .within_deadline()
        .await
        .map_err(|_| outcome_unknown("UpdateItem"))?;
    out.item
        .and_then(|item| find(&item, token))
        .ok_or_else(|| outcome_unknown("UpdateItem"))
}

/// What the write with `token` left, if the item still remembers it.
pub(crate) fn find(item: &Item, token: &str) -> Option<u64> {
    (0..DEPTH).find_map(|i| {
        if item.text_opt(&format!("h{i}"))? != token {
            return None;
        }
        item.num_opt(&format!("g{i}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_write_is_first_and_older_ones_shift() {
        let expression = push("#ver + :one");
        assert!(expression.starts_with("#h3 = if_not_exists(#h2, :hnone)"));
        assert!(expression.ends_with("#h0 = :htok, #g0 = #ver + :one"));
        let item = HashMap::from([
            ("h0".to_owned(), s("b")),
            ("g0".to_owned(), n(7)),
            ("h1".to_owned(), s("a")),
            ("g1".to_owned(), n(6)),
        ]);
        assert_eq!(find(&item, "a"), Some(6));
        assert_eq!(find(&item, "b"), Some(7));
        assert_eq!(find(&item, "c"), None);
    }
}
