//! Reading `template.yaml`'s intrinsic functions (`!Ref`, `!GetAtt`, `!If`, any `!Tag`) out of its YAML, for
//! the tests that hold the template to what the code needs.

use serde_yaml::Value;

/// `!Tag value` as `(tag, value)`.
pub fn tagged(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(t) => Some((t.tag.to_string(), &t.value)),
        _ => None,
    }
}

/// `(condition, then, else)` of `!If [Condition, then, else]`.
pub fn if_of(value: &Value) -> Option<(&str, &Value, &Value)> {
    match tagged(value)? {
        (tag, Value::Sequence(items)) if tag == "!If" && items.len() == 3 => {
            Some((items[0].as_str()?, &items[1], &items[2]))
        }
        _ => None,
    }
}

/// The logical id in `!Ref Id`.
pub fn ref_of(value: &Value) -> Option<&str> {
    match tagged(value)? {
        (tag, v) if tag == "!Ref" => v.as_str(),
        _ => None,
    }
}

/// `(logical id, attribute)` of `!GetAtt Id.Attribute`.
pub fn get_att(value: &Value) -> Option<(&str, &str)> {
    match tagged(value)? {
        (tag, v) if tag == "!GetAtt" => v.as_str()?.split_once('.'),
        _ => None,
    }
}

/// A string, or the strings of a list (nested lists flattened); anything else as its debug form, which
/// then matches no expected name.
pub fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        other => vec![format!("{other:?}")],
    }
}
