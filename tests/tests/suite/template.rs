//! What `template.yaml` must hold for a deployable, operable stack: least-privilege roles (no wildcard but
//! the documented X-Ray one), a log group with retention and tracing for every function, tables that are
//! on demand with point-in-time recovery and a deletion-protection switch, alarms wired to the optional
//! topic, and an event file (driven by a test) for every function.

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use strata::template::Template;

/// The two X-Ray write actions: IAM has no resource-level permission for them, so they are the one grant
/// on `"*"` the stack may make.
const XRAY_ACTIONS: [&str; 2] = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"];

/// The DynamoDB data-plane actions a function may hold on a table (the transaction APIs are authorized
/// per item action), and the stream-reading ones it may hold on a stream.
const TABLE_ACTIONS: [&str; 6] = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:ConditionCheckItem",
];
const STREAM_ACTIONS: [&str; 4] = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
];

/// `!Tag value` as `(tag, value)`.
fn tagged(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(t) => Some((t.tag.to_string(), &t.value)),
        _ => None,
    }
}

/// The logical id in `!Ref Id`.
fn ref_of(value: &Value) -> Option<&str> {
    match tagged(value)? {
        (tag, v) if tag == "!Ref" => v.as_str(),
        _ => None,
    }
}

/// `(logical id, attribute)` of `!GetAtt Id.Attribute`.
fn get_att(value: &Value) -> Option<(&str, &str)> {
    match tagged(value)? {
        (tag, v) if tag == "!GetAtt" => v.as_str()?.split_once('.'),
        _ => None,
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        other => vec![format!("{other:?}")],
    }
}

fn resource_type<'a>(t: &'a Template, id: &str) -> Option<&'a str> {
    t.doc()["Resources"][id]["Type"].as_str()
}

/// Every IAM statement of the stack: `(where, statement)`.
fn statements(t: &Template) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for (id, role) in t.resources_of_type("AWS::IAM::Role") {
        for policy in role["Properties"]["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            for s in policy["PolicyDocument"]["Statement"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                all.push((id.to_owned(), s.clone()));
            }
        }
    }
    for (id, policy) in t.resources_of_type("AWS::IAM::ManagedPolicy") {
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            all.push((id.to_owned(), s.clone()));
        }
    }
    all
}

fn is_xray_exception(statement: &Value) -> bool {
    let actions: BTreeSet<String> = strings(&statement["Action"]).into_iter().collect();
    let expected: BTreeSet<String> = XRAY_ACTIONS.iter().map(|a| a.to_string()).collect();
    actions == expected && statement["Resource"].as_str() == Some("*")
}

#[test]
fn every_function_has_its_own_role_log_group_and_tracing() {
    let t = Template::load();
    let globals = &t.doc()["Globals"]["Function"];
    assert!(
        globals["Role"].is_null() && globals["Policies"].is_null(),
        "Globals must not give every function a role or policies"
    );
    let mut roles_seen = BTreeSet::new();
    let functions: Vec<_> = t.resources_of_type("AWS::Serverless::Function").collect();
    assert!(!functions.is_empty());
    for (id, function) in functions {
        let p = &function["Properties"];
        // SAM attaches AWS-managed policies (with Resource "*") to a role it creates; an explicit role
        // and no Policies keeps it from creating one.
        assert!(
            p["Policies"].is_null(),
            "{id}: Policies makes SAM create a role"
        );
        let (role, attribute) = get_att(&p["Role"]).unwrap_or_else(|| panic!("{id}: no Role"));
        assert_eq!(attribute, "Arn", "{id}");
        assert_eq!(
            resource_type(&t, role),
            Some("AWS::IAM::Role"),
            "{id}: {role}"
        );
        assert!(
            roles_seen.insert(role.to_owned()),
            "{id} shares role {role}"
        );

        let role_props = &t.doc()["Resources"][role]["Properties"];
        let managed: Vec<_> = role_props["ManagedPolicyArns"]
            .as_sequence()
            .into_iter()
            .flatten()
            .collect();
        for arn in &managed {
            let local = ref_of(arn).unwrap_or_else(|| panic!("{role}: managed policy {arn:?}"));
            assert_eq!(
                resource_type(&t, local),
                Some("AWS::IAM::ManagedPolicy"),
                "{role}: {local}"
            );
        }
        let trust = strings(
            &role_props["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        );
        assert_eq!(trust, ["lambda.amazonaws.com"], "{role}");

        let logging = &p["LoggingConfig"];
        assert_eq!(logging["LogFormat"].as_str(), Some("JSON"), "{id}");
        let group = ref_of(&logging["LogGroup"]).unwrap_or_else(|| panic!("{id}: no LogGroup"));
        let group_res = &t.doc()["Resources"][group];
        assert_eq!(
            group_res["Type"].as_str(),
            Some("AWS::Logs::LogGroup"),
            "{id}"
        );
        assert_eq!(
            ref_of(&group_res["Properties"]["RetentionInDays"]),
            Some("LogRetentionDays"),
            "{group}: retention"
        );
        // The role may write to its own log group and to nothing else.
        let log_statements: Vec<_> = role_props["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|p| {
                p["PolicyDocument"]["Statement"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|s| strings(&s["Action"]).iter().any(|a| a.starts_with("logs:")))
            .collect();
        assert_eq!(log_statements.len(), 1, "{role}: one logs statement");
        assert_eq!(
            strings(&log_statements[0]["Action"]),
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            "{role}"
        );
        assert_eq!(
            get_att(&log_statements[0]["Resource"]),
            Some((group, "Arn")),
            "{role}"
        );

        let tracing = p["Tracing"].as_str().or(globals["Tracing"].as_str());
        assert_eq!(tracing, Some("Active"), "{id}: tracing");
    }
}

#[test]
fn no_wildcard_action_or_resource_but_the_xray_exception() {
    let t = Template::load();
    let mut exceptions = 0;
    let all = statements(&t);
    assert!(!all.is_empty());
    for (owner, s) in &all {
        assert_eq!(s["Effect"].as_str(), Some("Allow"), "{owner}: {s:?}");
        assert!(
            s["NotAction"].is_null() && s["NotResource"].is_null(),
            "{owner}"
        );
        if is_xray_exception(s) {
            exceptions += 1;
            continue;
        }
        for action in strings(&s["Action"]) {
            assert!(!action.contains('*'), "{owner}: wildcard action {action}");
        }
        let resources = match &s["Resource"] {
            Value::Sequence(items) => items.clone(),
            one => vec![one.clone()],
        };
        for resource in resources {
            // Only references to resources of this stack: a table, its stream, a log group.
            let (target, attribute) = get_att(&resource)
                .unwrap_or_else(|| panic!("{owner}: resource {resource:?} is not a !GetAtt"));
            let ty = resource_type(&t, target).unwrap_or_else(|| panic!("{owner}: {target}?"));
            let allowed = match ty {
                "AWS::DynamoDB::Table" => ["Arn", "StreamArn"].contains(&attribute),
                "AWS::Logs::LogGroup" => attribute == "Arn",
                _ => false,
            };
            assert!(allowed, "{owner}: resource {target}.{attribute} ({ty})");
        }
    }
    // The exception exists once, in one managed policy, and nothing else in the stack is on "*".
    assert_eq!(exceptions, 1, "the X-Ray statement is declared once");
    assert!(
        !flatten(t.doc())
            .iter()
            .any(|v| v == "*" || v == "dynamodb:*" || v == "logs:*"),
        "a wildcard outside the X-Ray statement"
    );
}

/// Every string scalar of a document, with the X-Ray statement's one `"*"` removed.
pub(crate) fn flatten(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Sequence(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Mapping(m) => {
                if is_xray_exception(v) {
                    return;
                }
                m.iter().for_each(|(_, i)| walk(i, out))
            }
            Value::Tagged(t) => walk(&t.value, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut out);
    out
}

#[test]
fn dynamodb_grants_are_data_plane_actions_on_the_right_resource() {
    let t = Template::load();
    for (owner, s) in statements(&t) {
        let actions = strings(&s["Action"]);
        if !actions.iter().any(|a| a.starts_with("dynamodb:")) {
            continue;
        }
        let (_, attribute) = get_att(&s["Resource"])
            .unwrap_or_else(|| panic!("{owner}: {:?} is not a table or stream", s["Resource"]));
        let allowed: &[&str] = if attribute == "StreamArn" {
            &STREAM_ACTIONS
        } else {
            &TABLE_ACTIONS
        };
        for action in &actions {
            assert!(
                allowed.contains(&action.as_str()),
                "{owner}: {action} on {attribute}"
            );
        }
    }
    // The stream consumer reads its stream through its own role (SAM would otherwise attach the
    // AWS-managed stream policy, which is on "*").
    for (id, function) in t.resources_of_type("AWS::Serverless::Function") {
        for (_, event) in function["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            if event["Type"].as_str() != Some("DynamoDB") {
                continue;
            }
            let stream = get_att(&event["Properties"]["Stream"]).unwrap();
            let (role, _) = get_att(&function["Properties"]["Role"]).unwrap();
            let granted: BTreeSet<String> = statements(&t)
                .into_iter()
                .filter(|(owner, s)| owner == role && get_att(&s["Resource"]) == Some(stream))
                .flat_map(|(_, s)| strings(&s["Action"]))
                .collect();
            for action in STREAM_ACTIONS {
                assert!(granted.contains(action), "{id}: {action} on {stream:?}");
            }
        }
    }
}

#[test]
fn tables_are_on_demand_recoverable_and_protectable() {
    let t = Template::load();
    assert_eq!(
        t.doc()["Conditions"]["ProtectTables"],
        serde_yaml::from_str::<Value>("!Equals [!Ref TableDeletionProtection, \"true\"]").unwrap()
    );
    let tables = t.tables();
    assert!(!tables.is_empty());
    for table in tables {
        let p = &table.properties;
        let id = &table.logical_id;
        assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"), "{id}");
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
            Some(true),
            "{id}: point-in-time recovery"
        );
        assert_eq!(
            p["DeletionProtectionEnabled"],
            serde_yaml::from_str::<Value>("!If [ProtectTables, true, false]").unwrap(),
            "{id}: deletion protection"
        );
    }
}

/// `(namespace, metric)` -> the dimension values (`!Ref` targets) its alarms watch.
fn alarms(t: &Template) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut watched: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (id, alarm) in t.resources_of_type("AWS::CloudWatch::Alarm") {
        let p = &alarm["Properties"];
        let topic = serde_yaml::from_str::<Value>(
            "!If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]",
        )
        .unwrap();
        assert_eq!(p["AlarmActions"], topic, "{id}: alarm actions");
        assert_eq!(p["OKActions"], topic, "{id}: OK actions");
        let mut metrics = vec![p.clone()];
        for m in p["Metrics"].as_sequence().into_iter().flatten() {
            metrics.push(m["MetricStat"]["Metric"].clone());
        }
        for m in metrics {
            let (Some(ns), Some(name)) = (m["Namespace"].as_str(), m["MetricName"].as_str()) else {
                continue;
            };
            let entry = watched.entry((ns.to_owned(), name.to_owned())).or_default();
            for d in m["Dimensions"].as_sequence().into_iter().flatten() {
                if let Some(target) = ref_of(&d["Value"]) {
                    entry.insert(target.to_owned());
                }
            }
        }
    }
    watched
}

#[test]
fn alarms_cover_api_errors_functions_and_tables() {
    let t = Template::load();
    let watched = alarms(&t);
    let get = |ns: &str, metric: &str| {
        watched
            .get(&(ns.to_owned(), metric.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        get("AWS/ApiGateway", "5xx").contains("HttpApi"),
        "HTTP API 5xx"
    );
    assert!(get("AWS/ApiGateway", "IntegrationError").contains("WebSocketApi"));
    for (id, _) in t.resources_of_type("AWS::Serverless::Function") {
        assert!(
            get("AWS/Lambda", "Errors").contains(id),
            "{id}: errors alarm"
        );
        assert!(
            get("AWS/Lambda", "Throttles").contains(id),
            "{id}: throttles alarm"
        );
    }
    for table in t.tables() {
        assert!(
            get("AWS/DynamoDB", "SystemErrors").contains(&table.logical_id),
            "{}: system errors alarm",
            table.logical_id
        );
    }
}

#[test]
fn parameters_stage_throttling_authorizer_and_outputs() {
    let t = Template::load();
    let doc = t.doc();
    for name in [
        "StageName",
        "CounterMode",
        "LogRetentionDays",
        "TableDeletionProtection",
        "AlarmTopicArn",
        "JwtIssuer",
        "JwtAudience",
    ] {
        assert!(!doc["Parameters"][name].is_null(), "parameter {name}");
    }
    // Optional integrations are off unless asked for.
    assert_eq!(
        doc["Parameters"]["AlarmTopicArn"]["Default"].as_str(),
        Some("")
    );
    assert_eq!(doc["Parameters"]["JwtIssuer"]["Default"].as_str(), Some(""));
    let api = &doc["Resources"]["HttpApi"]["Properties"];
    assert_eq!(ref_of(&api["StageName"]), Some("StageName"));
    assert!(!api["DefaultRouteSettings"]["ThrottlingRateLimit"].is_null());
    assert!(!api["DefaultRouteSettings"]["ThrottlingBurstLimit"].is_null());
    let (tag, auth) = tagged(&api["Auth"]).expect("Auth is conditional");
    assert_eq!(tag, "!If");
    assert_eq!(auth[0].as_str(), Some("HasJwtAuthorizer"));
    assert_eq!(auth[1]["DefaultAuthorizer"].as_str(), Some("Jwt"));
    assert_eq!(ref_of(&auth[2]), Some("AWS::NoValue"));
    // Fn::If in Auth needs the language extensions to run before the SAM transform.
    assert_eq!(
        strings(&doc["Transform"]),
        ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    );
    let ws = &doc["Resources"]["WebSocketStage"]["Properties"];
    assert_eq!(ref_of(&ws["StageName"]), Some("StageName"));
    assert!(!ws["DefaultRouteSettings"]["ThrottlingRateLimit"].is_null());
    for output in ["ApiUrl", "WebSocketUrl"] {
        assert!(
            !doc["Outputs"][output]["Value"].is_null(),
            "output {output}"
        );
    }
}

#[test]
fn every_function_has_an_event_file_driven_by_a_test() {
    let root = strata_tests::repo_root();
    let t = Template::load();
    let binaries: BTreeSet<String> = t
        .resources_of_type("AWS::Serverless::Function")
        .map(|(_, f)| {
            f["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(root.join("infra/events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    assert_eq!(
        binaries, files,
        "template functions and infra/events/*.json must match one to one"
    );
    // Each file is named by some test of this suite, which sends it through the real handler.
    let suite: String = std::fs::read_dir(root.join("tests/tests/suite"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs") && !p.ends_with("template.rs"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for name in files {
        assert!(
            suite.contains(&format!("\"{name}\"")) || suite.contains(&format!("{name}.json")),
            "no test drives infra/events/{name}.json"
        );
    }
}

/// The timeouts that must nest: a request's deadline inside the function's timeout, and the windows that
/// assume "no attempt of a request arrives after this" (an idempotency claim, a pending certificate entry
/// left for its owner's retries) longer than any request may run.
#[test]
fn deadlines_fit_inside_the_function_timeout_and_the_retry_windows_outlast_it() {
    let t = Template::load();
    let globals = &t.doc()["Globals"]["Function"];
    let timeout =
        std::time::Duration::from_secs(globals["Timeout"].as_u64().expect("Globals Timeout"));
    let overrides: Vec<_> = t
        .resources_of_type("AWS::Serverless::Function")
        .filter(|(_, f)| !f["Properties"]["Timeout"].is_null())
        .map(|(id, f)| (id.to_owned(), f["Properties"]["Timeout"].as_u64()))
        .collect();
    for (id, seconds) in &overrides {
        let seconds = seconds.expect("a number of seconds");
        assert!(
            std::time::Duration::from_secs(seconds) <= timeout || id.contains("Aggregator"),
            "{id}: an HTTP function's timeout above the Globals timeout would outlast the retry windows"
        );
    }
    assert_eq!(
        strata_http::REQUEST_BUDGET + strata_http::lambda::ANSWER_MARGIN,
        timeout,
        "the local server's request budget is the function timeout less the answer margin"
    );
    assert!(strata_dynamo::config::OPERATION_TIMEOUT < timeout);
    assert!(strata_core::idempotency::IN_PROGRESS_TTL > timeout * 2);
    assert!(strata_dynamo::ledger::GRACE > timeout * 2);
}
