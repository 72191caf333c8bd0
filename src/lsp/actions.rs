//! Code actions: the fixes that diagnostics know, such as a did-you-mean
//! replacement or removing a payload from a GET.

use serde_json::{json, Value};

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::lsp::diagnostics;
use crate::lsp::document::Document;
use crate::lsp::position::{Encoding, Position};

/// One fix: a title and the edits that make it.
#[derive(Debug, PartialEq)]
pub struct Fix {
    pub title: String,
    pub edits: Vec<(Span, String)>,
}

/// Returns the fix a diagnostic offers, if any.
pub fn fix_for(diagnostic: &Diagnostic, text: &str) -> Option<Fix> {
    let span = diagnostic.span?;
    if diagnostic.code == Code::PayloadOnGet {
        // The payload goes with the white space before it on its line.
        let before = text[..span.start].trim_end_matches([' ', '\t']).len();
        return Some(Fix {
            title: "Remove the payload from the GET request".to_string(),
            edits: vec![(Span::new(before, span.end), String::new())],
        });
    }
    if diagnostic.code == Code::DuplicateContentType {
        return Some(Fix {
            title: "Remove the Content-Type header".to_string(),
            edits: vec![(removal_of_header(text, span), String::new())],
        });
    }
    let help = diagnostic.help.as_deref()?;
    let suggestion = between_backticks(help.strip_prefix("did you mean ")?)?;
    let written = &text[span.start..span.end];
    let wrong = between_backticks(&diagnostic.message);
    let edit = match wrong.and_then(|wrong| written.find(wrong).map(|index| (index, wrong.len()))) {
        Some((index, length)) if wrong.is_some_and(|wrong| !wrong.is_empty()) => (
            Span::new(span.start + index, span.start + index + length),
            suggestion.to_string(),
        ),
        _ if !written.contains(char::is_whitespace) && !written.contains('"') => {
            (span, suggestion.to_string())
        }
        _ => return None,
    };
    Some(Fix {
        title: format!("Replace with `{suggestion}`"),
        edits: vec![edit],
    })
}

/// Extends the span of a `"Name": "value"` pair over the comma after it,
/// and over its whole line when nothing else is on it.
fn removal_of_header(text: &str, span: Span) -> Span {
    let mut end = span.end;
    let after = &text[end..];
    let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
    if after[spaces..].starts_with(',') {
        end += spaces + 1;
    }
    let line_start = text[..span.start].rfind('\n').map_or(0, |index| index + 1);
    let line_end = text[end..].find('\n').map_or(text.len(), |index| end + index);
    let alone = text[line_start..span.start].trim().is_empty() && text[end..line_end].trim().is_empty();
    if alone && line_end < text.len() {
        return Span::new(line_start, line_end + 1);
    }
    let start = text[..span.start].trim_end_matches([' ', '\t']).len();
    Span::new(start, end)
}

fn between_backticks(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let end = text[start..].find('`')? + start;
    Some(&text[start..end])
}

pub fn code_actions(
    document: &mut Document,
    uri: &str,
    (start, end): (Position, Position),
    encoding: Encoding,
) -> Value {
    let text = document.text.clone();
    let analysis = document.analysis();
    let lines = &analysis.lines;
    let start = lines.offset(&text, start, encoding);
    let end = lines.offset(&text, end, encoding);
    let mut actions = Vec::new();
    for diagnostic in &analysis.diagnostics {
        let Some(span) = diagnostic.span else { continue };
        if span.end < start || span.start > end {
            continue;
        }
        let Some(fix) = fix_for(diagnostic, &text) else {
            continue;
        };
        let edits: Vec<Value> = fix
            .edits
            .iter()
            .map(
                |(span, new_text)| json!({"range": lines.range(&text, *span, encoding), "newText": new_text}),
            )
            .collect();
        actions.push(json!({
            "title": fix.title,
            "kind": "quickfix",
            "isPreferred": true,
            "diagnostics": [diagnostics::one(diagnostic, &text, lines, uri, encoding)],
            "edit": {"changes": {uri: edits}},
        }));
    }
    Value::Array(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_removal_takes_its_line_or_its_comma() {
        let text = "headers {\n  \"Content-Type\": \"text/plain\",\n  \"A\": \"b\"\n}";
        let start = text.find("\"Content").unwrap();
        let end = text.find(",\n").unwrap();
        let span = removal_of_header(text, Span::new(start, end));
        assert_eq!(
            &text[span.start..span.end],
            "  \"Content-Type\": \"text/plain\",\n"
        );

        let text = "headers { \"A\": \"b\", \"Content-Type\": \"x\" }";
        let start = text.find("\"Content").unwrap();
        let span = removal_of_header(text, Span::new(start, text.find(" }").unwrap()));
        assert_eq!(&text[span.start..span.end], " \"Content-Type\": \"x\"");
    }
}
