//! What each function asks of DynamoDB, as IAM sees it: an SDK interceptor on the client the stores use
//! reads every request just before it is sent (the `x-amz-target` header and the JSON body) and records
//! `(IAM action, table)` under the function the test is running at that moment (a task-local set by
//! [`Recorder::run`]).
//!
//! Calls map to IAM actions the way DynamoDB authorizes them: `GetItem`, `PutItem`, `UpdateItem`,
//! `DeleteItem`, `Query`, `Scan` as themselves; `TransactWriteItems` per action (`Put` is `PutItem`, `Update`
//! is `UpdateItem`, `Delete` is `DeleteItem`, `ConditionCheck` is `ConditionCheckItem`) on each action's
//! table; `TransactGetItems` as `GetItem` on each table; `BatchWriteItem` and `BatchGetItem` as themselves on
//! each table. Tables are named by the template's logical ids (the tests name them `<prefix><LogicalId>`);
//! a query on an index is on `<LogicalId>/index/*`.
//!
//! The recorder can also refuse the next call of an action on a table before it leaves (as a connection that
//! fails before DynamoDB sees anything), to drive the paths that run only after a failed call.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

tokio::task_local! {
    static FUNCTION: &'static str;
}

/// The function calls are recorded under when no [`Recorder::run`] is around them.
pub const UNATTRIBUTED: &str = "<no function>";

/// `(IAM action, table logical id)`, e.g. `("dynamodb:GetItem", "KvTable")`.
pub type Grant = (String, String);

/// Records per function; clones share the record.
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Table names start with this; the rest is the logical id.
    prefix: String,
    calls: Mutex<BTreeMap<String, BTreeSet<Grant>>>,
    /// `(IAM action, table)` → how many more such requests to fail before sending.
    refusals: Mutex<BTreeMap<Grant, u32>>,
}

impl Recorder {
    /// A recorder for tables named `<prefix><LogicalId>`.
    pub fn new(prefix: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                prefix: prefix.to_owned(),
                calls: Mutex::new(BTreeMap::new()),
                refusals: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// `client` with this recorder's interceptor added (same endpoint, credentials, retries and timeouts).
    pub fn client(&self, client: &Client) -> Client {
        let config = client
            .config()
            .to_builder()
            .interceptor(Interceptor {
                recorder: self.clone(),
            })
            .build();
        Client::from_conf(config)
    }

    /// Runs `f` as `function`: every DynamoDB request it makes is recorded under that name.
    pub async fn run<F: Future>(&self, function: &'static str, f: F) -> F::Output {
        FUNCTION.scope(function, f).await
    }

    /// Everything recorded so far: function → what it called.
    pub fn calls(&self) -> BTreeMap<String, BTreeSet<Grant>> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// The next `n` requests that include `action` on `table` fail before they are sent.
    pub fn refuse_next(&self, action: &str, table: &str, n: u32) {
        self.inner
            .refusals
            .lock()
            .unwrap()
            .insert((action.to_owned(), table.to_owned()), n);
    }

    fn logical(&self, name: &str) -> String {
        match name.strip_prefix(&self.inner.prefix) {
            Some(id) => id.to_owned(),
            None => format!("?{name}"),
        }
    }

    fn record(&self, operation: &str, body: &[u8]) -> Result<(), String> {
        let grants = grants_of(operation, body, |name| self.logical(name));
        let function = FUNCTION.try_with(|f| *f).unwrap_or(UNATTRIBUTED);
        self.inner
            .calls
            .lock()
            .unwrap()
            .entry(function.to_owned())
            .or_default()
            .extend(grants.iter().cloned());
        let mut refusals = self.inner.refusals.lock().unwrap();
        for grant in &grants {
            if let Some(left) = refusals.get_mut(grant).filter(|n| **n > 0) {
                *left -= 1;
                return Err(format!(
                    "refused by the test before sending: {} on {}",
                    grant.0, grant.1
                ));
            }
        }
        Ok(())
    }
}

/// The IAM actions and tables one request needs. `table` turns a physical table name into the name to
/// record.
pub fn grants_of(operation: &str, body: &[u8], table: impl Fn(&str) -> String) -> BTreeSet<Grant> {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut grants = BTreeSet::new();
    let mut add = |action: &str, name: &str, index: Option<&str>| {
        let mut resource = table(name);
        if index.is_some() {
            resource.push_str("/index/*");
        }
        grants.insert((format!("dynamodb:{action}"), resource));
    };
    match operation {
        "TransactWriteItems" => {
            for item in body["TransactItems"].as_array().into_iter().flatten() {
                for (kind, action) in [
                    ("Put", "PutItem"),
                    ("Update", "UpdateItem"),
                    ("Delete", "DeleteItem"),
                    ("ConditionCheck", "ConditionCheckItem"),
                ] {
                    if let Some(name) = item[kind]["TableName"].as_str() {
                        add(action, name, None);
                    }
                }
            }
        }
        "TransactGetItems" => {
            for item in body["TransactItems"].as_array().into_iter().flatten() {
                if let Some(name) = item["Get"]["TableName"].as_str() {
                    add("GetItem", name, None);
                }
            }
        }
        "BatchWriteItem" | "BatchGetItem" => {
            for name in body["RequestItems"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, _)| n)
            {
                add(operation, name, None);
            }
        }
        _ => match body["TableName"].as_str() {
            Some(name) => add(operation, name, body["IndexName"].as_str()),
            None => add(operation, "*", None),
        },
    }
    grants
}

#[derive(Debug)]
struct Interceptor {
    recorder: Recorder,
}

impl Intercept for Interceptor {
    fn name(&self) -> &'static str {
        "strata-tests-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        // `DynamoDB_20120810.GetItem`
        let operation = target.rsplit('.').next().unwrap_or(target);
        let body = request.body().bytes().unwrap_or_default();
        self.recorder.record(operation, body).map_err(|e| e.into())
    }
}
