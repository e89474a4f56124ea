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
use strata_tests::template::{get_att, if_of, ref_of, strings, tagged};

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
