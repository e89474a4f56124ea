//! `template.yaml`: each function's DynamoDB grants.

use super::*;
use strata_tests::template::{get_att, strings, tagged};

/// A statement's resource as the recorder names it: `KvTable` (`!GetAtt KvTable.Arn`),
/// `CounterLogTable/stream` (`.StreamArn`), `KvTable/index/*` (`!Sub "${KvTable.Arn}/index/*"`).
pub(super) fn resource_name(resource: &Yaml) -> String {
    if let Some((id, attribute)) = get_att(resource) {
        return match attribute {
            "Arn" => id.to_owned(),
            "StreamArn" => format!("{id}/stream"),
            other => format!("{id}.{other}"),
        };
    }
    if let Some((tag, Yaml::String(sub))) = tagged(resource)
        && tag == "!Sub"
        && let Some(rest) = sub.strip_prefix("${")
        && let Some((att, tail)) = rest.split_once('}')
        && let Some(id) = att.strip_suffix(".Arn")
    {
        return format!("{id}{tail}");
    }
    format!("{resource:?}")
}

/// Function (its `Handler`) → `(role, its DynamoDB grants)`.
pub(super) fn granted(t: &Template) -> BTreeMap<String, (String, BTreeSet<Grant>)> {
    let doc = t.doc();
    let mut all = BTreeMap::new();
    for (id, function) in t.resources_of_type("AWS::Serverless::Function") {
        let binary = function["Properties"]["Handler"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: no Handler"))
            .to_owned();
        let (role, _) = get_att(&function["Properties"]["Role"])
            .unwrap_or_else(|| panic!("{id}: no Role: !GetAtt"));
        let props = &doc["Resources"][role]["Properties"];
        let mut statements: Vec<Yaml> = Vec::new();
        for policy in props["Policies"].as_sequence().into_iter().flatten() {
            statements.extend(
                policy["PolicyDocument"]["Statement"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        for arn in props["ManagedPolicyArns"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if let Some((tag, Yaml::String(local))) = tagged(arn)
                && tag == "!Ref"
            {
                statements.extend(
                    doc["Resources"][local.as_str()]["Properties"]["PolicyDocument"]["Statement"]
                        .as_sequence()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }
        let mut grants = BTreeSet::new();
        for s in statements {
            // `DescribeEndpoints` on "*" is every function's init call, not any handler's (the binary
            // opens its connection with it: `deadlines::a_lambda_calls_dynamodb_during_init_…` proves
            // the call, `template::iam` the one statement on "*" that grants it).
            let actions: Vec<String> = strings(&s["Action"])
                .into_iter()
                .filter(|a| a.starts_with("dynamodb:") && a != "dynamodb:DescribeEndpoints")
                .collect();
            let resources = match &s["Resource"] {
                Yaml::Sequence(items) => items.clone(),
                one => vec![one.clone()],
            };
            for action in &actions {
                for resource in &resources {
                    grants.insert((action.clone(), resource_name(resource)));
                }
            }
        }
        all.insert(binary, (role.to_owned(), grants));
    }
    all
}
