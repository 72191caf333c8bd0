//! Go to definition, document symbols and formatting.

use serde_json::{json, Value};

use crate::diagnostic::Span;
use crate::lsp::document::Document;
use crate::lsp::hover::{field_path_at, split_path, word_at};
use crate::lsp::position::{Encoding, Position};
use crate::syntax::ast::{Item, LlmClause, PathKey, Statement, StepItem};

const MODULE: u8 = 2;
const METHOD: u8 = 6;
const FUNCTION: u8 = 12;
const VARIABLE: u8 = 13;
const PROPERTY: u8 = 7;
const NAMESPACE: u8 = 3;

/// Finds the `let` of a variable under the cursor (in a merge field or a
/// `vars.NAME` target), or the first step of a step name under the cursor.
pub fn definition(document: &mut Document, uri: &str, position: Position, encoding: Encoding) -> Value {
    let text = document.text.clone();
    let analysis = document.analysis();
    let offset = analysis.lines.offset(&text, position, encoding);
    let file = &analysis.parsed.file;
    let variable = field_path_at(&text, offset)
        .map(|(path, ..)| path)
        .or_else(|| target_path_at(&text, offset))
        .and_then(|path| match split_path(&path) {
            (root, keys) if root == "vars" => match keys.first() {
                Some(PathKey::Field(name)) => Some(name.clone()),
                _ => None,
            },
            _ => None,
        });
    let target = match variable {
        Some(name) => file.items.iter().find_map(|item| match item {
            Item::Let(declaration) if declaration.name.text == name => Some(declaration.name.span),
            _ => None,
        }),
        None => {
            let step_name = file.items.iter().find_map(|item| match item {
                Item::Step(step) if !step.bare && contains(step.name_span, offset) => Some(step.name.clone()),
                _ => None,
            });
            step_name.and_then(|name| {
                file.items.iter().find_map(|item| match item {
                    Item::Step(step) if step.name == name => Some(step.name_span),
                    _ => None,
                })
            })
        }
    };
    match target {
        Some(span) => json!({"uri": uri, "range": analysis.lines.range(&text, span, encoding)}),
        None => Value::Null,
    }
}

fn contains(span: Span, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

/// Returns the `vars.NAME` or `entity.PATH` word under the cursor outside a merge
/// field, as in `-> vars.reply`.
fn target_path_at(text: &str, offset: usize) -> Option<String> {
    let (_, start) = word_at(text, offset)?;
    let line_start = text[..start]
        .rfind(char::is_whitespace)
        .map_or(0, |index| index + 1);
    let end = text[offset..]
        .find(char::is_whitespace)
        .map_or(text.len(), |index| offset + index);
    let word = text[line_start..end].trim_start_matches("->");
    (word.starts_with("vars.") || word.starts_with("entity.")).then(|| word.to_string())
}

/// Lists variables, providers, settings and steps, each step with its
/// actions as children.
pub fn symbols(document: &mut Document, encoding: Encoding) -> Value {
    let text = document.text.clone();
    let analysis = document.analysis();
    let lines = &analysis.lines;
    let symbol = |name: &str, kind: u8, span: Span, selection: Span, children: Vec<Value>| {
        let mut value = json!({
            "name": if name.is_empty() { " " } else { name },
            "kind": kind,
            "range": lines.range(&text, span, encoding),
            "selectionRange": lines.range(&text, selection, encoding),
        });
        if !children.is_empty() {
            value["children"] = Value::Array(children);
        }
        value
    };
    let mut symbols = Vec::new();
    item_symbols(&analysis.parsed.file.items, &text, &symbol, &mut symbols);
    Value::Array(symbols)
}

/// Builds one symbol from its name, kind, range, selection and children.
type SymbolMaker<'a> = dyn Fn(&str, u8, Span, Span, Vec<Value>) -> Value + 'a;

/// Appends the symbols of `items`, going into the branches of `if`.
fn item_symbols(items: &[Item], text: &str, symbol: &SymbolMaker<'_>, symbols: &mut Vec<Value>) {
    for item in items {
        match item {
            Item::Let(declaration) => symbols.push(symbol(
                &declaration.name.text,
                VARIABLE,
                declaration.span,
                declaration.name.span,
                Vec::new(),
            )),
            Item::Provider(provider) => symbols.push(symbol(
                &provider.name.text,
                MODULE,
                provider.span,
                provider.name.span,
                Vec::new(),
            )),
            Item::Setting(setting) => {
                let written = &text[setting.span.start..setting.span.end];
                symbols.push(symbol(
                    written,
                    PROPERTY,
                    setting.span,
                    setting.name.span,
                    Vec::new(),
                ));
            }
            Item::Statement(Statement::If(block)) => {
                let mut children = Vec::new();
                item_symbols(&block.then, text, symbol, &mut children);
                if let Some(otherwise) = &block.otherwise {
                    item_symbols(otherwise, text, symbol, &mut children);
                }
                let head = text[block.head.start..block.head.end].trim_end();
                symbols.push(symbol(head, NAMESPACE, block.span, block.head, children));
            }
            Item::Statement(_) => {}
            Item::Step(step) => {
                let children = step
                    .items
                    .iter()
                    .filter_map(|step_item| match step_item {
                        StepItem::Http(action) => {
                            let url = &text[action.url.span.start..action.url.span.end];
                            Some(symbol(
                                &format!("{} {url}", action.method.text),
                                METHOD,
                                action.span,
                                action.method.span,
                                Vec::new(),
                            ))
                        }
                        StepItem::Llm(action) => {
                            let target = action.clauses.iter().find_map(|clause| match clause {
                                LlmClause::Output { target, .. } => Some(target.as_str()),
                                _ => None,
                            });
                            let name =
                                target.map_or_else(|| "llm".to_string(), |target| format!("llm -> {target}"));
                            Some(symbol(&name, METHOD, action.span, action.span, Vec::new()))
                        }
                        StepItem::Extract(action) => Some(symbol(
                            &format!("extract {}", action.source),
                            METHOD,
                            action.span,
                            action.source_span,
                            Vec::new(),
                        )),
                        StepItem::Transcribe(action) => Some(symbol(
                            &format!("transcribe {}", action.source),
                            METHOD,
                            action.span,
                            action.source_span,
                            Vec::new(),
                        )),
                        StepItem::Option(_)
                        | StepItem::Code(_)
                        | StepItem::CodeInputs(..)
                        | StepItem::CodeOutputs(..) => None,
                    })
                    .collect();
                symbols.push(symbol(&step.name, FUNCTION, step.span, step.name_span, children));
            }
        }
    }
}

/// Formats the document with `flowrun fmt`'s engine: one edit replacing the
/// whole text, none when it is formatted, and null when it does not parse.
pub fn formatting(document: &mut Document, encoding: Encoding) -> Value {
    let text = document.text.clone();
    match crate::format::format(&text) {
        Ok(formatted) if formatted == text => json!([]),
        Ok(formatted) => {
            let range = document
                .analysis()
                .lines
                .range(&text, Span::new(0, text.len()), encoding);
            json!([{"range": range, "newText": formatted}])
        }
        Err(_) => Value::Null,
    }
}
