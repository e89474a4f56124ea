//! Building the client and finding the tables.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use std::sync::Arc;
use std::time::Duration;
use strata_core::{Backend, Error, Settings, Stores};

/// Most attempts the SDK makes for one DynamoDB call (the first and two retries), with the standard retry
/// mode's jittered exponential backoff between them. Throttling, 5xx answers, timeouts and connection
/// failures are retried; after the last attempt the request answers `429 store_throttled` (throttling) or
/// `503 store_unavailable` (anything else transient), both with `retry-after`, and the client retries.
/// More attempts here would only hold a Lambda (and its API Gateway request, 29 s at most) longer.
pub const MAX_ATTEMPTS: u32 = 3;
/// The first retry waits up to this long (jittered), each later one twice as long ...
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// ... but never longer than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Establishing a connection to DynamoDB; a healthy endpoint answers in milliseconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt, from sending to the whole answer: a 100-item `TransactWriteItems` takes well under a
/// second, so an attempt that takes this long is stuck, and another attempt is the better bet.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// One call with all its attempts and backoffs: the most a request waits for DynamoDB before it answers.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(8);

/// The DynamoDB client strata uses everywhere: `sdk`'s credentials, region and endpoint, with the bounded
/// retries and timeouts above (the SDK's defaults have no operation timeout at all).
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(INITIAL_BACKOFF)
                .with_max_backoff(MAX_BACKOFF),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// The table names of one deployment.
#[derive(Debug, Clone)]
pub struct Tables {
    pub kv: String,
    pub kv_tx: String,
    pub ledger: String,
    pub counters: String,
    pub counter_log: String,
    /// Markers of the keyed eventual increments folded (see [`crate::aggregator`]).
    pub counter_markers: String,
    pub idempotency: String,
    pub ws_sessions: String,
    pub widgets: String,
}

impl Tables {
    /// Reads the names the template sets (`KV_TABLE`, ...).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Looks each name up by its environment variable's name.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let var = |name: &str| {
            lookup(name)
                .ok_or_else(|| Error::internal(format!("environment variable {name} is not set")))
        };
        Ok(Self {
            kv: var("KV_TABLE")?,
            kv_tx: var("KV_TX_TABLE")?,
            ledger: var("LEDGER_TABLE")?,
            counters: var("COUNTER_TABLE")?,
            counter_log: var("COUNTER_LOG_TABLE")?,
            counter_markers: var("COUNTER_MARKER_TABLE")?,
            idempotency: var("IDEMPOTENCY_TABLE")?,
            ws_sessions: var("WS_SESSION_TABLE")?,
            widgets: var("WIDGET_TABLE")?,
        })
    }
}

/// The ports on DynamoDB, sharing one client.
pub fn stores(client: Client, tables: Tables, settings: &Settings) -> Stores {
    stores_waking(client, tables, settings, None)
}

/// [`stores`] whose eventual counters notify `logged` after each entry they log (the local fold loop's
/// [`crate::aggregator::Aggregator::logged`]).
pub fn stores_waking(
    client: Client,
    tables: Tables,
    settings: &Settings,
    logged: Option<Arc<tokio::sync::Notify>>,
) -> Stores {
    let mut counters = crate::counters::DynamoCounters::new(
        client.clone(),
        tables.counters,
        tables.counter_log,
        tables.counter_markers,
        settings.counter_mode,
        settings.retention,
    );
    if let Some(logged) = logged {
        counters = counters.waking(logged);
    }
    let client_for_connections = client.clone();
    let widgets = Arc::new(crate::widgets::DynamoWidgets::new(
        client.clone(),
        tables.widgets.clone(),
    ));
    Stores {
        backend: Backend::DynamoDb,
        kv: Arc::new(crate::kv::DynamoKv::new(client.clone(), tables.kv.clone())),
        kv_tx: Arc::new(crate::kv_tx::DynamoKvTx::new(
            client.clone(),
            tables.kv,
            tables.kv_tx,
            settings.tx_idle_timeout,
        )),
        ledger: Arc::new(crate::ledger::DynamoLedger::new(
            client.clone(),
            tables.ledger,
            settings.default_classes.clone(),
            settings.retention,
        )),
        counters: Arc::new(counters),
        idempotency: Arc::new(crate::idempotency::DynamoIdempotency::new(
            client,
            tables.idempotency,
            settings.retention,
        )),
        widgets,
        connections: Arc::new(crate::connections::DynamoConnections::new(
            client_for_connections,
            tables.ws_sessions,
        )),
    }
}

/// The ports for a Lambda or `strata serve --store dynamodb`: credentials, region and endpoint from the
/// environment (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_DYNAMODB` select DynamoDB Local or LocalStack).
pub async fn stores_from_env() -> Result<Stores, Error> {
    let config = aws_config::load_from_env().await;
    let client = client(&config);
    let (tables, settings) = (Tables::from_env()?, Settings::from_env()?);
    connect(&client).await;
    Ok(stores(client, tables, &settings))
}

/// Opens the client's connection to DynamoDB (TCP and TLS) with one free call, so the first request does
/// not pay the handshake: on Lambda, init runs at full CPU and the instance is then frozen between
/// invocations at its memory's share. `DescribeEndpoints` reads no table and costs no units; its answer
/// does not matter (an error answer still leaves the connection open in the client's pool), and a failure
/// here is only logged: the first request connects then. Every function's role is granted it
/// (`XRayWritePolicy` in `template.yaml`: it takes no resource-level permission).
pub async fn connect(client: &Client) {
    if let Err(e) = client.describe_endpoints().send().await {
        tracing::debug!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "DescribeEndpoints during init");
    }
}
