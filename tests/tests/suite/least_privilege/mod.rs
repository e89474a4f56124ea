//! Least privilege, proven both ways: every function is driven through its real handler on DynamoDB Local
//! (the event files of `infra/events/`, plus the requests that reach every code path that needs a grant,
//! lost answers and failed calls included), a recorder on the stores' client notes each `(IAM action,
//! table)` it asks for (`strata_tests::recorder`), and that must equal the DynamoDB grants of the function's
//! role in `template.yaml`: nothing it calls is missing (no `AccessDenied` after deploy), nothing granted
//! goes unused. Only the [`EXCEPTIONS`] may differ, each for the reason it gives.

mod certificates;
mod counters;
mod driver;
mod grants;
mod kv;
mod widgets;

use certificates::drive_certificates;
use counters::drive_counters;
use driver::{Driver, assert_status};
use grants::granted;
use http::StatusCode;
use kv::{drive_kv, drive_kv_transactions, drive_line_protocol};
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use strata::template::Template;
use strata_core::{Settings, Stores};
use strata_dynamo::Tables;
use strata_http::route::Handler;
use strata_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};
use strata_tests::recorder::{Grant, Recorder, UNATTRIBUTED, grants_of};
use strata_tests::template::get_att;
use widgets::drive_widgets;

/// A grant that may differ from what the function's code calls, and why.
struct Exception {
    function: &'static str,
    action: &'static str,
    /// A table's logical id, or `<LogicalId>/stream` for its stream.
    resource: &'static str,
    reason: &'static str,
}

/// The stream reads of the aggregator: Lambda's event source mapping polls the stream with the function's
/// role and hands the records to the function, whose code never calls the streams API. These are the four
/// actions AWS documents for a DynamoDB event source, on that one stream.
const EVENT_SOURCE_MAPPING: &str = "read by Lambda's event source mapping with the function's role \
     (the actions AWS documents for a DynamoDB stream event source), not by the function's code";

const EXCEPTIONS: &[Exception] = &[
    Exception {
        function: "counters-aggregate",
        action: "dynamodb:DescribeStream",
        resource: "CounterLogTable/stream",
        reason: EVENT_SOURCE_MAPPING,
    },
    Exception {
        function: "counters-aggregate",
        action: "dynamodb:GetRecords",
        resource: "CounterLogTable/stream",
        reason: EVENT_SOURCE_MAPPING,
    },
    Exception {
        function: "counters-aggregate",
        action: "dynamodb:GetShardIterator",
        resource: "CounterLogTable/stream",
        reason: EVENT_SOURCE_MAPPING,
    },
    Exception {
        function: "counters-aggregate",
        action: "dynamodb:ListStreams",
        resource: "CounterLogTable/stream",
        reason: EVENT_SOURCE_MAPPING,
    },
];

async fn drive_system(d: &Driver) {
    assert_status(&d.event("health").await, StatusCode::OK, "health");
    assert_status(
        &d.event("not-found").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
}

fn describe(grants: &BTreeSet<Grant>) -> String {
    grants
        .iter()
        .map(|(action, resource)| format!("{action} on {resource}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_grants_exactly_what_its_function_calls() {
    let d = Driver::new().await;
    drive_system(&d).await;
    drive_kv(&d).await;
    drive_kv_transactions(&d).await;
    drive_line_protocol(&d).await;
    drive_certificates(&d).await;
    drive_counters(&d).await;
    drive_widgets(&d).await;

    let t = Template::load();
    let granted = granted(&t);
    let calls = d.recorder.calls();
    assert!(
        !calls.contains_key(UNATTRIBUTED),
        "DynamoDB calls outside any function: {}",
        describe(&calls[UNATTRIBUTED])
    );
    let driven: BTreeSet<String> = d
        .driven
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.to_string())
        .collect();
    let functions: BTreeSet<String> = granted.keys().cloned().collect();
    assert_eq!(
        driven, functions,
        "every function of the template is driven, and only those"
    );

    let mut report = Vec::new();
    for (function, (role, grants)) in &granted {
        let used = calls.get(function).cloned().unwrap_or_default();
        let excepted = |(action, resource): &Grant| {
            EXCEPTIONS
                .iter()
                .any(|x| x.function == function && x.action == action && x.resource == resource)
        };
        let missing: BTreeSet<Grant> = used
            .difference(grants)
            .filter(|g| !excepted(g))
            .cloned()
            .collect();
        let unused: BTreeSet<Grant> = grants
            .difference(&used)
            .filter(|g| !excepted(g))
            .cloned()
            .collect();
        if !missing.is_empty() {
            report.push(format!(
                "{function} ({role}): missing grants: {}",
                describe(&missing)
            ));
        }
        if !unused.is_empty() {
            report.push(format!(
                "{function} ({role}): unused grants: {}",
                describe(&unused)
            ));
        }
    }
    // An exception holds only while it is a difference: granted, never called by the code.
    for x in EXCEPTIONS {
        let grant = (x.action.to_owned(), x.resource.to_owned());
        let (role, grants) = &granted[x.function];
        assert!(
            grants.contains(&grant),
            "exception {} on {} for {}: {role} no longer grants it; drop the exception",
            x.action,
            x.resource,
            x.function
        );
        assert!(
            !calls.get(x.function).is_some_and(|c| c.contains(&grant)),
            "exception {} on {} for {}: its code calls it now, so it is no exception ({})",
            x.action,
            x.resource,
            x.function,
            x.reason
        );
    }
    assert!(
        report.is_empty(),
        "template.yaml's roles differ from what the functions call:\n  {}",
        report.join("\n  ")
    );
}

/// The stream exceptions are for the one function whose event source is that stream.
#[test]
fn the_stream_exceptions_belong_to_the_stream_consumer() {
    let t = Template::load();
    for x in EXCEPTIONS {
        let (_, function) = t
            .resources_of_type("AWS::Serverless::Function")
            .find(|(_, f)| f["Properties"]["Handler"].as_str() == Some(x.function))
            .unwrap_or_else(|| panic!("no function {}", x.function));
        let table = x.resource.strip_suffix("/stream").expect("a stream");
        let consumes = function["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
            .any(|(_, e)| {
                e["Type"].as_str() == Some("DynamoDB")
                    && get_att(&e["Properties"]["Stream"]) == Some((table, "StreamArn"))
            });
        assert!(
            consumes,
            "{}: {} is not its event source ({})",
            x.function, x.resource, x.reason
        );
    }
}

#[test]
fn transactions_and_batches_are_authorized_per_action_and_table() {
    let body = json!({"TransactItems": [
        {"Put": {"TableName": "p-A", "Item": {}}},
        {"Update": {"TableName": "p-B", "Key": {}}},
        {"Delete": {"TableName": "p-A", "Key": {}}},
        {"ConditionCheck": {"TableName": "p-C", "Key": {}}},
    ]});
    let name = |n: &str| n.strip_prefix("p-").unwrap().to_owned();
    let g = |a: &str, t: &str| (format!("dynamodb:{a}"), t.to_owned());
    assert_eq!(
        grants_of("TransactWriteItems", body.to_string().as_bytes(), name),
        BTreeSet::from([
            g("PutItem", "A"),
            g("UpdateItem", "B"),
            g("DeleteItem", "A"),
            g("ConditionCheckItem", "C")
        ])
    );
    let body =
        json!({"TransactItems": [{"Get": {"TableName": "p-A"}}, {"Get": {"TableName": "p-B"}}]});
    assert_eq!(
        grants_of("TransactGetItems", body.to_string().as_bytes(), name),
        BTreeSet::from([g("GetItem", "A"), g("GetItem", "B")])
    );
    let body = json!({"RequestItems": {"p-A": [], "p-B": []}});
    assert_eq!(
        grants_of("BatchWriteItem", body.to_string().as_bytes(), name),
        BTreeSet::from([g("BatchWriteItem", "A"), g("BatchWriteItem", "B")])
    );
    let body = json!({"TableName": "p-A", "IndexName": "byX"});
    assert_eq!(
        grants_of("Query", body.to_string().as_bytes(), name),
        BTreeSet::from([g("Query", "A/index/*")])
    );
}
