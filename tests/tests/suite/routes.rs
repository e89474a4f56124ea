//! Routes are declared once: the template's HTTP API events and the local server's route table must be the
//! same set, served by the same Lambda binaries, each of which exists.

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
fn every_route_has_its_lambda_binary() {
    let root = strata_tests::repo_root();
    for route in routes::all().into_iter().chain([routes::FALLBACK]) {
        let found = std::fs::read_dir(root.join("functions"))
            .unwrap()
            .any(|service| {
                service
                    .unwrap()
                    .path()
                    .join(format!("src/bin/{}.rs", route.function))
                    .is_file()
            });
        assert!(
            found,
            "no functions/*/src/bin/{}.rs for {route:?}",
            route.function
        );
    }
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
