//! Driving the functions: event files edited and sent through each function's real handler, on stores
//! whose client records every call, behind a fault proxy.

use super::*;
use strata_tests::events;

/// The handler the Lambda binary runs for `function` (as `strata_api::lambda` picks it).
pub(super) fn handler_of(function: &str) -> Handler {
    strata_api::function(function)
        .and_then(|f| f.handler())
        .unwrap_or_else(|| panic!("no HTTP or WebSocket handler serves function {function}"))
}

/// Edits of an event file.
pub(super) fn body(e: &mut Value, body: impl Into<String>) {
    e["body"] = json!(body.into());
    e["isBase64Encoded"] = json!(false);
}
pub(super) fn param(e: &mut Value, name: &str, value: &str) {
    e["pathParameters"][name] = json!(value);
}
pub(super) fn key(e: &mut Value, idempotency_key: &str) {
    e["headers"]["idempotency-key"] = json!(idempotency_key);
}
pub(super) fn no_key(e: &mut Value) {
    if let Some(headers) = e["headers"].as_object_mut() {
        headers.remove("idempotency-key");
    }
}

/// The stores of both counter modes on one recorded client through a fault proxy, and a client that goes
/// straight to DynamoDB Local for the test's own reads.
pub(super) struct Driver {
    pub(super) recorder: Recorder,
    pub(super) strong: Stores,
    pub(super) eventual: Stores,
    pub(super) proxy: FaultProxy,
    /// The recorded client the stores use.
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) tables: Tables,
    pub(super) driven: std::sync::Mutex<BTreeSet<&'static str>>,
}

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) text: String,
}

impl Reply {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl Driver {
    pub(super) async fn new() -> Self {
        let endpoint = strata_tests::dynamodb::endpoint();
        let direct = strata::dynamodb_local::local_client(endpoint).await;
        let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
        let tables = strata::dynamodb_local::create_tables(&direct, &prefix)
            .await
            .expect("tables are created");
        let proxy = FaultProxy::start(endpoint, 14, FaultConfig::healthy()).await;
        let sdk = strata_tests::dynamodb::sdk_config(&proxy.url).await;
        let recorder = Recorder::new(&prefix);
        // strata's own client (retries, timeouts), as the Lambdas build it, with the recorder on it.
        let client = recorder.client(&strata_dynamo::config::client(&sdk));
        let strong = strata_dynamo::stores(client.clone(), tables.clone(), &Settings::default());
        let eventual = strata_dynamo::stores(
            client.clone(),
            tables.clone(),
            &Settings {
                counter_mode: strata_core::counters::Mode::Eventual,
                ..Settings::default()
            },
        );
        Self {
            recorder,
            strong,
            eventual,
            proxy,
            client,
            tables,
            driven: Default::default(),
        }
    }

    /// `function`'s event file, edited, through its handler, on the strong-counter stores.
    pub(super) async fn call(
        &self,
        function: &'static str,
        edit: impl FnOnce(&mut Value),
    ) -> Reply {
        self.call_on(&self.strong, function, edit).await
    }

    pub(super) async fn call_on(
        &self,
        stores: &Stores,
        function: &'static str,
        edit: impl FnOnce(&mut Value),
    ) -> Reply {
        invoke(
            self.recorder.clone(),
            stores.clone(),
            function,
            self.request(function, edit),
        )
        .await
    }

    pub(super) fn request(
        &self,
        function: &'static str,
        edit: impl FnOnce(&mut Value),
    ) -> lambda_http::Request {
        self.driven.lock().unwrap().insert(function);
        let mut e = events::json(function);
        edit(&mut e);
        lambda_http::request::from_str(&e.to_string())
            .unwrap_or_else(|err| panic!("{function}: {err}"))
    }

    /// The event file as it is.
    pub(super) async fn event(&self, function: &'static str) -> Reply {
        self.call(function, |_| {}).await
    }

    /// Runs `f` with `config` on the proxy, then heals it.
    pub(super) async fn faulted<F: Future>(&self, config: FaultConfig, f: F) -> F::Output {
        self.proxy.set(config);
        let out = f.await;
        self.proxy.set(FaultConfig::healthy());
        out
    }
}

/// One lost answer of `operation` (applied, then a 500).
pub(super) fn lost(operation: &str, n: u64) -> FaultConfig {
    FaultConfig::only(FaultKind::AppliedThen500, 1.0)
        .on(&[operation])
        .at_most(n)
}

/// `request` through `function`'s handler, recorded as that function.
pub(super) async fn invoke(
    recorder: Recorder,
    stores: Stores,
    function: &'static str,
    request: lambda_http::Request,
) -> Reply {
    let handler = handler_of(function);
    let response = recorder
        .run(
            function,
            strata_core::deadline::within(strata_http::REQUEST_BUDGET, handler(&stores, request)),
        )
        .await;
    Reply {
        status: response.status(),
        text: String::from_utf8_lossy(response.body().as_ref()).into_owned(),
    }
}

pub(super) fn assert_status(reply: &Reply, status: StatusCode, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text);
}
