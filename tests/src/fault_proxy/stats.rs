//! What went through the proxy: requests per operation and table, writes per item, faults, and the metered
//! capacity.

use super::config::FaultKind;
use super::*;

/// What went through the proxy.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests per operation.
    pub by_operation: BTreeMap<String, u64>,
    /// Requests per (operation, table); a request touching several tables counts once for each.
    pub by_table: BTreeMap<(String, String), u64>,
    pub faults: BTreeMap<FaultKind, u64>,
    pub faults_by_operation: BTreeMap<(FaultKind, String), u64>,
    /// Writes per item: `(table, key as JSON)` → writes addressed to it.
    pub by_item: BTreeMap<(String, String), u64>,
    /// Write units the requests cost, by DynamoDB's rule for items up to 1 KB.
    pub write_units: u64,
    /// Requests delayed by the slow mode.
    pub slowed: u64,
    /// Forwarded requests whose upstream call failed (answered `502`).
    pub upstream_errors: u64,
    /// Metering mode: what each operation consumed.
    pub metered: BTreeMap<String, Metered>,
    /// Metering mode: WRU per item (`(table, key as JSON)`), for items written by key (see [`Metered`]).
    pub item_units: BTreeMap<(String, String), f64>,
}

/// What the calls of one operation consumed, as DynamoDB bills it.
///
/// Units of single-item calls, queries and scans are DynamoDB Local's figures (`ConsumedCapacity`, sized
/// from the items as DynamoDB sizes them): a call's `WriteCapacityUnits` and `ReadCapacityUnits` where the
/// answer splits them, else its `CapacityUnits` as write units for a write operation and read units for a
/// read. DynamoDB Local reports an empty `Query` or `Scan` as 0 units.
///
/// Transactions are sized by the meter itself: DynamoDB Local reports one item's units per table however
/// many items a transaction has there (2 for one small item, 2 for three). DynamoDB bills every item of a
/// transaction twice: a write by the larger of the item's sizes before and after, per started KB (a
/// condition check by the item's size), a read per started 4 KB. So the meter reads each item of a
/// transaction before forwarding it and after (calls of its own, not counted), computes its size by
/// DynamoDB's rules ([`item_size`]) and charges `2 × max(1, ⌈size / unit⌉)` per action. Exact for calls one
/// after the other; under concurrency another client's write between those reads can shift a figure.
/// `tests/suite/cost.rs` holds the meter to known calls.
///
/// A refused write (a failed condition, a cancelled transaction) is billed too, but its answer carries no
/// figure: it is counted in `refused` and charged the floor, 1 WRU per item (2 per action of a
/// transaction).
///
/// Per item: a write's units go to its key (`PutItem` has no key in its request, so its units count in the
/// totals only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metered {
    pub calls: u64,
    /// Items the calls wrote (an action of a transaction or a batch is one), condition checks included.
    pub items: u64,
    pub wru: f64,
    pub rru: f64,
    /// Writes refused by DynamoDB (charged the floor, see above).
    pub refused: u64,
}

impl Metered {
    pub(super) fn add(&mut self, other: &Metered) {
        self.calls += other.calls;
        self.items += other.items;
        self.wru += other.wru;
        self.rru += other.rru;
        self.refused += other.refused;
    }
}

impl Stats {
    pub fn requests(&self, operation: &str) -> u64 {
        self.by_operation.get(operation).copied().unwrap_or(0)
    }

    pub fn requests_on(&self, operation: &str, table: &str) -> u64 {
        self.by_table
            .get(&(operation.to_owned(), table.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Writes to the item of `table` whose key is `key` (`{"key": {"S": "hot"}}`).
    pub fn writes_to(&self, table: &str, key: &Value) -> u64 {
        self.by_item
            .get(&(table.to_owned(), key.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults.get(&kind).copied().unwrap_or(0)
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    pub fn total_requests(&self) -> u64 {
        self.by_operation.values().sum()
    }

    /// Metering mode: everything, all operations together.
    pub fn metered_total(&self) -> Metered {
        let mut total = Metered::default();
        for m in self.metered.values() {
            total.add(m);
        }
        total
    }

    /// Metering mode: the item that took the most WRU, and how many.
    pub fn hottest_item(&self) -> Option<((String, String), f64)> {
        self.item_units
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, v)| (k.clone(), *v))
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ops: Vec<String> = self
            .by_operation
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        writeln!(
            f,
            "DynamoDB requests {} ({})",
            self.total_requests(),
            ops.join(", ")
        )?;
        let faults: Vec<String> = FaultKind::ALL
            .iter()
            .map(|k| format!("{k} {}", self.faults_of(*k)))
            .collect();
        write!(
            f,
            "faults injected  {} ({})",
            self.total_faults(),
            faults.join(", ")
        )?;
        if self.slowed > 0 {
            write!(f, "; {} slowed", self.slowed)?;
        }
        if self.upstream_errors > 0 {
            write!(f, "; {} upstream errors", self.upstream_errors)?;
        }
        Ok(())
    }
}
