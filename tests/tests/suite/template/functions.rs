//! Every function: its own role, log group and tracing, an event file driven by a test, timeouts that
//! nest, reserved concurrency, and the retention parameter.

use super::*;

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
    // Each file is named by some test of this suite (not these template tests), which sends it through
    // the real handler.
    let suite: String = sources(&root.join("tests/tests/suite"))
        .into_iter()
        .filter(|p| !p.starts_with(root.join("tests/tests/suite/template")))
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

/// The `.rs` files under `dir`, its module directories included.
fn sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}
