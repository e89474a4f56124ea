//! Building the client and finding the tables.

use aws_sdk_dynamodb::Client;
use std::sync::Arc;
use strata_core::{Backend, Error, Settings, Stores};

/// The table names of one deployment.
#[derive(Debug, Clone)]
pub struct Tables {
    pub kv: String,
    pub kv_tx: String,
    pub ledger: String,
    pub counters: String,
    pub counter_log: String,
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
            idempotency: var("IDEMPOTENCY_TABLE")?,
            ws_sessions: var("WS_SESSION_TABLE")?,
            widgets: var("WIDGET_TABLE")?,
        })
    }
}

/// The ports on DynamoDB, sharing one client.
pub fn stores(client: Client, tables: Tables, settings: &Settings) -> Stores {
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
        )),
        counters: Arc::new(crate::counters::DynamoCounters::new(
            client.clone(),
            tables.counters,
            tables.counter_log,
            settings.counter_mode,
        )),
        idempotency: Arc::new(crate::idempotency::DynamoIdempotency::new(
            client,
            tables.idempotency,
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
    Ok(stores(
        Client::new(&config),
        Tables::from_env()?,
        &Settings::from_env()?,
    ))
}
