//! The ports a handler can reach, bundled so one value wires a whole deployment.

use crate::certificates::{ClassCode, Ledger, default_classes, parse_default_classes};
use crate::counters::{Counters, Mode};
use crate::idempotency::Idempotency;
use crate::kv::KvStore;
use crate::kv::line::Connections;
use crate::kv::tx::KvTransactions;
use crate::widgets::Widgets;
use std::sync::Arc;
use std::time::Duration;

/// Which backend serves the ports; reported by `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// fjall in a local data directory (`strata serve`).
    Embedded,
    /// DynamoDB (the Lambda functions, or `strata serve --store dynamodb`).
    DynamoDb,
}

impl Backend {
    /// Every backend (the values `GET /health` may report).
    pub const ALL: [Backend; 2] = [Backend::Embedded, Backend::DynamoDb];

    /// The backend's name, as `GET /health` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::DynamoDb => "dynamodb",
        }
    }
}

/// Every store port, each behind a trait object so handlers never know which backend they talk to.
#[derive(Clone)]
pub struct Stores {
    /// Which backend these are.
    pub backend: Backend,
    /// The key/value port.
    pub kv: Arc<dyn KvStore>,
    /// The key/value transactions port.
    pub kv_tx: Arc<dyn KvTransactions>,
    /// The certificate ledger port.
    pub ledger: Arc<dyn Ledger>,
    /// The counters port.
    pub counters: Arc<dyn Counters>,
    /// The widgets port.
    pub widgets: Arc<dyn Widgets>,
    /// The `Idempotency-Key` records of every service.
    pub idempotency: Arc<dyn Idempotency>,
    /// Open transactions of WebSocket connections (line protocol).
    pub connections: Arc<dyn Connections>,
}

impl Stores {
    /// Tells the stores that take an idempotency key how its request ended (see [`Ledger::settled`]).
    pub async fn settled(&self, request_id: &str, recorded: bool) {
        self.ledger.settled(request_id, recorded).await;
        self.counters.settled(request_id, recorded).await;
    }
}

// The ports are trait objects without `Debug`; the backend says which they are.
impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Tunables that every backend honours the same way; their defaults are in [`crate::defaults`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a key/value transaction may sit idle before it expires.
    pub tx_idle_timeout: Duration,
    /// Share classes that exist from the first start, with their authorized shares.
    pub default_classes: Vec<(ClassCode, u64)>,
    /// Strong or eventual counters.
    pub counter_mode: Mode,
    /// How long records kept for idempotency or exactly-once (`Idempotency-Key` responses, counter request
    /// markers, the ledger's request records) are remembered; afterwards they may be swept.
    pub retention: Duration,
    /// Most key/value transactions open at once (embedded store; on DynamoDB each costs storage, not
    /// memory, and expires through TTL).
    pub max_open_transactions: usize,
    /// Most bytes all open key/value transactions may buffer together (embedded store).
    pub max_transaction_memory: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tx_idle_timeout: crate::defaults::TX_IDLE_TIMEOUT,
            default_classes: default_classes(),
            counter_mode: crate::defaults::COUNTER_MODE,
            retention: crate::defaults::RETENTION,
            max_open_transactions: crate::defaults::MAX_OPEN_TRANSACTIONS,
            max_transaction_memory: crate::defaults::MAX_TRANSACTION_MEMORY,
        }
    }
}

impl Settings {
    /// From the environment the template sets (`KV_TX_IDLE_TIMEOUT_SECONDS`, `DEFAULT_SHARE_CLASSES` as
    /// `CS=2600000,PS=750000`, `COUNTER_MODE`, `RETENTION_SECONDS`), defaults otherwise.
    pub fn from_env() -> Result<Self, crate::Error> {
        let mut settings = Self::default();
        if let Ok(raw) = std::env::var("KV_TX_IDLE_TIMEOUT_SECONDS") {
            let seconds: u64 = raw.parse().map_err(|_| {
                crate::Error::internal(format!(
                    "KV_TX_IDLE_TIMEOUT_SECONDS is not a number of seconds: {raw:?}"
                ))
            })?;
            settings.tx_idle_timeout = Duration::from_secs(seconds);
        }
        if let Ok(raw) = std::env::var("RETENTION_SECONDS") {
            let seconds: u64 = raw.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                crate::Error::internal(format!(
                    "RETENTION_SECONDS is not a positive number of seconds: {raw:?}"
                ))
            })?;
            settings.retention = Duration::from_secs(seconds);
        }
        if let Ok(raw) = std::env::var("COUNTER_MODE") {
            settings.counter_mode = Mode::parse(&raw)?;
        }
        if let Ok(raw) = std::env::var("DEFAULT_SHARE_CLASSES") {
            settings.default_classes = parse_default_classes(&raw)?;
        }
        Ok(settings)
    }
}
