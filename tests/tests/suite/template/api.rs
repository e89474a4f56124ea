//! The APIs: parameters, stage throttling, the authorizer and its auth modes, access logs, and
//! samconfig's overrides.

use super::iam::flatten;
use super::*;

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
