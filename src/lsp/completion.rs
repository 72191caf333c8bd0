//! Completion: keywords, step kinds, methods, payload kinds, content types,
//! merge-field roots and paths, variables, option values and snippets.
//!
//! The context comes from the text of the line before the cursor, so that a
//! line being typed, which the grammar cannot read yet, still completes.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::check::PAYLOAD_KINDS;
use crate::diagnostic::Span;
use crate::lsp::document::Document;
use crate::lsp::hover::{keyword_doc, split_path, EXECUTION_FIELDS};
use crate::lsp::position::{Encoding, Position};
use crate::schema::Lookup;
use crate::syntax::ast::Item;

const KEYWORD: u8 = 14;
const SNIPPET: u8 = 15;
const VARIABLE: u8 = 6;
const FIELD: u8 = 5;
const FUNCTION: u8 = 3;
const VALUE: u8 = 12;
const MODULE: u8 = 9;
const REFERENCE: u8 = 18;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const HELPERS: [&str; 5] = ["default", "upper", "lower", "json", "date"];
const ROOTS: [&str; 4] = ["entity", "vars", "execution", "secret"];

/// Media types offered inside a spelled-out payload kind or a
/// `Content-Type` header.
pub const CONTENT_TYPES: [&str; 10] = [
    "application/json",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/fhir+json",
    "application/hl7-v2",
    "application/pdf",
    "text/csv",
    "text/plain",
    "text/xml",
    "text/html",
];

const STEP_OPTIONS: [&str; 9] = [
    "timeout",
    "retries",
    "max_wait",
    "retry on",
    "encode",
    "redirects",
    "idempotency_key",
    "on error",
    "save",
];

const LLM_CLAUSES: [&str; 7] = [
    "prompt", "system", "model", "provider", "choices", "fallback", "schema",
];

/// Snippets for whole items: label, detail and body.
const TOP_SNIPPETS: [(&str, &str, &str); 4] = [
    (
        "step http",
        "a step with one HTTP request",
        "step \"${1:Name}\" {\n  http ${2|GET,POST,PUT,PATCH,DELETE|} \"${3:https://}\"\n}",
    ),
    (
        "step http json",
        "a step that sends a JSON payload",
        "step \"${1:Name}\" {\n  http ${2|POST,PUT,PATCH|} \"${3:https://}\" json {\n    \"${4:id}\": \"<<entity.${5:id}>>\"\n  }\n  save response.json.${6:id} -> entity.${7:id}\n}",
    ),
    (
        "step llm",
        "a step that asks a model",
        "step \"${1:Name}\" {\n  llm prompt \"\"\"\n    ${2:Summarise: <<entity.notes>>}\n  \"\"\"\n  -> entity.${3:summary}\n}",
    ),
    ("let", "a variable", "let ${1:name} = \"${2:value}\""),
];

const STEP_SNIPPETS: [(&str, &str, &str); 2] = [
    (
        "http json",
        "an HTTP request with a JSON payload and headers",
        "http ${1|POST,PUT,PATCH|} \"${2:https://}\" json {\n  \"${3:id}\": \"<<entity.${4:id}>>\"\n} headers {\n  \"Authorization\": \"Bearer <<secret.${5:TOKEN}>>\"\n}",
    ),
    (
        "save",
        "copy a response value",
        "save response.json.${1:id} -> entity.${2:id}",
    ),
];

fn item(label: &str, kind: u8, detail: &str) -> Value {
    let mut value = json!({"label": label, "kind": kind});
    if !detail.is_empty() {
        value["detail"] = json!(detail);
    }
    if let Some(doc) = keyword_doc(label.split(' ').next().unwrap_or(label)) {
        value["documentation"] = json!({"kind": "markdown", "value": doc});
    }
    value
}

fn snippet(label: &str, detail: &str, body: &str) -> Value {
    json!({
        "label": label,
        "kind": SNIPPET,
        "detail": detail,
        "insertText": body,
        "insertTextFormat": 2,
    })
}

pub fn complete(document: &mut Document, position: Position, encoding: Encoding) -> Value {
    let text = document.text.clone();
    let analysis = document.analysis();
    let offset = analysis.lines.offset(&text, position, encoding);
    let line_start = text[..offset].rfind(['\n', '\r']).map_or(0, |index| index + 1);
    let prefix = &text[line_start..offset];
    let mut items = Vec::new();

    // Inside a merge field: roots, helpers, or the keys after a path.
    if let Some(open) = prefix.rfind("<<").filter(|open| !prefix[*open..].contains(">>")) {
        let expression = &prefix[open + 2..];
        let token_start = expression
            .rfind(|c: char| c.is_whitespace() || c == '(')
            .map_or(0, |index| index + 1);
        let token = &expression[token_start..];
        match token.rfind('.') {
            Some(dot) => {
                let base = &token[..dot];
                let partial_start = offset - (token.len() - dot - 1);
                path_items(document_paths(&text, base), &mut items);
                let analysis = document.analysis();
                keys_after(base, analysis, &text, &mut items);
                return with_range(items, &text, partial_start, offset, document, encoding);
            }
            None => {
                for root in ROOTS {
                    items.push(item(root, MODULE, "merge-field root"));
                }
                for helper in HELPERS {
                    items.push(item(helper, FUNCTION, "helper"));
                }
                let partial_start = offset - token.len();
                return with_range(items, &text, partial_start, offset, document, encoding);
            }
        }
    }

    let quotes = prefix.matches('"').count() - prefix.matches("\\\"").count();
    if quotes % 2 == 1 {
        let before_string = &prefix[..prefix.rfind('"').unwrap_or(0)];
        let words: Vec<&str> = before_string.split_whitespace().collect();
        let is_kind = words.first() == Some(&"http") && words.len() >= 3;
        let is_content_type = before_string.trim_end().ends_with(':')
            && before_string.to_ascii_lowercase().contains("\"content-type\"");
        if is_kind || is_content_type {
            for content_type in CONTENT_TYPES {
                items.push(item(content_type, VALUE, "media type"));
            }
        }
        let partial = &prefix[prefix.rfind('"').map_or(0, |index| index + 1)..];
        let start = offset - partial.len();
        return with_range(items, &text, start, offset, document, encoding);
    }

    let ends_in_space = prefix.ends_with(char::is_whitespace) || prefix.is_empty();
    let words: Vec<&str> = prefix.split_whitespace().collect();
    let (previous, partial) = if ends_in_space {
        (&words[..], "")
    } else {
        (
            &words[..words.len().saturating_sub(1)],
            *words.last().unwrap_or(&""),
        )
    };
    let partial_start = offset - partial.len();

    // A write target after `->`.
    if previous.last() == Some(&"->") || partial.starts_with("->") {
        let target = partial.trim_start_matches("->");
        match target.rfind('.') {
            Some(dot) => {
                let base = &target[..dot];
                path_items(document_paths(&text, base), &mut items);
                keys_after(base, document.analysis(), &text, &mut items);
                return with_range(
                    items,
                    &text,
                    offset - (target.len() - dot - 1),
                    offset,
                    document,
                    encoding,
                );
            }
            None => {
                items.push(item("entity", MODULE, "write into the entity"));
                items.push(item("vars", MODULE, "write into a variable"));
                return with_range(items, &text, offset - target.len(), offset, document, encoding);
            }
        }
    }

    match previous {
        ["http"] => {
            for method in METHODS {
                items.push(item(method, KEYWORD, "HTTP method"));
            }
        }
        ["http", _method, _url, ..] => {
            for (kind, content_type) in PAYLOAD_KINDS {
                items.push(item(kind, KEYWORD, &format!("payload sent as {content_type}")));
            }
            items.push(item("headers", KEYWORD, "request headers"));
        }
        ["on"] => items.push(item("error", KEYWORD, "")),
        ["on", "error"] => {
            for behaviour in ["continue notify", "pause notify", "continue silently"] {
                items.push(item(behaviour, VALUE, "failure behaviour"));
            }
        }
        ["on", "error", _, "notify", ..] => {
            items.push(item("severity", KEYWORD, "low, medium, high or critical"))
        }
        [.., "severity"] => {
            for level in ["low", "medium", "high", "critical"] {
                items.push(item(level, VALUE, "notification severity"));
            }
        }
        ["retry"] => items.push(item("on", KEYWORD, "")),
        ["retry", "on", ..] => {
            for failure in ["5xx", "connection"] {
                items.push(item(failure, VALUE, "also retried"));
            }
        }
        ["encode" | "redirects" | "idempotency_key"] => {
            for value in ["on", "off"] {
                items.push(item(value, VALUE, ""));
            }
        }
        ["notify"] => items.push(item("webhook", KEYWORD, "POST notifications to a URL")),
        ["entity"] => items.push(item("schema", KEYWORD, "the entity's JSON Schema or sample file")),
        ["save"] => {
            for source in [
                "response.status",
                "response.body",
                "response.json",
                "response.headers",
            ] {
                items.push(item(source, VALUE, "response value"));
            }
        }
        ["llm", ..] => {
            for clause in LLM_CLAUSES {
                items.push(item(clause, KEYWORD, "llm clause"));
            }
        }
        [] => {
            if inside_block(&text, offset) {
                for keyword in ["http", "llm"] {
                    items.push(item(keyword, KEYWORD, "action"));
                }
                for option in STEP_OPTIONS {
                    items.push(item(option, KEYWORD, "step option"));
                }
                for clause in LLM_CLAUSES {
                    items.push(item(clause, KEYWORD, "llm clause"));
                }
                for (label, detail, body) in STEP_SNIPPETS {
                    items.push(snippet(label, detail, body));
                }
            } else {
                for keyword in [
                    "workflow",
                    "let",
                    "step",
                    "http",
                    "provider",
                    "on error",
                    "notify webhook",
                    "entity schema",
                ] {
                    items.push(item(keyword, KEYWORD, "top-level item"));
                }
                for (label, detail, body) in TOP_SNIPPETS {
                    items.push(snippet(label, detail, body));
                }
            }
        }
        _ => {}
    }
    with_range(items, &text, partial_start, offset, document, encoding)
}

/// Sets every item's text edit to replace `start..end`.
fn with_range(
    mut items: Vec<Value>,
    text: &str,
    start: usize,
    end: usize,
    document: &mut Document,
    encoding: Encoding,
) -> Value {
    let range = document
        .analysis()
        .lines
        .range(text, Span::new(start, end), encoding);
    let mut seen = BTreeSet::new();
    items.retain(|item| seen.insert(item["label"].as_str().unwrap_or("").to_string()));
    for item in &mut items {
        let new_text = item
            .get("insertText")
            .cloned()
            .unwrap_or_else(|| item["label"].clone());
        item["textEdit"] = json!({"range": range, "newText": new_text});
    }
    json!({"isIncomplete": false, "items": items})
}

/// Adds the keys that can follow `base`, such as `entity.claim`.
fn keys_after(base: &str, analysis: &crate::lsp::document::Analysis, _text: &str, items: &mut Vec<Value>) {
    let (root, keys) = split_path(base);
    match root.as_str() {
        "vars" if keys.is_empty() => {
            for item_ in &analysis.parsed.file.items {
                if let Item::Let(declaration) = item_ {
                    items.push(item(&declaration.name.text, VARIABLE, "variable"));
                }
            }
        }
        "execution" if keys.is_empty() => {
            for (field, doc) in EXECUTION_FIELDS {
                let mut value = item(field, FIELD, "execution field");
                value["documentation"] = json!(doc);
                items.push(value);
            }
        }
        "entity" => {
            if let Some(schema) = &analysis.schema {
                if let Lookup::Found(shape) = schema.lookup(&keys) {
                    for (name, field) in shape.fields() {
                        let mut value = item(name, FIELD, field.type_name());
                        let mut doc = field.description.clone().unwrap_or_default();
                        if let Some(example) = &field.example {
                            doc.push_str(&format!("\n\nExample: `{example}`"));
                        }
                        if !doc.is_empty() {
                            value["documentation"] = json!({"kind": "markdown", "value": doc.trim()});
                        }
                        items.insert(0, value);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Collects the keys written after `base.` elsewhere in the document, such
/// as the `secret.` names and `entity.` fields the workflow already uses.
fn document_paths(text: &str, base: &str) -> BTreeSet<String> {
    let needle = format!("{base}.");
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(index) = rest.find(&needle) {
        let before = rest[..index].chars().next_back();
        let after = &rest[index + needle.len()..];
        let key: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        let starts_word = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if starts_word && !key.is_empty() {
            found.insert(key);
        }
        rest = &rest[index + needle.len()..];
    }
    found
}

fn path_items(keys: BTreeSet<String>, items: &mut Vec<Value>) {
    for key in keys {
        items.push(item(&key, REFERENCE, "used in this workflow"));
    }
}

/// Tells whether `offset` is inside a `{ }` block of the language, counting
/// braces outside strings and comments.
fn inside_block(text: &str, offset: usize) -> bool {
    let mut depth: i32 = 0;
    let mut in_string = false;
    let mut in_comment = false;
    let mut previous = '\0';
    for c in text[..offset].chars() {
        match c {
            // A comment ends at a lone CR too, as in the grammar.
            '\n' | '\r' => {
                in_comment = false;
                in_string = false;
            }
            _ if in_comment => {}
            '"' if previous != '\\' => in_string = !in_string,
            '#' if !in_string => in_comment = true,
            '{' if !in_string => depth += 1,
            '}' if !in_string => depth -= 1,
            _ => {}
        }
        previous = c;
    }
    depth > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_in_strings_and_comments_do_not_count() {
        let text = "step \"{\" { # }\n  ";
        assert!(inside_block(text, text.len()));
        assert!(!inside_block("step \"a\" {\n}\n", 13));
    }

    #[test]
    fn paths_used_in_the_document_are_found() {
        let text = "<<secret.TOKEN>> <<secret.KEY>> <<vars.secret.X>>";
        let keys: Vec<String> = document_paths(text, "secret").into_iter().collect();
        assert_eq!(keys, ["KEY", "TOKEN"]);
    }
}
