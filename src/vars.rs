//! Variables as read from YAML, shared by the inventory and the playbook:
//! their type, the kind of a value (for messages), and where a YAML error is.

use serde_json::{Map, Value};
use std::path::Path;

pub type Vars = Map<String, Value>;

/// A YAML parse error as `file:line:column: message`, with a hint when a
/// field name is close to a known one.
pub fn yaml_error(file: &Path, error: &serde_yaml::Error) -> String {
    let hint = crate::suggest::unknown_field_hint(&error.to_string());
    match error.location() {
        Some(loc) => format!("{}:{}:{}: {error}{hint}", file.display(), loc.line(), loc.column()),
        None => format!("{}: {error}{hint}", file.display()),
    }
}

pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
