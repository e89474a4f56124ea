//! A backend under test, and an HTTP client that goes through the local server's router in-process.

use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use strata_core::{Settings, Stores};
use tower::ServiceExt;

/// One backend, ready to serve.
pub struct Fixture {
    pub name: &'static str,
    pub stores: Stores,
    pub app: App,
    /// The embedded store and its directory (None on DynamoDB), kept alive for the test.
    pub embedded: Option<(strata_embedded::Store, tempfile::TempDir)>,
}

impl Fixture {
    pub async fn embedded() -> Self {
        Self::embedded_with(Settings::default()).await
    }

    pub async fn embedded_with(settings: Settings) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = strata_embedded::Store::open(dir.path()).expect("embedded store opens");
        let stores = store.stores(&settings);
        Self {
            name: "embedded",
            app: App::new(stores.clone()),
            stores,
            embedded: Some((store, dir)),
        }
    }

    pub async fn dynamodb() -> Self {
        Self::dynamodb_with(Settings::default()).await
    }

    pub async fn dynamodb_with(settings: Settings) -> Self {
        let (client, tables) = crate::dynamodb::fresh_tables().await;
        if settings.counter_mode == strata_core::counters::Mode::Eventual {
            // What the counters-aggregate Lambda does on AWS: fold every batch its stream delivers.
            let aggregator = strata_dynamo::aggregator::Aggregator::new(client.clone(), &tables)
                .with_retention(settings.retention);
            let mut reader = crate::streams::StreamReader::open(
                crate::dynamodb::endpoint(),
                &tables.counter_log,
            )
            .await;
            tokio::spawn(async move {
                loop {
                    let event = reader.next_event().await;
                    let entries = strata_counters::stream::entries(&event);
                    if let Err(e) = aggregator.fold(entries).await {
                        eprintln!("fold failed (the batch is not redelivered here): {e}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            });
        }
        let stores = strata_dynamo::stores(client, tables, &settings);
        Self {
            name: "dynamodb",
            app: App::new(stores.clone()),
            stores,
            embedded: None,
        }
    }
}

/// DynamoDB stores on fresh tables of the run's DynamoDB, reached through `endpoint` (a
/// [`crate::fault_proxy::FaultProxy`] in front of it) with strata's own client, as `strata serve --store
/// dynamodb` builds it; with the table names and a client straight to DynamoDB, to see what really got
/// written.
pub struct Through {
    pub fixture: Fixture,
    pub tables: strata_dynamo::Tables,
    pub direct: aws_sdk_dynamodb::Client,
}

impl Fixture {
    pub async fn dynamodb_through(endpoint: &str, settings: Settings) -> Through {
        let (direct, tables) = crate::dynamodb::fresh_tables().await;
        let sdk = crate::dynamodb::sdk_config(endpoint).await;
        let client = strata_dynamo::config::client(&sdk);
        // The SDK keeps its retry quota (a token bucket that 5xx and timeouts drain) per retry partition,
        // for the whole process. A partition of its own makes this test's stores one deployment, as one
        // Lambda instance is: another test's storm of failing writes cannot use up its retries.
        let partition = aws_sdk_dynamodb::config::retry::RetryPartition::new(format!(
            "dynamodb-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let client = aws_sdk_dynamodb::Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_partition(partition)
                .build(),
        );
        let stores = strata_dynamo::stores(client, tables.clone(), &settings);
        Through {
            fixture: Self {
                name: "dynamodb",
                app: App::new(stores.clone()),
                stores,
                embedded: None,
            },
            tables,
            direct,
        }
    }
}

/// Sends requests through the local server's router (the same adapter and handlers as `strata serve`),
/// or through the router behind the token check of `strata serve --auth-token` ([`App::authenticated`]),
/// every request then carrying `Authorization: Bearer TOKEN` unless it has an `Authorization` of its own.
#[derive(Clone)]
pub struct App {
    router: axum::Router,
    token: Option<String>,
}

/// A response: status, headers and the body parsed as JSON (`Value::Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `error.code` of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl App {
    pub fn new(stores: Stores) -> Self {
        Self::with_token(stores, None)
    }

    /// The router behind the very token check `strata serve --auth-token TOKEN` puts in front of it.
    pub fn authenticated(stores: Stores, token: &str) -> Self {
        Self::with_token(stores, Some(token))
    }

    pub fn with_token(stores: Stores, token: Option<&str>) -> Self {
        let mut router = strata::server::router(Arc::new(stores));
        if let Some(token) = token {
            let parsed = strata::auth::AuthToken::parse(token).expect("a valid token");
            router = strata::server::authenticated(router, parsed);
        }
        Self {
            router,
            token: token.map(str::to_owned),
        }
    }

    /// The token every request carries, if this app is behind the token check.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The request with this app's `Authorization`, unless it has one.
    fn authorize(&self, mut request: Request<Body>) -> Request<Body> {
        if let Some(token) = &self.token
            && !request.headers().contains_key(http::header::AUTHORIZATION)
        {
            request.headers_mut().insert(
                http::header::AUTHORIZATION,
                format!("Bearer {token}")
                    .parse()
                    .expect("a visible ASCII token"),
            );
        }
        request
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, body.into_bytes()).await
    }

    pub async fn raw(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("valid request");
        self.send(request).await
    }

    /// A request whose answer is text, not JSON (`POST /kv/commands`).
    pub async fn text(&self, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .expect("valid request");
        let response = self
            .router
            .clone()
            .oneshot(self.authorize(request))
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8(bytes.to_vec()).expect("UTF-8"))
    }

    /// Sends a request built by the caller (custom headers and all).
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let path = request.uri().path().to_owned();
        let response = self
            .router
            .clone()
            .oneshot(self.authorize(request))
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(&body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(&body)).await
    }

    /// `POST` with an `Idempotency-Key`.
    pub async fn post_keyed(&self, path: &str, key: &str, body: Value) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .expect("valid request");
        self.send(request).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }
}

/// The token of the contract suite's run behind `--auth-token`.
pub const CONTRACT_TOKEN: &str = "contract-suite-token-0123456789";

impl Fixture {
    /// This fixture's app behind the token check of `strata serve --auth-token` (every request of the app
    /// carries the token).
    pub fn with_auth_token(mut self, token: &str) -> Self {
        self.app = App::authenticated(self.stores.clone(), token);
        self
    }

    /// The embedded store behind the token check, as the contract suite's third run has it.
    pub async fn embedded_authenticated() -> Self {
        Self::embedded().await.with_auth_token(CONTRACT_TOKEN)
    }
}

/// Runs a contract test against both backends, and on the embedded store once more through the token
/// check of `strata serve --auth-token` (every request carrying the token): `contract!(fn_a, fn_b)` makes
/// `embedded::fn_a`, `dynamodb::fn_a`, `authenticated::fn_a`, ... each calling `fn_a(Fixture)`.
#[macro_export]
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::fixture::Fixture::embedded().await).await
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::fixture::Fixture::dynamodb().await).await
                }
            )*
        }
        mod authenticated {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::fixture::Fixture::embedded_authenticated().await).await
                }
            )*
        }
    };
}

/// Makes the next commits of a fixture fail the way a store that cannot take writes fails them: on the
/// embedded store the writer refuses the batch (as a full disk does); on DynamoDB the commit answers `503
/// store_unavailable` before it reaches the table (as after the SDK's retries of an outage).
#[derive(Clone)]
pub enum CommitFaults {
    Embedded(strata_embedded::Store),
    DynamoDb(Arc<FlakyCommits>),
}

impl CommitFaults {
    /// The next `n` commits (on DynamoDB) or write batches (embedded) are refused.
    pub fn refuse_next(&self, n: usize) {
        match self {
            CommitFaults::Embedded(store) => store.inject_refused_batches(n),
            CommitFaults::DynamoDb(flaky) => {
                flaky.refuse.store(n, std::sync::atomic::Ordering::SeqCst)
            }
        }
    }
}

impl Fixture {
    /// This fixture with commit faults on demand.
    pub fn with_commit_faults(mut self) -> (Self, CommitFaults) {
        let faults = match &self.embedded {
            Some((store, _)) => CommitFaults::Embedded(store.clone()),
            None => {
                let flaky = Arc::new(FlakyCommits {
                    inner: self.stores.kv_tx.clone(),
                    refuse: std::sync::atomic::AtomicUsize::new(0),
                });
                self.stores.kv_tx = flaky.clone();
                self.app = App::with_token(self.stores.clone(), self.app.token());
                CommitFaults::DynamoDb(flaky)
            }
        };
        (self, faults)
    }
}

/// A transaction port whose next commits answer `503 store_unavailable` without reaching the store.
pub struct FlakyCommits {
    inner: Arc<dyn strata_core::kv::tx::KvTransactions>,
    refuse: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl strata_core::kv::tx::KvTransactions for FlakyCommits {
    async fn begin(
        &self,
        id: strata_core::kv::tx::TxId,
    ) -> Result<strata_core::kv::tx::Began, strata_core::Error> {
        self.inner.begin(id).await
    }

    async fn get(
        &self,
        id: &strata_core::kv::tx::TxId,
        key: &strata_core::kv::Key,
    ) -> Result<Option<strata_core::kv::tx::TxValue>, strata_core::Error> {
        self.inner.get(id, key).await
    }

    async fn stage(
        &self,
        id: &strata_core::kv::tx::TxId,
        key: &strata_core::kv::Key,
        value: Option<strata_core::kv::Value>,
    ) -> Result<(), strata_core::Error> {
        self.inner.stage(id, key, value).await
    }

    async fn commit(&self, id: &strata_core::kv::tx::TxId) -> Result<usize, strata_core::Error> {
        use std::sync::atomic::Ordering;
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(strata_core::Error::unavailable(
                "injected: the store cannot take writes",
            ));
        }
        self.inner.commit(id).await
    }

    async fn rollback(&self, id: &strata_core::kv::tx::TxId) -> Result<(), strata_core::Error> {
        self.inner.rollback(id).await
    }
}
