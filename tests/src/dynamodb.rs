//! DynamoDB for tests: DynamoDB Local started once per run, or an endpoint given in `AWS_ENDPOINT_URL`.

use aws_sdk_dynamodb::Client;
use std::sync::OnceLock;
use strata::dynamodb_local::{DynamoDbLocal, create_tables, local_client};
use strata_dynamo::Tables;

enum Endpoint {
    /// Started by this process; the watchdog stops it when the process exits.
    Local(DynamoDbLocal),
    External(String),
}

static ENDPOINT: OnceLock<Endpoint> = OnceLock::new();

/// The endpoint every DynamoDB test of this run uses.
pub fn endpoint() -> &'static str {
    let endpoint = ENDPOINT.get_or_init(|| match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => Endpoint::External(url),
        _ => Endpoint::Local(DynamoDbLocal::start(0).unwrap_or_else(|e| {
            panic!("cannot start DynamoDB Local (needs Java 17+ and Node.js 20+ with npm): {e}")
        })),
    });
    match endpoint {
        Endpoint::Local(local) => &local.endpoint,
        Endpoint::External(url) => url,
    }
}

/// A client for this test (clients are not shared across tests: each test has its own async runtime) and
/// freshly created tables under a unique prefix.
pub async fn fresh_tables() -> (Client, Tables) {
    let client = local_client(endpoint()).await;
    let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
    let tables = create_tables(&client, &prefix)
        .await
        .expect("tables are created");
    (client, tables)
}

/// The SDK configuration of a client on `endpoint` (DynamoDB Local, or the fault proxy in front of it), with
/// the fixed local credentials and region, from which `strata_dynamo::config::client` builds strata's client.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "tests",
        ))
        .load()
        .await
}
