//! Renders compiled templates against the merge-field scope of one
//! execution.
//!
//! Substitution is single-pass: the text a merge field inserts is written
//! to the output and never read as a template again.

pub mod encode;

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::diagnostic::Span;
use crate::program::{Compiled, Encoding, Piece};
use crate::syntax::ast::{push_path_key, Call, Expr, Path, PathKey};

/// The values merge fields read from.
pub struct Scope<'a> {
    pub entity: &'a Value,
    /// `{ "id": ..., "started_at": ..., "workflow": ... }`
    pub execution: &'a Value,
    pub vars: &'a Map<String, Value>,
    pub secrets: &'a HashMap<String, String>,
    /// Renders every secret as `***`, for dry runs.
    pub mask_secrets: bool,
}

/// The reason a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A path that does not exist. `path` is the part that was found plus the
    /// first missing step, as written in canonical form.
    Missing { path: String, full: String, span: Span },
    /// A helper that cannot handle its argument.
    Helper { message: String, span: Span },
}

impl RenderError {
    pub fn span(&self) -> Span {
        match self {
            RenderError::Missing { span, .. } | RenderError::Helper { span, .. } => *span,
        }
    }
}

/// Renders `template` into a new string.
pub fn render(template: &Compiled, scope: &Scope<'_>) -> Result<String, RenderError> {
    let mut out = String::new();
    render_into(&mut out, template, scope)?;
    Ok(out)
}

pub fn render_into(out: &mut String, template: &Compiled, scope: &Scope<'_>) -> Result<(), RenderError> {
    for piece in &template.pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Field { expr, encoding, .. } => {
                let value = evaluate(expr, scope)?;
                encode::write_value(out, &value, *encoding);
            }
        }
    }
    Ok(())
}

/// Evaluates one merge-field expression.
pub fn evaluate<'s>(expr: &Expr, scope: &Scope<'s>) -> Result<Cow<'s, Value>, RenderError> {
    match expr {
        Expr::Path(path) => resolve(path, scope),
        Expr::String(text, _) => Ok(Cow::Owned(Value::String(text.clone()))),
        Expr::Number(text, _) => Ok(Cow::Owned(
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        )),
        Expr::Call(call) => call_helper(call, scope).map(Cow::Owned),
    }
}

fn resolve<'s>(path: &Path, scope: &Scope<'s>) -> Result<Cow<'s, Value>, RenderError> {
    let root: &'s Value = match path.root.text.as_str() {
        "entity" => scope.entity,
        "execution" => scope.execution,
        "vars" => return resolve_in_map(path, scope.vars),
        "secret" => return resolve_secret(path, scope),
        _ => {
            return Err(RenderError::Missing {
                path: path.root.text.clone(),
                full: path.display(),
                span: path.span,
            })
        }
    };
    walk(root, path, 0).map(Cow::Borrowed)
}

fn resolve_in_map<'s>(path: &Path, map: &'s Map<String, Value>) -> Result<Cow<'s, Value>, RenderError> {
    let missing = || missing_at(path, 0);
    let Some(first) = path.segments.first() else {
        return Err(missing());
    };
    let PathKey::Field(name) = &first.key else {
        return Err(missing());
    };
    let value = map.get(name).ok_or_else(missing)?;
    walk(value, path, 1).map(Cow::Borrowed)
}

fn resolve_secret<'s>(path: &Path, scope: &Scope<'s>) -> Result<Cow<'s, Value>, RenderError> {
    let Some(PathKey::Field(name)) = path.segments.first().map(|segment| &segment.key) else {
        return Err(missing_at(path, 0));
    };
    if scope.mask_secrets {
        return Ok(Cow::Owned(Value::String("***".to_string())));
    }
    match scope.secrets.get(name) {
        Some(value) => Ok(Cow::Owned(Value::String(value.clone()))),
        None => Err(missing_at(path, 0)),
    }
}

/// Follows the segments of `path` from index `from` on, starting at `value`.
fn walk<'s>(mut value: &'s Value, path: &Path, from: usize) -> Result<&'s Value, RenderError> {
    for (index, segment) in path.segments.iter().enumerate().skip(from) {
        let next = match (&segment.key, value) {
            (PathKey::Field(name), Value::Object(map)) => map.get(name),
            (PathKey::Index(position), Value::Array(items)) => items.get(*position),
            _ => None,
        };
        value = next.ok_or_else(|| missing_at(path, index))?;
    }
    Ok(value)
}

fn missing_at(path: &Path, index: usize) -> RenderError {
    let mut found = path.root.text.clone();
    for segment in path.segments.iter().take(index + 1) {
        push_path_key(&mut found, &segment.key);
    }
    RenderError::Missing {
        path: found,
        full: path.display(),
        span: path.span,
    }
}

fn call_helper(call: &Call, scope: &Scope<'_>) -> Result<Value, RenderError> {
    let arg = |index: usize| evaluate(&call.args[index], scope);
    match call.helper.text.as_str() {
        "default" => match arg(0) {
            Ok(value) if !value.is_null() => Ok(value.into_owned()),
            // A helper that fails on its value, such as `date` on text that
            // is not a date, falls back like a missing path.
            Ok(_) | Err(RenderError::Missing { .. }) | Err(RenderError::Helper { .. }) => {
                arg(1).map(Cow::into_owned)
            }
        },
        "upper" => Ok(Value::String(encode::text_of(&*arg(0)?).to_uppercase())),
        "lower" => Ok(Value::String(encode::text_of(&*arg(0)?).to_lowercase())),
        "json" => Ok(Value::String(
            serde_json::to_string(&*arg(0)?).unwrap_or_default(),
        )),
        "date" => {
            let value = arg(0)?;
            let Expr::String(format, _) = &call.args[1] else {
                return Err(helper_error(call, "the format of `date` must be a quoted string"));
            };
            format_date(&encode::text_of(&value), format).map_err(|message| helper_error(call, &message))
        }
        other => Err(helper_error(call, &format!("unknown helper `{other}`"))),
    }
}

fn helper_error(call: &Call, message: &str) -> RenderError {
    RenderError::Helper {
        message: message.to_string(),
        span: call.span,
    }
}

/// Formats an RFC 3339 date-time or a `YYYY-MM-DD` date.
fn format_date(text: &str, format: &str) -> Result<Value, String> {
    use time::format_description::well_known::Rfc3339;

    let description = time::format_description::parse_borrowed::<2>(format)
        .map_err(|error| format!("invalid date format: {error}"))?;
    let formatted = if let Ok(moment) = time::OffsetDateTime::parse(text, &Rfc3339) {
        moment.format(&description)
    } else {
        let date_format = time::macros::format_description!("[year]-[month]-[day]");
        let date = time::Date::parse(text, &date_format)
            .map_err(|_| format!("`{text}` is not an RFC 3339 date-time or a YYYY-MM-DD date"))?;
        date.format(&description)
    };
    formatted
        .map(Value::String)
        .map_err(|error| format!("cannot format `{text}`: {error}"))
}

/// Whether any field of the template uses `encoding`.
pub fn uses_encoding(template: &Compiled, encoding: Encoding) -> bool {
    template
        .pieces
        .iter()
        .any(|piece| matches!(piece, Piece::Field { encoding: used, .. } if *used == encoding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::template::{parse, Mode};
    use serde_json::json;

    fn compile(text: &str, encoding: Encoding) -> Compiled {
        let mut diagnostics = Vec::new();
        let template = parse(text, 0, Mode::Quoted, &mut diagnostics);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let pieces = template
            .segments
            .into_iter()
            .map(|segment| match segment {
                crate::syntax::ast::Segment::Text(part) => Piece::Text(part.text),
                crate::syntax::ast::Segment::Field(field) => Piece::Field {
                    expr: field.expr,
                    encoding,
                    span: field.span,
                },
            })
            .collect();
        Compiled { pieces }
    }

    fn render_with(text: &str, entity: Value) -> Result<String, RenderError> {
        let execution = json!({"id": "e-1", "started_at": "2026-12-04T10:30:00Z", "workflow": "w"});
        let mut vars = Map::new();
        vars.insert("api".into(), json!("http://x"));
        let secrets = HashMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
        let scope = Scope {
            entity: &entity,
            execution: &execution,
            vars: &vars,
            secrets: &secrets,
            mask_secrets: false,
        };
        render(&compile(text, Encoding::Raw), &scope)
    }

    #[test]
    fn paths_resolve() {
        let entity = json!({"items": [{"sku": "A1"}], "first name": "Ada", "n": null});
        assert_eq!(
            render_with(
                r#"<<entity.items[0].sku>>/<<entity["first name"]>>/<<entity.n>>"#,
                entity
            )
            .unwrap(),
            "A1/Ada/"
        );
        assert_eq!(
            render_with("<<vars.api>> <<secret.TOKEN>> <<execution.id>>", json!({})).unwrap(),
            "http://x s3cret e-1"
        );
    }

    #[test]
    fn missing_paths_name_the_first_missing_step() {
        let error = render_with("<<entity.a.b.c>>", json!({"a": {}})).unwrap_err();
        assert_eq!(
            error,
            RenderError::Missing {
                path: "entity.a.b".into(),
                full: "entity.a.b.c".into(),
                span: Span::new(2, 14)
            }
        );
        let error = render_with("<<entity.items[3]>>", json!({"items": [1]})).unwrap_err();
        assert!(matches!(error, RenderError::Missing { path, .. } if path == "entity.items[3]"));
    }

    #[test]
    fn helpers() {
        let entity = json!({"name": "Ada", "none": null, "at": "2026-12-04T10:30:00+01:00"});
        assert_eq!(
            render_with(r#"<<default entity.nope "n/a">>"#, entity.clone()).unwrap(),
            "n/a"
        );
        assert_eq!(
            render_with(r#"<<default entity.none "n/a">>"#, entity.clone()).unwrap(),
            "n/a"
        );
        assert_eq!(
            render_with(r#"<<default entity.name "n/a">>"#, entity.clone()).unwrap(),
            "Ada"
        );
        assert_eq!(
            render_with("<<upper entity.name>><<lower entity.name>>", entity.clone()).unwrap(),
            "ADAada"
        );
        assert_eq!(
            render_with("<<json entity.name>>", entity.clone()).unwrap(),
            "\"Ada\""
        );
        assert_eq!(
            render_with(r#"<<date entity.at "[day]/[month]/[year]">>"#, entity.clone()).unwrap(),
            "04/12/2026"
        );
        assert!(matches!(
            render_with(r#"<<date entity.name "[year]">>"#, entity),
            Err(RenderError::Helper { .. })
        ));
    }

    #[test]
    fn substitution_is_single_pass() {
        let entity = json!({"a": "<<entity.b>>", "b": "no"});
        assert_eq!(render_with("<<entity.a>>", entity).unwrap(), "<<entity.b>>");
    }
}
