//! What `template.yaml` must hold for a deployable, operable stack: least-privilege roles (no wildcard but
//! the documented X-Ray one), a log group with retention and tracing for every function, tables that are
//! on demand with point-in-time recovery and a deletion-protection switch, alarms wired to the optional
//! topic, and an event file (driven by a test) for every function.

mod alarms;
mod api;
mod functions;
mod iam;
mod tables;

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use strata::template::Template;

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
