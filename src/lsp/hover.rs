//! Hover: what a keyword does, the type and an example of a merge field,
//! and the definition of a variable.

use serde_json::{json, Value};

use crate::lsp::document::Document;
use crate::lsp::position::{Encoding, LineMap, Position};
pub use crate::schema::split_path;
use crate::schema::Lookup;
use crate::syntax::ast::{Item, LetValue, PathKey};

/// Words of the language and what each one does.
pub const KEYWORDS: &[(&str, &str)] = &[
    ("workflow", "`workflow \"NAME\"`: names the workflow. Optional, first line only."),
    ("let", "`let NAME = VALUE`: declares a variable, read as `<<vars.NAME>>`. Without a value it must be given with `--var NAME=VALUE`."),
    ("step", "`step \"NAME\" { ... }`: a named step holding actions and options. Steps run top to bottom."),
    ("http", "`http METHOD \"URL\" [PAYLOAD] [headers { ... }]`: sends one HTTP request."),
    ("llm", "`llm prompt \"...\" -> entity.path`: calls a model and writes its answer."),
    ("headers", "`headers { \"Name\": \"value\", ... }`: request headers; values may hold merge fields."),
    ("provider", "`provider NAME { kind ... base_url ... }`: configures a model provider."),
    ("schema", "`schema { field: type \"description\" }`: the fields a model must answer with."),
    ("prompt", "`prompt \"...\"`: the user message sent to the model."),
    ("system", "`system \"...\"`: the system message sent to the model."),
    ("model", "`model \"NAME\"`: the model to call."),
    ("choices", "`choices [\"a\", \"b\"]`: the model answers with exactly one of these."),
    ("fallback", "`fallback [\"model\"]`: models tried in turn when the first fails."),
    ("timeout", "`timeout DURATION`: limit for each request, such as `10s`. Default `30s`."),
    ("retries", "`retries N`: retries after the first request, 0 to 100. Default 5."),
    ("max_wait", "`max_wait DURATION`: longest wait before a retry. Default `120s`."),
    ("retry", "`retry on 5xx`, `retry on connection`: also retry these failures."),
    ("encode", "`encode off`: insert merge fields without encoding them for their place."),
    ("redirects", "`redirects off`: treat a 3xx response as final."),
    ("idempotency_key", "`idempotency_key off`: send POST and PATCH without an `Idempotency-Key` header."),
    ("on", "`on error continue notify | pause notify | continue silently`: what a failure does."),
    ("notify", "`notify webhook \"URL\"`: POST each notification as JSON to this URL."),
    ("save", "`save response.PATH -> entity.PATH`: copies a response value into the entity or a variable."),
    ("entity", "The record the workflow runs against. `entity schema \"FILE\"` names its JSON Schema or a sample."),
    ("vars", "Variables from `let`, `--var` and `save`."),
    ("execution", "The execution: `id`, `started_at`, `workflow`."),
    ("secret", "`secret.NAME` is the environment variable `FLOWRUN_SECRET_NAME`, or NAME in the `--secrets` file."),
    ("GET", "Reads a resource. It carries no payload."),
    ("POST", "Creates a resource. Carries an `Idempotency-Key` header."),
    ("PUT", "Replaces a resource."),
    ("PATCH", "Changes part of a resource. Carries an `Idempotency-Key` header."),
    ("DELETE", "Deletes a resource."),
    ("json", "Payload sent as `application/json`: a `{ ... }` or `[ ... ]` block, validated when checked."),
    ("xml", "Payload sent as `application/xml`: a string; merge fields are escaped as markup."),
    ("xhtml", "Payload sent as `application/xhtml+xml`: a string."),
    ("javascript", "Payload sent as `application/javascript`: a string."),
    ("html", "Payload sent as `text/html`: a string."),
    ("default", "Helper `default PATH VALUE`: the value at PATH, or VALUE when it is missing or null."),
    ("upper", "Helper `upper VALUE`: the text in upper case."),
    ("lower", "Helper `lower VALUE`: the text in lower case."),
    ("date", "Helper `date VALUE \"FORMAT\"`: a date written with a `time` format description."),
];

/// The fields of the `execution` root.
pub const EXECUTION_FIELDS: &[(&str, &str)] = &[
    ("id", "the execution id: a new UUID per run, or `--execution-id`"),
    ("started_at", "when the run started, RFC 3339 in UTC"),
    ("workflow", "the workflow's name"),
];

pub fn keyword_doc(word: &str) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, doc)| *doc)
}

/// Returns the merge-field path under `offset`, such as `entity.a.b`, and
/// its span, when `offset` is inside `<< >>`.
pub fn field_path_at(text: &str, offset: usize) -> Option<(String, usize, usize)> {
    let line_start = text[..offset].rfind(['\n', '\r']).map_or(0, |index| index + 1);
    let line_end = text[offset..]
        .find(['\n', '\r'])
        .map_or(text.len(), |index| offset + index);
    let open = text[line_start..offset].rfind("<<")? + line_start;
    if text[open..offset].contains(">>") {
        return None;
    }
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']');
    let mut start = offset;
    while start > open + 2 {
        let c = text[..start].chars().next_back()?;
        if !is_path_char(c) {
            break;
        }
        start -= c.len_utf8();
    }
    let mut end = offset;
    while end < line_end {
        let c = text[end..].chars().next()?;
        if !is_path_char(c) {
            break;
        }
        end += c.len_utf8();
    }
    (end > start).then(|| (text[start..end].to_string(), start, end))
}

/// Returns the word under `offset` and its start.
pub fn word_at(text: &str, offset: usize) -> Option<(&str, usize)> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let start = text[..offset]
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_word(*c))
        .last()
        .map_or(offset, |(index, _)| index);
    let end = text[offset..]
        .char_indices()
        .find(|(_, c)| !is_word(*c))
        .map_or(text.len(), |(index, _)| offset + index);
    (end > start).then(|| (&text[start..end], start))
}

pub fn hover(document: &mut Document, position: Position, encoding: Encoding) -> Value {
    let text = document.text.clone();
    let analysis = document.analysis();
    let offset = analysis.lines.offset(&text, position, encoding);
    let markdown = if let Some((path, start, end)) = field_path_at(&text, offset) {
        let (root, keys) = split_path(&path);
        let body = match root.as_str() {
            "entity" => {
                let mut body = format!("`{path}`: a field of the entity");
                if let Some(schema) = &analysis.schema {
                    match schema.lookup(&keys) {
                        Lookup::Found(shape) => {
                            body = format!("`{path}`: `{}`", shape.type_name());
                            if let Some(description) = &shape.description {
                                body.push_str(&format!("\n\n{description}"));
                            }
                            if let Some(example) = &shape.example {
                                body.push_str(&format!("\n\nExample: `{example}`"));
                            }
                            body.push_str(&format!("\n\nFrom `{}`.", schema.source.display()));
                        }
                        Lookup::Unknown { .. } => {
                            body = format!("`{path}`: not in the entity schema `{}`", schema.source.display());
                        }
                        Lookup::Opaque => {}
                    }
                }
                body
            }
            "vars" => match keys.first() {
                Some(PathKey::Field(name)) => variable_definition(&analysis.parsed.file, &text, &analysis.lines, name)
                    .unwrap_or_else(|| format!("`vars.{name}`: not declared with `let`")),
                _ => keyword_doc("vars").unwrap_or_default().to_string(),
            },
            "execution" => match keys.first() {
                Some(PathKey::Field(name)) => EXECUTION_FIELDS
                    .iter()
                    .find(|(field, _)| field == name)
                    .map_or_else(|| format!("`execution.{name}`: not an execution field"), |(_, doc)| {
                        format!("`execution.{name}`: {doc}")
                    }),
                _ => keyword_doc("execution").unwrap_or_default().to_string(),
            },
            "secret" => match keys.first() {
                Some(PathKey::Field(name)) => format!(
                    "`secret.{name}`: the environment variable `FLOWRUN_SECRET_{name}`, or `{name}` in the `--secrets` file. Shown as `***` everywhere."
                ),
                _ => keyword_doc("secret").unwrap_or_default().to_string(),
            },
            other => keyword_doc(other).unwrap_or_default().to_string(),
        };
        (!body.is_empty()).then_some((body, start, end))
    } else {
        word_at(&text, offset).and_then(|(word, start)| {
            keyword_doc(word).map(|doc| (doc.to_string(), start, start + word.len()))
        })
    };
    match markdown {
        Some((value, start, end)) => json!({
            "contents": {"kind": "markdown", "value": value},
            "range": analysis.lines.range(&text, crate::diagnostic::Span::new(start, end), encoding),
        }),
        None => Value::Null,
    }
}

/// Describes the `let` of a variable: its line and where it is.
fn variable_definition(
    file: &crate::syntax::ast::File,
    text: &str,
    lines: &LineMap,
    name: &str,
) -> Option<String> {
    file.items.iter().find_map(|item| match item {
        Item::Let(declaration) if declaration.name.text == name => {
            let written = &text[declaration.span.start..declaration.span.end];
            let line = lines.line_of(declaration.span.start) + 1;
            let kind = match &declaration.value {
                _ if declaration.ty.is_some() => declaration.ty.as_ref().map_or("", |ty| ty.text.as_str()),
                Some(LetValue::Field(_)) => "value of a merge field",
                Some(LetValue::Duration(..)) => "duration",
                Some(LetValue::String(_)) => "string",
                Some(LetValue::Number(..)) => "number",
                Some(LetValue::Bool(..)) => "boolean",
                None => "given with `--var`",
            };
            Some(format!(
                "```flow\n{written}\n```\n\nVariable ({kind}), declared on line {line}."
            ))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_path_is_found_inside_a_merge_field() {
        let text = "http GET \"http://x/<<entity.claim.id>>\"";
        let offset = text.find("claim").unwrap() + 2;
        let (path, start, _) = field_path_at(text, offset).expect("a path");
        assert_eq!(path, "entity.claim.id");
        assert_eq!(start, text.find("entity").unwrap());
        assert!(field_path_at(text, 3).is_none());
    }

    #[test]
    fn paths_split_into_keys() {
        assert_eq!(
            split_path("entity.items[2].sku"),
            (
                "entity".to_string(),
                vec![
                    PathKey::Field("items".into()),
                    PathKey::Index(2),
                    PathKey::Field("sku".into())
                ]
            )
        );
    }
}
