//! `template.yaml`, read as data: the routes it serves, the tables it declares, and its resources for the
//! checks on policies, logs and alarms, with its `Fn::ForEach` loops expanded as CloudFormation's
//! `AWS::LanguageExtensions` transform does.
//!
//! The template is the single declaration of tables and API routes. The local server and the tests read it
//! from here (it is compiled into the binary), so nothing restates a table's keys or a route's path.

use serde_yaml::Value;
use std::collections::BTreeMap;

/// The SAM template, as committed.
pub const SOURCE: &str = include_str!("../../template.yaml");

/// The parsed template.
#[derive(Debug)]
pub struct Template {
    doc: Value,
}

/// A route as the template declares it: an HTTP API event on a function.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateRoute {
    pub method: String,
    pub path: String,
    /// `Handler` of the function: the operation it serves.
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
        let mut doc: Value = serde_yaml::from_str(source)?;
        if let Some(resources) = doc.get_mut("Resources").and_then(Value::as_mapping_mut) {
            *resources = expand_for_each(resources);
        }
        Ok(Self { doc })
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
            let binary = resource["Properties"]["Handler"]
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

/// The mapping with every `Fn::ForEach::<name>: [Identifier, [values], {template}]` replaced by one copy of
/// its template per value, `${Identifier}` and `&{Identifier}` substituted in keys and strings (nested
/// loops too). Only literal collections: the template's loops are over lists written in it.
fn expand_for_each(mapping: &serde_yaml::Mapping) -> serde_yaml::Mapping {
    let mut out = serde_yaml::Mapping::new();
    for (key, value) in mapping {
        let Some(name) = key.as_str().filter(|k| k.starts_with("Fn::ForEach::")) else {
            out.insert(key.clone(), value.clone());
            continue;
        };
        let parts = value.as_sequence().map(Vec::as_slice).unwrap_or_default();
        let (Some(ident), Some(values), Some(body)) = (
            parts.first().and_then(Value::as_str),
            parts.get(1).and_then(Value::as_sequence),
            parts.get(2).and_then(Value::as_mapping),
        ) else {
            panic!("{name}: not [Identifier, [values], {{template}}]");
        };
        for v in values {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a value is not a string"));
            if let Value::Mapping(copy) = substitute(&Value::Mapping(body.clone()), ident, v) {
                out.extend(expand_for_each(&copy));
            }
        }
    }
    out
}

fn substitute(value: &Value, ident: &str, with: &str) -> Value {
    let alnum: String = with.chars().filter(char::is_ascii_alphanumeric).collect();
    let text = |s: &str| {
        s.replace(&format!("${{{ident}}}"), with)
            .replace(&format!("&{{{ident}}}"), &alnum)
    };
    match value {
        Value::String(s) => Value::String(text(s)),
        Value::Sequence(items) => {
            Value::Sequence(items.iter().map(|i| substitute(i, ident, with)).collect())
        }
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, v)| (substitute(k, ident, with), substitute(v, ident, with)))
                .collect(),
        ),
        Value::Tagged(t) => Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: t.tag.clone(),
            value: substitute(&t.value, ident, with),
        })),
        other => other.clone(),
    }
}
