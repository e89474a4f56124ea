//! The roles' statements: no wildcard but the documented X-Ray one, DynamoDB data-plane actions only, on
//! the right resource.

use super::*;

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

fn is_xray_exception(statement: &Value) -> bool {
    let actions: BTreeSet<String> = strings(&statement["Action"]).into_iter().collect();
    let expected: BTreeSet<String> = XRAY_ACTIONS.iter().map(|a| a.to_string()).collect();
    actions == expected && statement["Resource"].as_str() == Some("*")
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
