//! `save` lines: copy a value from a response into the entity or a variable.

use serde_json::Value;
use tracing::debug;

use crate::diagnostic::{Code, Diagnostic};
use crate::program::{Request, Save, SaveSource, SaveTarget};
use crate::run::http::Exchange;
use crate::run::Execution;
use crate::syntax::ast::{push_path_key, PathKey};

/// Applies the saves of `request`, in order.
pub(crate) fn apply_all(
    request: &Request,
    exchange: &Exchange,
    execution: &mut Execution,
) -> Result<(), Diagnostic> {
    // The saves of a request apply together or not at all, so every value
    // is read before anything is written.
    let mut parsed_body: Option<Value> = None;
    let mut values = Vec::with_capacity(request.saves.len());
    for save in &request.saves {
        let value = read(save, exchange, &mut parsed_body).map_err(|message| failed(save, message))?;
        // The entity is one level and each key but the last leads into
        // another; the variables are one level.
        let levels = match &save.target {
            SaveTarget::Variable(_) => 1,
            SaveTarget::Entity(path) => path.len(),
        };
        if let Some(reason) = crate::value::too_deep(levels, &value) {
            return Err(failed(save, format!("the value is too deep to save: {reason}")));
        }
        // A server that echoes a secret must not put it in the entity, which
        // flowrun prints and stores.
        values.push(execution.redact_value(value));
    }
    // With every depth checked, writing a variable or a top-level field of
    // an object cannot fail. Any other write goes to a copy of the entity,
    // which replaces it at the end.
    let cannot_fail = execution.entity.is_object()
        && request.saves.iter().all(|save| match &save.target {
            SaveTarget::Variable(_) => true,
            SaveTarget::Entity(path) => matches!(path.as_slice(), [PathKey::Field(_)]),
        });
    let mut copy = (!cannot_fail).then(|| execution.entity.clone());
    let mut variables = Vec::new();
    for (save, value) in request.saves.iter().zip(values) {
        match &save.target {
            // Written once every entity write has succeeded. The two kinds
            // of target never overlap, so the order between them does not
            // change the result.
            SaveTarget::Variable(name) => variables.push((name, value)),
            SaveTarget::Entity(path) => {
                let entity = copy.as_mut().unwrap_or(&mut execution.entity);
                set_path(entity, path, value).map_err(|message| failed(save, message))?;
            }
        }
        debug!(source = %save.source_text, "saved `{}`", save.source_text);
    }
    if let Some(entity) = copy {
        execution.entity = entity;
    }
    for (name, value) in variables {
        execution.vars.insert(name.clone(), value);
        // A saved value replaces what a `let` read from a secret.
        execution.secret_vars.remove(name);
    }
    Ok(())
}

/// Writes a placeholder such as `<response.json.id>` to every save target,
/// so that a dry run can render later steps that use saved values.
pub(crate) fn apply_placeholders(request: &Request, execution: &mut Execution) {
    for save in &request.saves {
        let placeholder = Value::String(format!("<{}>", save.source_text));
        // A target that cannot be written stays unset, and the step that
        // reads it shows why in the dry run.
        let _ = write(&save.target, placeholder, execution);
    }
}

fn failed(save: &Save, message: String) -> Diagnostic {
    Diagnostic::error(
        Code::SaveFailed,
        format!("cannot save `{}`: {message}", save.source_text),
    )
    .with_label(save.span, "this save")
    .with_help("check the response the server sends, for example with a request in a terminal")
}

fn read(save: &Save, exchange: &Exchange, parsed_body: &mut Option<Value>) -> Result<Value, String> {
    match &save.source {
        SaveSource::Status => Ok(Value::from(exchange.status.as_u16())),
        SaveSource::Body => Ok(Value::String(
            String::from_utf8_lossy(&exchange.body).into_owned(),
        )),
        SaveSource::Header(name) => exchange
            .headers
            .get(name.as_str())
            .map(|value| Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .ok_or_else(|| format!("the response has no header `{name}`")),
        SaveSource::Json(path) => {
            if parsed_body.is_none() {
                let body: Value = serde_json::from_slice(&exchange.body)
                    .map_err(|error| format!("the response body is not valid JSON ({error})"))?;
                *parsed_body = Some(body);
            }
            let mut value = parsed_body.as_ref().unwrap_or(&Value::Null);
            let mut walked = String::from("response.json");
            for key in path {
                push_path_key(&mut walked, key);
                let next = match (key, value) {
                    (PathKey::Field(name), Value::Object(map)) => map.get(name),
                    (PathKey::Index(index), Value::Array(items)) => items.get(*index),
                    _ => None,
                };
                value = next.ok_or_else(|| format!("the response JSON has no `{walked}`"))?;
            }
            Ok(value.clone())
        }
    }
}

fn write(target: &SaveTarget, value: Value, execution: &mut Execution) -> Result<(), String> {
    match target {
        SaveTarget::Variable(name) => {
            execution.vars.insert(name.clone(), value);
            Ok(())
        }
        SaveTarget::Entity(path) => {
            // Written to a copy first, so that a failed save leaves the
            // entity as it was.
            let mut entity = execution.entity.clone();
            set_path(&mut entity, path, value)?;
            execution.entity = entity;
            Ok(())
        }
    }
}

/// Writes `value` at `path`, creating objects for missing fields on the way.
pub fn set_path(root: &mut Value, path: &[PathKey], value: Value) -> Result<(), String> {
    // The entity is one level, and each key but the last leads into another.
    if let Some(reason) = crate::value::too_deep(path.len(), &value) {
        let mut written = String::from("entity");
        for key in path {
            push_path_key(&mut written, key);
        }
        return Err(format!("cannot write `{written}`: {reason}"));
    }
    let mut current = root;
    // Builds the path up to the key at `index`, for error messages only.
    let walked = |index: usize| {
        let mut walked = String::from("entity");
        for key in &path[..=index] {
            push_path_key(&mut walked, key);
        }
        walked
    };
    for (index, key) in path.iter().enumerate() {
        let last = index + 1 == path.len();
        current = match (key, current) {
            (PathKey::Field(name), Value::Object(map)) => {
                if last {
                    map.insert(name.clone(), value);
                    return Ok(());
                }
                map.entry(name.clone())
                    .or_insert_with(|| Value::Object(Default::default()))
            }
            (PathKey::Index(position), Value::Array(items)) => {
                let length = items.len();
                let slot = items
                    .get_mut(*position)
                    .ok_or_else(|| format!("`{}` is past the end of a list of {length}", walked(index)))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            (_, other) => {
                let kind = match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Array(_) => "a list",
                    Value::Object(_) => "an object",
                };
                return Err(format!(
                    "cannot write `{}` because its parent is {kind}",
                    walked(index)
                ));
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_path_creates_objects() {
        let mut entity = json!({"a": 1});
        set_path(
            &mut entity,
            &[PathKey::Field("b".into()), PathKey::Field("c".into())],
            json!(2),
        )
        .unwrap();
        assert_eq!(entity, json!({"a": 1, "b": {"c": 2}}));
    }

    #[test]
    fn set_path_reports_bad_parents() {
        let mut entity = json!({"a": 1, "list": [0]});
        let error = set_path(
            &mut entity,
            &[PathKey::Field("a".into()), PathKey::Field("b".into())],
            json!(2),
        );
        assert_eq!(
            error,
            Err("cannot write `entity.a.b` because its parent is a number".to_string())
        );
        let error = set_path(
            &mut entity,
            &[PathKey::Field("list".into()), PathKey::Index(3)],
            json!(2),
        );
        assert_eq!(
            error,
            Err("`entity.list[3]` is past the end of a list of 1".to_string())
        );
    }
}
