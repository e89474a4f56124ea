//! The defaults of every setting, declared once: [`crate::Settings::default`], the `strata serve` command
//! line (its `default_value`s are these constants) and the template's parameter defaults all take them from
//! here, so none of them restates a value.
//!
//! | setting | `strata serve` | environment (Lambda) | template parameter |
//! |---|---|---|---|
//! | [`TX_IDLE_TIMEOUT`] (at most [`TX_IDLE_TIMEOUT_MAX`]) | `--tx-idle-timeout` | `KV_TX_IDLE_TIMEOUT_SECONDS` | `TxIdleTimeoutSeconds` |
//! | [`RETENTION`] | `--retention-seconds` | `RETENTION_SECONDS` | `RetentionSeconds` |
//! | [`COUNTER_MODE`] | `--counter-mode` | `COUNTER_MODE` | `CounterMode` |
//! | [`SHARE_CLASSES`] | `--default-classes` | `DEFAULT_SHARE_CLASSES` | `DefaultShareClasses` |
//! | [`MAX_OPEN_TRANSACTIONS`] | `--max-open-transactions` | — | — |
//! | [`MAX_TRANSACTION_MEMORY`] | `--max-transaction-memory-mb` (in MiB) | — | — |
//! | [`LINE_MAX_CONNECTIONS`] | `--max-line-connections` | — | — |
//! | [`LINE_IDLE_TIMEOUT`] | `--line-idle-timeout` | — | — |
//! | [`WS_MAX_CONNECTIONS`] | `--max-websockets` | — | — |
//! | [`WS_IDLE_TIMEOUT`] | `--ws-idle-timeout` | — | — |
//! | [`LINE_BUFFER_BUDGET`] | `--line-buffer-mb` (in MiB) | — | — |
//! | [`HTTP_MAX_CONNECTIONS`] | `--max-connections` | — | — |
//! | [`HTTP_READ_TIMEOUT`] | `--read-timeout` | — | — |
//! | [`EMBEDDED_CACHE_MB`] | `--cache-mb` | — | — |

use crate::counters::Mode;
use std::time::Duration;

/// How long a key/value transaction may sit idle before it expires.
pub const TX_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest idle timeout a key/value transaction may be given.
pub const TX_IDLE_TIMEOUT_MAX: Duration = Duration::from_secs(86_400);

/// How long records kept for idempotency and exactly-once are remembered (the contract promises at least
/// 24 hours with the defaults).
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How increments reach the totals.
pub const COUNTER_MODE: Mode = Mode::Strong;

/// The share classes that exist from the first start, as `CLASS=AUTHORIZED,…`
/// ([`crate::certificates::parse_default_classes`]; [`crate::certificates::default_classes`] parsed).
pub const SHARE_CLASSES: &str = "CS=2600000,PS=750000";

/// Most key/value transactions open at once on the embedded store.
pub const MAX_OPEN_TRANSACTIONS: usize = 4096;
/// Most bytes all open key/value transactions of the embedded store may buffer together: with the rest of
/// the server, well under 512 MiB resident.
pub const MAX_TRANSACTION_MEMORY: u64 = 256 * 1024 * 1024;

/// Most line-protocol TCP connections open at once; one over it gets
/// [`crate::kv::line::too_many_connections`] and is closed, the open ones are not affected.
pub const LINE_MAX_CONNECTIONS: usize = 1024;
/// How long a line-protocol TCP connection may send nothing (or take none of its replies) before it is
/// closed and its open transaction rolled back; the same as a transaction's idle timeout.
pub const LINE_IDLE_TIMEOUT: Duration = TX_IDLE_TIMEOUT;

/// Local WebSockets (`GET /kv/ws`) open at once; at the cap the one idle the longest gives way.
pub const WS_MAX_CONNECTIONS: usize = 1024;
/// How long a local WebSocket may send nothing before it is closed and its open transaction rolled back.
pub const WS_IDLE_TIMEOUT: Duration = LINE_IDLE_TIMEOUT;

/// Bytes all line-protocol TCP connections together may hold in partial lines and unwritten replies.
pub const LINE_BUFFER_BUDGET: u64 = 128 * 1024 * 1024;

/// HTTP connections the local server serves at once.
pub const HTTP_MAX_CONNECTIONS: usize = 4096;
/// Time a client of the local server has to send a request's headers, or its body.
pub const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Block cache of the local server's embedded store, in MiB. Any large read (an export, the sweeper's scan)
/// fills it, so it counts in the server's memory whatever the working set: 64 MiB holds a laptop's hot keys
/// and keeps an export of a 2 GB store under 256 MB resident.
pub const EMBEDDED_CACHE_MB: u64 = 64;
