//! The fault plan: which faults, at which rates, on which operations and tables, and the slow mode.

use super::request::contains;
use super::*;

/// The faults the proxy injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    AppliedThenDelayed,
    AppliedThen500,
    Before500,
    Throttle,
    ResetMidAnswer,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::AppliedThenDelayed,
        FaultKind::AppliedThen500,
        FaultKind::Before500,
        FaultKind::Throttle,
        FaultKind::ResetMidAnswer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::AppliedThenDelayed => "applied_then_delayed",
            FaultKind::AppliedThen500 => "applied_then_500",
            FaultKind::Before500 => "before_500",
            FaultKind::Throttle => "throttle",
            FaultKind::ResetMidAnswer => "reset_mid_answer",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the write reaches DynamoDB.
    pub fn forwards(self) -> bool {
        !matches!(self, FaultKind::Before500 | FaultKind::Throttle)
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The operations that are faulted.
pub const WRITE_OPERATIONS: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

/// Extra latency before forwarding.
#[derive(Debug, Clone)]
pub struct Slow {
    pub delay: Duration,
    /// Only requests of this operation (`GetItem`, ...); `None`: every request.
    pub operation: Option<String>,
    /// Only requests whose body contains this text (an expression's placeholder, `":committed"`, picks one
    /// kind of write among the `TransactWriteItems`); `None`: any body.
    pub body_contains: Option<String>,
}

/// What the proxy does; replaceable at runtime.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Per kind, the fraction of (matching) writes that get it. Kinds missing are off. If the rates add up
    /// past 1, every write is faulted and the later kinds get what is left.
    pub rates: BTreeMap<FaultKind, f64>,
    /// How long [`FaultKind::AppliedThenDelayed`] holds the answer.
    pub delay: Duration,
    /// Fault only these operations (`None`: every write operation); a read is faulted only when named.
    pub operations: Option<BTreeSet<String>>,
    /// Fault only writes that touch one of these tables (`None`: writes to any table).
    pub tables: Option<BTreeSet<String>>,
    /// Fault only writes whose body contains this text (an item's key, `"cert#"`); `None`: any body.
    pub body_contains: Option<String>,
    /// At most this many faults more (each one injected counts it down); `None`: no limit.
    pub budget: Option<u64>,
    pub slow: Option<Slow>,
    /// Ask every call for its consumed capacity and count it ([`Stats::metered`]).
    pub meter: bool,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::healthy()
    }
}

impl FaultConfig {
    /// Forward everything untouched.
    pub fn healthy() -> Self {
        Self {
            rates: BTreeMap::new(),
            delay: Duration::from_millis(3500),
            operations: None,
            tables: None,
            body_contains: None,
            budget: None,
            slow: None,
            meter: false,
        }
    }

    /// With the metering mode on.
    pub fn metered(mut self) -> Self {
        self.meter = true;
        self
    }

    /// One kind at `rate`.
    pub fn only(kind: FaultKind, rate: f64) -> Self {
        Self::split(rate, &[kind])
    }

    /// `total` split evenly across `kinds`.
    pub fn split(total: f64, kinds: &[FaultKind]) -> Self {
        let mut config = Self::healthy();
        if !kinds.is_empty() {
            let each = total / kinds.len() as f64;
            config.rates = kinds.iter().map(|k| (*k, each)).collect();
        }
        config
    }

    /// Faults only on these operations.
    pub fn on(mut self, operations: &[&str]) -> Self {
        self.operations = Some(operations.iter().map(|o| o.to_string()).collect());
        self
    }

    /// Faults only on writes that touch one of these tables.
    pub fn on_tables(mut self, tables: &[&str]) -> Self {
        self.tables = Some(tables.iter().map(|t| t.to_string()).collect());
        self
    }

    /// Faults only on writes whose body contains `text`.
    pub fn matching(mut self, text: &str) -> Self {
        self.body_contains = Some(text.to_owned());
        self
    }

    /// At most `n` faults, then healthy.
    pub fn at_most(mut self, n: u64) -> Self {
        self.budget = Some(n);
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_slow(mut self, delay: Duration, operation: Option<&str>) -> Self {
        self.slow = Some(Slow {
            delay,
            operation: operation.map(str::to_owned),
            body_contains: None,
        });
        self
    }

    /// Slow mode for the requests of `operation` whose body contains `text` only.
    pub fn with_slow_matching(mut self, delay: Duration, operation: &str, text: &str) -> Self {
        self.slow = Some(Slow {
            delay,
            operation: Some(operation.to_owned()),
            body_contains: Some(text.to_owned()),
        });
        self
    }

    /// The sum of the rates.
    pub fn total_rate(&self) -> f64 {
        self.rates.values().sum()
    }

    pub(super) fn faults(&self, operation: &str, tables: &BTreeSet<String>, body: &[u8]) -> bool {
        // Writes, or the operations named (a read such as `Scan` only when named).
        self.operations
            .as_ref()
            .map_or(WRITE_OPERATIONS.contains(&operation), |ops| {
                ops.contains(operation)
            })
            && self
                .body_contains
                .as_ref()
                .is_none_or(|text| contains(body, text))
            && self
                .tables
                .as_ref()
                .is_none_or(|only| tables.iter().any(|t| only.contains(t)))
            && self.total_rate() > 0.0
            && self.budget != Some(0)
    }

    /// The kind for a draw `u` in `0..1`, if any.
    pub(super) fn pick(&self, u: f64) -> Option<FaultKind> {
        let mut upto = 0.0;
        for (kind, rate) in &self.rates {
            upto += rate.max(0.0);
            if u < upto {
                return Some(*kind);
            }
        }
        None
    }
}
