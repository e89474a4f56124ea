//! What `template.yaml` must hold for a deployable, operable stack: least-privilege roles (no wildcard but
//! the documented X-Ray one), a log group with retention and tracing for every function, tables that are
//! on demand with point-in-time recovery and a deletion-protection switch, alarms wired to the optional
//! topic, and an event file (driven by a test) for every function.

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use strata::template::Template;

/// The two X-Ray write actions, and DynamoDB's DescribeEndpoints (the call that opens a function's
/// connection during init, naming no table): IAM has no resource-level permission for them, so they are
/// the one grant on `"*"` the stack may make.
const XRAY_ACTIONS: [&str; 3] = [
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "dynamodb:DescribeEndpoints",
];

/// The DynamoDB data-plane actions a function may hold on a table (the transaction APIs are authorized
/// per item action), and the stream-reading ones it may hold on a stream.
const TABLE_ACTIONS: [&str; 7] = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:ConditionCheckItem",
];
const STREAM_ACTIONS: [&str; 4] = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
];

/// `(condition, then, else)` of `!If [Condition, then, else]`.
fn if_of(value: &Value) -> Option<(&str, &Value, &Value)> {
    match tagged(value)? {
        (tag, Value::Sequence(items)) if tag == "!If" && items.len() == 3 => {
            Some((items[0].as_str()?, &items[1], &items[2]))
        }
        _ => None,
    }
}

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
            // The tables' KMS key policy is attached only when the key parameter is set.
            let arn = match if_of(arn) {
                Some((condition, then, otherwise)) => {
                    assert_eq!(
                        condition, "HasTableKmsKey",
                        "{role}: managed policy {arn:?}"
                    );
                    assert_eq!(ref_of(otherwise), Some("AWS::NoValue"), "{role}");
                    then
                }
                None => arn,
            };
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
        // SAM merges Globals' LoggingConfig into each function's.
        let format = logging["LogFormat"]
            .as_str()
            .or(globals["LoggingConfig"]["LogFormat"].as_str());
        assert_eq!(format, Some("JSON"), "{id}");
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
            // The tables' customer managed key, a parameter, for the KMS actions DynamoDB needs with it.
            if ref_of(&resource) == Some("TableKmsKeyArn") {
                assert_eq!(owner, "TableKmsKeyPolicy", "{owner}: the KMS key");
                assert!(
                    strings(&s["Action"]).iter().all(|a| a.starts_with("kms:")),
                    "{owner}: {s:?}"
                );
                continue;
            }
            // Only references to resources of this stack: a table, its stream, a log group, a queue.
            let (target, attribute) = get_att(&resource)
                .unwrap_or_else(|| panic!("{owner}: resource {resource:?} is not a !GetAtt"));
            let ty = resource_type(&t, target).unwrap_or_else(|| panic!("{owner}: {target}?"));
            let allowed = match ty {
                "AWS::DynamoDB::Table" => ["Arn", "StreamArn"].contains(&attribute),
                "AWS::Logs::LogGroup" => attribute == "Arn",
                "AWS::SQS::Queue" => attribute == "Arn",
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
        if !actions.iter().any(|a| a.starts_with("dynamodb:")) || is_xray_exception(&s) {
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

/// `!Sub "${X}"`, the same as `!Ref X` (how a `Fn::ForEach` loop names a resource by its identifier).
fn sub_of_one_ref(value: &Value) -> Option<&str> {
    let (tag, inner) = tagged(value)?;
    let name = inner.as_str()?.strip_prefix("${")?.strip_suffix('}')?;
    (tag == "!Sub" && !name.contains(['$', '{', '}'])).then_some(name)
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
                if let Some(target) = ref_of(&d["Value"]).or_else(|| sub_of_one_ref(&d["Value"])) {
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
        "AuthMode",
        "JwtIssuer",
        "JwtAudience",
        "JwtReadScope",
        "JwtWriteScope",
        "JwtAdminScope",
        "ReservedConcurrencyReads",
        "ReservedConcurrencyWrites",
        "ReservedConcurrencyCommands",
        "TableKmsKeyArn",
        "WebSocketAccessLogging",
    ] {
        assert!(!doc["Parameters"][name].is_null(), "parameter {name}");
    }
    // Optional integrations are off unless asked for.
    assert_eq!(
        doc["Parameters"]["AlarmTopicArn"]["Default"].as_str(),
        Some("")
    );
    assert_eq!(doc["Parameters"]["JwtIssuer"]["Default"].as_str(), Some(""));
    assert_eq!(
        doc["Parameters"]["TableKmsKeyArn"]["Default"].as_str(),
        Some("")
    );
    let api = &doc["Resources"]["HttpApi"]["Properties"];
    assert_eq!(ref_of(&api["StageName"]), Some("StageName"));
    assert!(!api["DefaultRouteSettings"]["ThrottlingRateLimit"].is_null());
    assert!(!api["DefaultRouteSettings"]["ThrottlingBurstLimit"].is_null());
    let (condition, iam, rest) = if_of(&api["Auth"]).expect("Auth is conditional");
    assert_eq!(condition, "AuthIam");
    assert_eq!(iam["DefaultAuthorizer"].as_str(), Some("AWS_IAM"));
    assert_eq!(iam["EnableIamAuthorizer"].as_bool(), Some(true));
    let (condition, jwt, none) = if_of(rest).expect("then JWT or nothing");
    assert_eq!(condition, "AuthJwt");
    assert_eq!(jwt["DefaultAuthorizer"].as_str(), Some("Jwt"));
    assert_eq!(ref_of(none), Some("AWS::NoValue"));
    // Fn::If in Auth needs the language extensions to run before the SAM transform.
    assert_eq!(
        strings(&doc["Transform"]),
        ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    );
    let ws = &doc["Resources"]["WebSocketStage"]["Properties"];
    assert_eq!(ref_of(&ws["StageName"]), Some("StageName"));
    assert!(!ws["DefaultRouteSettings"]["ThrottlingRateLimit"].is_null());
    for output in ["ApiUrl", "WebSocketUrl", "ApiIsOpen"] {
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
        .map(|(_, f)| f["Properties"]["Handler"].as_str().unwrap().to_owned())
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
            // The aggregator serves no request: its re-scan may take longer.
            std::time::Duration::from_secs(seconds) <= timeout || id == "CounterAggregateFunction",
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
    // Issues write other requests' certificates only once those requests are past their deadline.
    assert!(strata_dynamo::ledger::ABANDONED >= timeout);
}

/// The template as CloudFormation (with `AWS::LanguageExtensions`) sees it for some parameter values: every
/// `!If` replaced by the branch its condition picks, `!Ref AWS::NoValue` dropped, and the resources whose
/// `Condition` is false left out. Parameters not given take their defaults.
struct Resolved {
    doc: Value,
}

impl Resolved {
    fn new(t: &Template, overrides: &[(&str, &str)]) -> Self {
        let doc = t.doc();
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for (name, p) in doc["Parameters"].as_mapping().into_iter().flatten() {
            let default = match &p["Default"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Null => String::new(),
                other => panic!("parameter {name:?}: default {other:?}"),
            };
            params.insert(name.as_str().unwrap().to_owned(), default);
        }
        for (name, value) in overrides {
            assert!(params.contains_key(*name), "no parameter {name}");
            params.insert((*name).to_owned(), (*value).to_owned());
        }
        let conditions: BTreeMap<String, bool> = doc["Conditions"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(name, c)| (name.as_str().unwrap().to_owned(), condition(c, &params)))
            .collect();
        let mut resources = serde_yaml::Mapping::new();
        for (id, r) in doc["Resources"].as_mapping().into_iter().flatten() {
            if let Some(c) = r["Condition"].as_str()
                && !conditions[c]
            {
                continue;
            }
            resources.insert(id.clone(), resolve(r, &conditions).unwrap_or(Value::Null));
        }
        let mut outputs = serde_yaml::Mapping::new();
        for (id, o) in doc["Outputs"].as_mapping().into_iter().flatten() {
            outputs.insert(id.clone(), resolve(o, &conditions).unwrap_or(Value::Null));
        }
        let mut out = serde_yaml::Mapping::new();
        out.insert("Resources".into(), Value::Mapping(resources));
        out.insert("Outputs".into(), Value::Mapping(outputs));
        Self {
            doc: Value::Mapping(out),
        }
    }

    /// Every HTTP API route as `(function, method, path, event Auth)`.
    fn routes(&self) -> Vec<(String, String, String, Value)> {
        let mut routes = Vec::new();
        for (id, r) in self.doc["Resources"].as_mapping().into_iter().flatten() {
            for (_, event) in r["Properties"]["Events"].as_mapping().into_iter().flatten() {
                if event["Type"].as_str() != Some("HttpApi") {
                    continue;
                }
                let p = &event["Properties"];
                routes.push((
                    id.as_str().unwrap().to_owned(),
                    p["Method"].as_str().unwrap().to_uppercase(),
                    p["Path"].as_str().unwrap().to_owned(),
                    p["Auth"].clone(),
                ));
            }
        }
        assert!(routes.len() > 20, "the HTTP API's routes");
        routes
    }

    /// The authorizer a route ends up with, as SAM assigns it: the event's, else the API's default.
    fn authorizer(&self, auth: &Value) -> Option<String> {
        let default = &self.doc["Resources"]["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"];
        auth["Authorizer"]
            .as_str()
            .or(default.as_str())
            .filter(|a| *a != "NONE")
            .map(str::to_owned)
    }

    fn connect_authorization(&self) -> Option<&str> {
        self.doc["Resources"]["WebSocketConnectRoute"]["Properties"]["AuthorizationType"].as_str()
    }
}

fn condition(c: &Value, params: &BTreeMap<String, String>) -> bool {
    let operand = |v: &Value| -> String {
        match (ref_of(v), v) {
            (Some(p), _) => params
                .get(p)
                .unwrap_or_else(|| panic!("!Ref {p} in a condition"))
                .clone(),
            (None, Value::String(s)) => s.clone(),
            (None, Value::Number(n)) => n.to_string(),
            (None, other) => panic!("condition operand {other:?}"),
        }
    };
    match tagged(c) {
        Some((tag, Value::Sequence(args))) if tag == "!Equals" => {
            operand(&args[0]) == operand(&args[1])
        }
        Some((tag, Value::Sequence(args))) if tag == "!Not" => !condition(&args[0], params),
        other => panic!("condition {other:?}"),
    }
}

/// `None` for `!Ref AWS::NoValue`.
fn resolve(v: &Value, conditions: &BTreeMap<String, bool>) -> Option<Value> {
    if ref_of(v) == Some("AWS::NoValue") {
        return None;
    }
    if let Some((c, then, otherwise)) = if_of(v) {
        let picked = conditions
            .get(c)
            .unwrap_or_else(|| panic!("!If on unknown condition {c}"));
        return resolve(if *picked { then } else { otherwise }, conditions);
    }
    Some(match v {
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .filter_map(|(k, x)| Some((k.clone(), resolve(x, conditions)?)))
                .collect(),
        ),
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .filter_map(|x| resolve(x, conditions))
                .collect(),
        ),
        Value::Tagged(t) => Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: t.tag.clone(),
            value: resolve(&t.value, conditions).unwrap_or(Value::Null),
        })),
        other => other.clone(),
    })
}

const JWT: [(&str, &str); 3] = [
    ("AuthMode", "jwt"),
    ("JwtIssuer", "https://issuer.example"),
    ("JwtAudience", "client"),
];

#[test]
fn by_default_every_route_and_the_websocket_connect_need_iam_signatures() {
    let t = Template::load();
    let auth_mode = &t.doc()["Parameters"]["AuthMode"];
    assert_eq!(auth_mode["Default"].as_str(), Some("iam"));
    assert_eq!(strings(&auth_mode["AllowedValues"]), ["iam", "jwt", "none"]);
    let r = Resolved::new(&t, &[]);
    let api_auth = &r.doc["Resources"]["HttpApi"]["Properties"]["Auth"];
    assert_eq!(api_auth["EnableIamAuthorizer"].as_bool(), Some(true));
    assert_eq!(api_auth["DefaultAuthorizer"].as_str(), Some("AWS_IAM"));
    for (id, method, path, auth) in r.routes() {
        // Named on the route itself too, so no route (the $default 404 included) relies on SAM's default.
        assert_eq!(
            auth["Authorizer"].as_str(),
            Some("AWS_IAM"),
            "{id}: {method} {path}"
        );
        assert!(
            auth["AuthorizationScopes"].is_null(),
            "{id}: scopes are JWT's"
        );
    }
    assert_eq!(r.connect_authorization(), Some("AWS_IAM"));
    let open = r.doc["Outputs"]["ApiIsOpen"]["Value"].clone();
    assert!(
        !flatten(&open).concat().contains("YES"),
        "ApiIsOpen by default: {open:?}"
    );
}

#[test]
fn only_auth_mode_none_leaves_a_route_open() {
    let t = Template::load();
    // Every choice of authorizer in the template hangs on a condition that is AuthMode and nothing else…
    let auth_conditions = ["AuthIam", "AuthJwt", "AuthNone"];
    for (name, mode) in auth_conditions.iter().zip(["iam", "jwt", "none"]) {
        assert_eq!(
            t.doc()["Conditions"][*name],
            serde_yaml::from_str::<Value>(&format!("!Equals [!Ref AuthMode, {mode}]")).unwrap(),
            "{name}"
        );
    }
    fn conditions_in(v: &Value, out: &mut BTreeSet<String>) {
        if let Some((c, a, b)) = if_of(v) {
            out.insert(c.to_owned());
            conditions_in(a, out);
            conditions_in(b, out);
        }
    }
    let mut used = BTreeSet::new();
    conditions_in(
        &t.doc()["Resources"]["HttpApi"]["Properties"]["Auth"],
        &mut used,
    );
    conditions_in(
        &t.doc()["Resources"]["WebSocketConnectRoute"]["Properties"]["AuthorizationType"],
        &mut used,
    );
    for (id, f) in t.resources_of_type("AWS::Serverless::Function") {
        for (_, event) in f["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if event["Type"].as_str() == Some("HttpApi") {
                assert!(
                    if_of(&event["Properties"]["Auth"]).is_some(),
                    "{id}: a route without its Auth"
                );
                conditions_in(&event["Properties"]["Auth"], &mut used);
            }
        }
    }
    assert!(
        used.iter().all(|c| auth_conditions.contains(&c.as_str())),
        "authorization depends on {used:?}"
    );
    // … and of its three values, only none opens anything.
    for mode in ["iam", "jwt", "none"] {
        let overrides: Vec<(&str, &str)> = if mode == "jwt" {
            JWT.to_vec()
        } else {
            vec![("AuthMode", mode)]
        };
        let r = Resolved::new(&t, &overrides);
        for (id, method, path, auth) in r.routes() {
            let authorizer = r.authorizer(&auth);
            assert_eq!(
                authorizer.is_none(),
                mode == "none",
                "AuthMode {mode}, {id}: {method} {path} has {authorizer:?}"
            );
        }
        let connect = r.connect_authorization();
        assert_eq!(
            connect == Some("NONE"),
            mode == "none",
            "AuthMode {mode}: $connect {connect:?}"
        );
        assert!(connect.is_some(), "$connect names its authorization");
        let open = flatten(&r.doc["Outputs"]["ApiIsOpen"]["Value"]).concat();
        assert_eq!(
            open.starts_with("YES"),
            mode == "none",
            "AuthMode {mode}: ApiIsOpen {open}"
        );
    }
}

#[test]
fn jwt_mode_asks_the_read_write_and_admin_scopes() {
    let t = Template::load();
    let params = &t.doc()["Parameters"];
    for (name, default) in [
        ("JwtReadScope", "strata/read"),
        ("JwtWriteScope", "strata/write"),
        ("JwtAdminScope", "strata/admin"),
    ] {
        assert_eq!(params[name]["Default"].as_str(), Some(default), "{name}");
    }
    // JwtIssuer and JwtAudience are required in jwt mode: the stack refuses to deploy without them.
    let rule = &t.doc()["Rules"]["JwtModeNeedsIssuerAndAudience"];
    assert_eq!(
        rule["RuleCondition"],
        serde_yaml::from_str::<Value>("!Equals [!Ref AuthMode, jwt]").unwrap()
    );
    let asserted: Vec<String> = rule["Assertions"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|a| flatten(&a["Assert"]))
        .collect();
    assert!(asserted.contains(&"JwtIssuer".to_owned()), "{asserted:?}");
    assert!(asserted.contains(&"JwtAudience".to_owned()), "{asserted:?}");

    let r = Resolved::new(&t, &JWT);
    let jwt = &r.doc["Resources"]["HttpApi"]["Properties"]["Auth"]["Authorizers"]["Jwt"];
    assert_eq!(
        ref_of(&jwt["JwtConfiguration"]["issuer"]),
        Some("JwtIssuer")
    );
    assert_eq!(
        ref_of(&jwt["JwtConfiguration"]["audience"]),
        Some("JwtAudience")
    );
    for (id, method, path, auth) in r.routes() {
        assert_eq!(auth["Authorizer"].as_str(), Some("Jwt"), "{id}");
        let scopes: Vec<&str> = auth["AuthorizationScopes"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{id}: no scopes"))
            .iter()
            .map(|s| ref_of(s).unwrap_or_else(|| panic!("{id}: scope {s:?}")))
            .collect();
        let expected: &[&str] = if path == "/share-classes/{class}" && method == "PUT" {
            &["JwtAdminScope"]
        } else if path == "$default" {
            // No route: any of the API's scopes gets the JSON 404; a token without one gets 403.
            &["JwtReadScope", "JwtWriteScope", "JwtAdminScope"]
        } else if method == "GET" && !path.starts_with("/kv/transactions/") {
            // A read inside a transaction changes it (remembered for validation, idle timer restarted).
            &["JwtReadScope"]
        } else {
            &["JwtWriteScope"]
        };
        assert_eq!(scopes, expected, "{id}: {method} {path}");
    }
    // The WebSocket API has no JWT authorizer: $connect stays on IAM in jwt mode.
    assert_eq!(r.connect_authorization(), Some("AWS_IAM"));
}

#[test]
fn every_function_has_reserved_concurrency_with_the_command_functions_lowest() {
    let t = Template::load();
    let doc = t.doc();
    let mut reserved_by_default = 0;
    for (id, f) in t.resources_of_type("AWS::Serverless::Function") {
        let value = &f["Properties"]["ReservedConcurrentExecutions"];
        let (condition, then, otherwise) =
            if_of(value).unwrap_or_else(|| panic!("{id}: ReservedConcurrentExecutions {value:?}"));
        let param = ref_of(then).unwrap_or_else(|| panic!("{id}: {then:?}"));
        assert!(param.starts_with("ReservedConcurrency"), "{id}: {param}");
        assert_eq!(ref_of(otherwise), Some("AWS::NoValue"), "{id}");
        // -1 leaves the function unreserved (an account whose limit is too low to reserve any).
        assert_eq!(
            doc["Conditions"][condition],
            serde_yaml::from_str::<Value>(&format!("!Not [!Equals [!Ref {param}, \"-1\"]]"))
                .unwrap(),
            "{id}: {condition}"
        );
        let binary = f["Properties"]["Handler"].as_str().unwrap();
        if binary == "kv-commands" {
            assert_eq!(param, "ReservedConcurrencyCommands", "{id}");
        }
        reserved_by_default += doc["Parameters"][param]["Default"].as_i64().unwrap();
    }
    let default = |p: &str| doc["Parameters"][p]["Default"].as_i64().unwrap();
    assert!(default("ReservedConcurrencyCommands") < default("ReservedConcurrencyReads"));
    assert!(default("ReservedConcurrencyCommands") < default("ReservedConcurrencyWrites"));
    // Lambda keeps 100 of an account's (default) 1000 unreserved.
    assert!(
        reserved_by_default <= 900,
        "the defaults reserve {reserved_by_default}"
    );
}

/// The access log format of a stage: a JSON object whose values are `$context` variables.
fn access_log_fields(settings: &Value, owner: &str) -> BTreeMap<String, String> {
    let t = Template::load();
    let (group, attribute) = get_att(&settings["DestinationArn"])
        .unwrap_or_else(|| panic!("{owner}: access log destination"));
    assert_eq!(attribute, "Arn");
    let group_res = &t.doc()["Resources"][group];
    assert_eq!(group_res["Type"].as_str(), Some("AWS::Logs::LogGroup"));
    assert_eq!(
        ref_of(&group_res["Properties"]["RetentionInDays"]),
        Some("LogRetentionDays"),
        "{group}"
    );
    let format = settings["Format"].as_str().expect("a format");
    serde_json::from_str(format).unwrap_or_else(|e| panic!("{owner}: {format} is not JSON: {e}"))
}

#[test]
fn both_apis_write_json_access_logs_with_request_id_caller_route_status_and_latency() {
    let t = Template::load();
    let http = access_log_fields(
        &t.doc()["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"],
        "HttpApi",
    );
    for variable in [
        "$context.requestId",
        "$context.identity.caller",
        "$context.identity.userArn",
        "$context.authorizer.claims.sub",
        "$context.routeKey",
        "$context.status",
        "$context.responseLatency",
    ] {
        assert!(
            http.values().any(|v| v == variable),
            "HTTP API access log: {variable}"
        );
    }
    let ws = &t.doc()["Resources"]["WebSocketStage"]["Properties"]["AccessLogSettings"];
    let (condition, settings, otherwise) = if_of(ws).expect("WebSocket access logs");
    assert_eq!(condition, "LogWebSocketAccess");
    assert_eq!(ref_of(otherwise), Some("AWS::NoValue"));
    assert_eq!(
        t.doc()["Parameters"]["WebSocketAccessLogging"]["Default"].as_str(),
        Some("false"),
        "off unless asked for: a deploy fails in an account without API Gateway's CloudWatch Logs role"
    );
    let ws = access_log_fields(settings, "WebSocketStage");
    for variable in [
        "$context.requestId",
        "$context.connectionId",
        "$context.identity.caller",
        "$context.identity.userArn",
        "$context.routeKey",
        "$context.status",
        "$context.integrationLatency",
    ] {
        assert!(
            ws.values().any(|v| v == variable),
            "WebSocket access log: {variable}"
        );
    }
}

#[test]
fn every_table_is_encrypted_with_the_key_parameter_when_it_is_set() {
    let t = Template::load();
    let doc = t.doc();
    assert_eq!(
        doc["Conditions"]["HasTableKmsKey"],
        serde_yaml::from_str::<Value>("!Not [!Equals [!Ref TableKmsKeyArn, \"\"]]").unwrap()
    );
    let expected = serde_yaml::from_str::<Value>(
        "!If [HasTableKmsKey, {SSEEnabled: true, SSEType: KMS, KMSMasterKeyId: !Ref TableKmsKeyArn}, !Ref AWS::NoValue]",
    )
    .unwrap();
    for table in t.tables() {
        assert_eq!(
            table.properties["SSESpecification"], expected,
            "{}: SSESpecification",
            table.logical_id
        );
    }
    // The key policy: only KMS actions, no wildcard, on the key parameter only, through DynamoDB only.
    let policy = &doc["Resources"]["TableKmsKeyPolicy"];
    assert_eq!(policy["Condition"].as_str(), Some("HasTableKmsKey"));
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap();
    assert_eq!(statements.len(), 1);
    let s = &statements[0];
    assert_eq!(ref_of(&s["Resource"]), Some("TableKmsKeyArn"));
    assert_eq!(
        strings(&s["Action"]),
        [
            "kms:Decrypt",
            "kms:DescribeKey",
            "kms:Encrypt",
            "kms:GenerateDataKey"
        ]
    );
    assert!(
        !flatten(&s["Condition"]["StringEquals"]["kms:ViaService"]).is_empty(),
        "kms:ViaService"
    );
    // Attached to the roles of the functions that use a table, and to no other.
    for (role, r) in t.resources_of_type("AWS::IAM::Role") {
        let uses_a_table = statements_of(r).iter().any(|s| {
            strings(&s["Action"])
                .iter()
                .any(|a| a.starts_with("dynamodb:"))
        });
        let has_key_policy = flatten(&r["Properties"]["ManagedPolicyArns"])
            .iter()
            .any(|v| v == "TableKmsKeyPolicy");
        assert_eq!(has_key_policy, uses_a_table, "{role}: the KMS key policy");
    }
}

fn statements_of(role: &Value) -> Vec<Value> {
    role["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// `parameter_overrides` of each `[<env>.deploy.parameters]` table of samconfig.toml.
fn samconfig_overrides() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(strata_tests::repo_root().join("samconfig.toml")).unwrap();
    let mut envs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut env = None;
    let mut in_overrides = false;
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            env = header.strip_suffix(".deploy.parameters").map(str::to_owned);
            in_overrides = false;
        } else if let Some(env) = &env {
            if line.starts_with("parameter_overrides") {
                in_overrides = true;
                envs.entry(env.clone()).or_default();
            }
            if in_overrides {
                for part in line.split('"').skip(1).step_by(2) {
                    envs.get_mut(env).unwrap().push(part.to_owned());
                }
                if line.ends_with(']') {
                    in_overrides = false;
                }
            }
        }
    }
    envs
}

#[test]
fn samconfig_prod_sets_an_auth_mode_that_is_not_none() {
    let envs = samconfig_overrides();
    let prod = envs.get("prod").expect("a prod environment");
    let modes: Vec<&str> = prod
        .iter()
        .filter_map(|o| o.strip_prefix("AuthMode="))
        .collect();
    assert!(
        modes == ["iam"] || modes == ["jwt"],
        "prod AuthMode: {modes:?}"
    );
    for (env, overrides) in &envs {
        assert!(
            !overrides.iter().any(|o| o == "AuthMode=none"),
            "{env} opens the API"
        );
    }
}

/// The counter log's consumer loses nothing: its stream mapping reports malformed records as batch
/// failures and sends batches that fail past their retries to a queue; an alarm watches that queue and the
/// stream's iterator age; a schedule re-scans the log with the same function; and its role holds exactly
/// what each of those needs.
#[test]
fn the_counter_log_fails_over_to_a_queue_is_alarmed_and_rescanned_on_a_schedule() {
    let t = Template::load();
    let doc = t.doc();
    let function = &doc["Resources"]["CounterAggregateFunction"];
    let events = &function["Properties"]["Events"];
    let (stream_event, schedule) = {
        let all: Vec<&Value> = events.as_mapping().unwrap().values().collect();
        let of = |ty: &str| {
            let found: Vec<&&Value> = all
                .iter()
                .filter(|e| e["Type"].as_str() == Some(ty))
                .collect();
            assert_eq!(found.len(), 1, "one {ty} event on the aggregator");
            *found[0]
        };
        (of("DynamoDB"), of("Schedule"))
    };
    let mapping = &stream_event["Properties"];
    assert_eq!(
        get_att(&mapping["Stream"]),
        Some(("CounterLogTable", "StreamArn"))
    );
    assert_eq!(
        strings(&mapping["FunctionResponseTypes"]),
        ["ReportBatchItemFailures"],
        "malformed records come back as batch failures"
    );
    assert_eq!(mapping["BisectBatchOnFunctionError"].as_bool(), Some(true));
    let retries = mapping["MaximumRetryAttempts"]
        .as_u64()
        .expect("bounded retries");
    assert!((1..=10_000).contains(&retries), "{retries}");
    // Large batches: a hot counter's item takes one write per chunk of 99 entries.
    assert!(mapping["BatchSize"].as_u64().unwrap() >= 1000);
    let on_failure = &mapping["DestinationConfig"]["OnFailure"];
    assert_eq!(on_failure["Type"].as_str(), Some("SQS"));
    let (queue, attribute) = get_att(&on_failure["Destination"]).expect("a queue of this stack");
    assert_eq!(attribute, "Arn");
    let q = &doc["Resources"][queue];
    assert_eq!(q["Type"].as_str(), Some("AWS::SQS::Queue"), "{queue}");
    assert_eq!(
        q["Properties"]["MessageRetentionPeriod"].as_u64(),
        Some(1_209_600),
        "{queue}: kept the 14 days SQS allows"
    );
    assert_eq!(
        q["Properties"]["SqsManagedSseEnabled"].as_bool(),
        Some(true),
        "{queue}: encrypted at rest"
    );
    assert_eq!(q["DeletionPolicy"].as_str(), Some("Retain"), "{queue}");

    // The schedule: often enough that an entry the stream lost is folded within minutes, and the age it
    // folds past is well inside the stream's 24 hours.
    let rate = schedule["Properties"]["Schedule"].as_str().unwrap();
    let minutes: u64 = rate
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(" minutes)"))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("a rate in minutes: {rate}"));
    assert!((1..=15).contains(&minutes), "{rate}");
    assert!(strata_dynamo::aggregator::RESCAN_AGE < std::time::Duration::from_secs(3600));
    assert_eq!(schedule["Properties"]["Enabled"].as_bool(), Some(true));
    let timeout = function["Properties"]["Timeout"].as_u64().unwrap();
    assert!(
        timeout >= 60 && timeout < minutes * 60,
        "a re-scan has time to run, and ends before the next: {timeout} s"
    );

    // Alarms: the stream's iterator age for this function, and any message on the queue.
    let mut iterator_age = false;
    let mut depth = false;
    for (id, alarm) in t.resources_of_type("AWS::CloudWatch::Alarm") {
        let p = &alarm["Properties"];
        let dimension = &p["Dimensions"][0]["Value"];
        match (p["Namespace"].as_str(), p["MetricName"].as_str()) {
            (Some("AWS/Lambda"), Some("IteratorAge"))
                if ref_of(dimension) == Some("CounterAggregateFunction") =>
            {
                assert_eq!(p["Statistic"].as_str(), Some("Maximum"), "{id}");
                let threshold = p["Threshold"].as_u64().unwrap();
                assert!(threshold <= 15 * 60 * 1000, "{id}: {threshold} ms");
                iterator_age = true;
            }
            (Some("AWS/SQS"), Some("ApproximateNumberOfMessagesVisible"))
                if get_att(dimension) == Some((queue, "QueueName")) =>
            {
                assert_eq!(p["Threshold"].as_u64(), Some(1), "{id}: any message");
                assert_eq!(
                    p["ComparisonOperator"].as_str(),
                    Some("GreaterThanOrEqualToThreshold"),
                    "{id}"
                );
                depth = true;
            }
            _ => {}
        }
    }
    assert!(iterator_age, "an IteratorAge alarm on the aggregator");
    assert!(depth, "a depth alarm on {queue}");

    // Least privilege for the queue: only the aggregator's role may send to it, and only that.
    let (role, _) = get_att(&function["Properties"]["Role"]).unwrap();
    for (owner, statement) in statements(&t) {
        let sqs: Vec<String> = strings(&statement["Action"])
            .into_iter()
            .filter(|a| a.starts_with("sqs:"))
            .collect();
        if sqs.is_empty() {
            continue;
        }
        assert_eq!(owner, role, "only the aggregator's role uses the queue");
        assert_eq!(sqs, ["sqs:SendMessage"], "{owner}");
        assert_eq!(get_att(&statement["Resource"]), Some((queue, "Arn")));
    }
    // The re-scan reads the log with Scan, which nothing else may.
    for (owner, statement) in statements(&t) {
        if strings(&statement["Action"]).contains(&"dynamodb:Scan".to_owned()) {
            assert_eq!(owner, role, "{owner}: Scan");
            assert_eq!(
                get_att(&statement["Resource"]),
                Some(("CounterLogTable", "Arn"))
            );
        }
    }
    let granted: BTreeSet<String> = statements(&t)
        .into_iter()
        .filter(|(owner, s)| owner == role && get_att(&s["Resource"]) == Some((queue, "Arn")))
        .flat_map(|(_, s)| strings(&s["Action"]))
        .collect();
    assert!(granted.contains("sqs:SendMessage"), "the mapping can send");
}

/// Tables whose items stay until deleted by a request, and why no TTL may remove them.
const KEPT_FOR_GOOD: [(&str, &str); 3] = [
    (
        "KvTable",
        "a deleted key keeps its item (a tombstone with its version), so versions never go back",
    ),
    ("CounterTable", "totals are the data"),
    (
        "WidgetTable",
        "widgets are the data; a delete removes the item",
    ),
];

#[test]
fn every_table_expires_its_records_through_the_codes_ttl_attribute_or_keeps_them_for_a_stated_reason()
 {
    let t = Template::load();
    let kept: BTreeMap<&str, &str> = KEPT_FOR_GOOD.into_iter().collect();
    for table in t.tables() {
        let id = table.logical_id.as_str();
        let spec = &table.properties["TimeToLiveSpecification"];
        if kept.contains_key(id) {
            assert!(spec.is_null(), "{id}: {}", kept[id]);
            continue;
        }
        assert_eq!(
            spec["AttributeName"].as_str(),
            Some(strata_dynamo::TTL),
            "{id}: TTL on the attribute the code writes (or a reason in KEPT_FOR_GOOD)"
        );
        assert_eq!(spec["Enabled"].as_bool(), Some(true), "{id}: TTL enabled");
    }
    // The tables of idempotency and exactly-once records among them.
    for id in ["IdempotencyTable", "LedgerTable", "CounterLogTable"] {
        assert!(
            !kept.contains_key(id) && t.tables().iter().any(|table| table.logical_id == id),
            "{id}"
        );
    }
}

#[test]
fn functions_take_the_retention_from_a_parameter_of_at_least_a_day() {
    let t = Template::load();
    let doc = t.doc();
    let day = strata_core::defaults::RETENTION.as_secs();
    assert_eq!(day, 86_400);
    let parameter = &doc["Parameters"]["RetentionSeconds"];
    assert_eq!(parameter["Type"].as_str(), Some("Number"));
    assert!(
        parameter["MinValue"].as_u64().is_some_and(|m| m >= day),
        "MinValue"
    );
    assert_eq!(parameter["Default"].as_u64(), Some(day));
    let globals = &doc["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(
        ref_of(&globals["RETENTION_SECONDS"]),
        Some("RetentionSeconds")
    );
    // No function replaces it with a value of its own.
    for (id, function) in t.resources_of_type("AWS::Serverless::Function") {
        let own = &function["Properties"]["Environment"]["Variables"]["RETENTION_SECONDS"];
        assert!(own.is_null(), "{id} sets its own RETENTION_SECONDS");
    }
}
