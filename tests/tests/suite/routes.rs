//! Operations are declared once (`strata_http::route`, gathered by `strata-api`): the template's HTTP API
//! events and the local server's route table are the same set, every template function is one the Lambda
//! binary serves, and the template's function blocks are exactly what the declarations generate.

use std::collections::BTreeSet;
use strata::routes;
use strata::template::Template;

#[test]
fn template_routes_and_local_routes_are_the_same_set() {
    let local: BTreeSet<(String, String, String)> = routes::all()
        .into_iter()
        .chain([routes::FALLBACK])
        .map(|r| {
            (
                r.method.to_owned(),
                r.path.to_owned(),
                r.function.to_owned(),
            )
        })
        .collect();
    let template: BTreeSet<(String, String, String)> = Template::load()
        .http_routes()
        .into_iter()
        .map(|r| (r.method, r.path, r.binary))
        .collect();
    let only_local: Vec<_> = local.difference(&template).collect();
    let only_template: Vec<_> = template.difference(&local).collect();
    assert!(
        only_local.is_empty() && only_template.is_empty(),
        "routes differ\n  only in the local server: {only_local:?}\n  only in template.yaml: {only_template:?}"
    );
}

#[test]
fn every_template_function_is_one_the_lambda_binary_serves_and_the_reverse() {
    let template: BTreeSet<String> = Template::load()
        .resources_of_type("AWS::Serverless::Function")
        .map(|(id, f)| {
            f["Properties"]["Handler"]
                .as_str()
                .unwrap_or_else(|| panic!("{id}: no Handler"))
                .to_owned()
        })
        .collect();
    let declared: BTreeSet<String> = strata_api::functions()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(
        template, declared,
        "template functions vs declared functions"
    );
    for name in &template {
        assert!(
            strata_api::function(name).is_some(),
            "the Lambda binary serves no {name}"
        );
    }
}

/// `template.yaml`'s function blocks are what `strata generate template` writes from the declarations.
#[test]
fn template_yaml_is_generated_from_the_declarations() {
    let committed = strata::template::SOURCE;
    let generated = strata::generate::template(committed).expect("markers in template.yaml");
    if generated != committed {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or(
                committed.lines().count().min(generated.lines().count()),
                |i| i,
            )
            + 1;
        panic!(
            "template.yaml differs from the declarations from line {line}: run `cargo run -p strata -- \
             generate template` from the repository root and commit the result"
        );
    }
}

/// What a person reads: the template stays short (the repeated blocks are loops or generated once).
#[test]
fn template_yaml_is_under_1500_lines() {
    let lines = strata::template::SOURCE.lines().count();
    assert!(lines < 1500, "template.yaml has {lines} lines");
}

#[test]
fn every_table_is_passed_to_the_functions() {
    for table in Template::load().tables() {
        assert!(
            !table.env_var.is_empty(),
            "table {} has no environment variable in Globals",
            table.logical_id
        );
    }
}
