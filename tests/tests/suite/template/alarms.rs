//! Alarms on the API, the functions and the tables, and the counter log's failover queue.

use super::*;

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
