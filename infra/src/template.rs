//! `template.yaml`, read as data: the routes it serves, the tables it declares, and its resources for the
//! checks on policies, logs and alarms.
//!
//! The template is the single declaration of tables and API routes. The local server and the tests read it
//! from here (it is compiled into the binary), so nothing restates a table's keys or a route's path.

use serde_yaml::Value;
use std::collections::BTreeMap;

/// The SAM template, as committed.
pub const SOURCE: &str = include_str!("../../template.yaml");

/// The parsed template.
pub struct Template {
    doc: Value,
}

/// A route as the template declares it: an HTTP API event on a function.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateRoute {
    pub method: String,
    pub path: String,
    /// `Metadata.BuildProperties.Binary` of the function: the Lambda binary that serves the route.
    pub binary: String,
}

/// A DynamoDB table resource and the environment variable that passes its name to the functions.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub logical_id: String,
    pub env_var: String,
    /// The table's `Properties`, as written.
    pub properties: Value,
}

impl Template {
    pub fn load() -> Self {
        Self::parse(SOURCE).expect("template.yaml is valid YAML")
    }

    pub fn parse(source: &str) -> Result<Self, serde_yaml::Error> {
        Ok(Self {
            doc: serde_yaml::from_str(source)?,
        })
    }

    /// The whole document, for checks that look past routes and tables (policies, alarms, parameters).
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Every resource as `(logical id, resource)`, in template order.
    pub fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.doc["Resources"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(id, resource)| Some((id.as_str()?, resource)))
    }

    /// Every `HttpApi` event of every function.
    pub fn http_routes(&self) -> Vec<TemplateRoute> {
        let mut routes = Vec::new();
        for (_, resource) in self.resources() {
            if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
                continue;
            }
            let binary = resource["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            for (_, event) in resource["Properties"]["Events"]
                .as_mapping()
                .into_iter()
                .flatten()
            {
                if event["Type"].as_str() != Some("HttpApi") {
                    continue;
                }
                routes.push(TemplateRoute {
                    method: event["Properties"]["Method"]
                        .as_str()
                        .unwrap_or("")
                        .to_uppercase(),
                    path: event["Properties"]["Path"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    binary: binary.clone(),
                });
            }
        }
        routes.sort();
        routes
    }

    /// The function environment variables (from `Globals`) that name a table with `!Ref`.
    fn table_env_vars(&self) -> BTreeMap<String, String> {
        let vars = &self.doc["Globals"]["Function"]["Environment"]["Variables"];
        let mut by_table = BTreeMap::new();
        for (name, value) in vars.as_mapping().into_iter().flatten() {
            if let (Some(name), Value::Tagged(tagged)) = (name.as_str(), value)
                && tagged.tag == "!Ref"
                && let Some(table) = tagged.value.as_str()
            {
                by_table.insert(table.to_owned(), name.to_owned());
            }
        }
        by_table
    }

    /// The resources of one type (`AWS::Serverless::Function`, `AWS::IAM::Role`, ...).
    pub fn resources_of_type<'a>(
        &'a self,
        ty: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.resources()
            .filter(move |(_, r)| r["Type"].as_str() == Some(ty))
    }

    /// Every `AWS::DynamoDB::Table`, with the environment variable that carries its name.
    pub fn tables(&self) -> Vec<TableDef> {
        let env_vars = self.table_env_vars();
        self.resources()
            .filter(|(_, r)| r["Type"].as_str() == Some("AWS::DynamoDB::Table"))
            .map(|(id, r)| TableDef {
                logical_id: id.to_owned(),
                env_var: env_vars.get(id).cloned().unwrap_or_default(),
                properties: r["Properties"].clone(),
            })
            .collect()
    }
}
