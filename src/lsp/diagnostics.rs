//! Diagnostics in the protocol's form: the code, its documentation link,
//! the message with its help, and the related places.

use serde_json::{json, Value};

use crate::diagnostic::{docs_url, Diagnostic, Severity, Span};
use crate::lsp::document::Document;
use crate::lsp::position::{Encoding, LineMap};

/// Converts the document's diagnostics, as `flowrun check` reports them.
pub fn to_lsp(document: &mut Document, uri: &str, encoding: Encoding) -> Vec<Value> {
    let text = document.text.clone();
    let analysis = document.analysis();
    analysis
        .diagnostics
        .iter()
        .map(|diagnostic| one(diagnostic, &text, &analysis.lines, uri, encoding))
        .collect()
}

/// Converts one diagnostic. A diagnostic without a span points at the
/// start of the file.
pub fn one(diagnostic: &Diagnostic, text: &str, lines: &LineMap, uri: &str, encoding: Encoding) -> Value {
    let span = diagnostic.span.unwrap_or(Span::new(0, 0));
    let mut message = diagnostic.message.clone();
    if let Some(help) = &diagnostic.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    let related: Vec<Value> = diagnostic
        .related
        .iter()
        .map(|related| {
            json!({
                "location": {"uri": uri, "range": lines.range(text, related.span, encoding)},
                "message": related.message,
            })
        })
        .collect();
    let mut value = json!({
        "range": lines.range(text, span, encoding),
        "severity": match diagnostic.severity {
            Severity::Error => 1,
            Severity::Warning => 2,
        },
        "code": diagnostic.code.as_str(),
        "codeDescription": {"href": docs_url(diagnostic.code.as_str())},
        "source": "flowrun",
        "message": message,
    });
    if !related.is_empty() {
        value["relatedInformation"] = Value::Array(related);
    }
    if !diagnostic.label.is_empty() {
        value["data"] = json!({"label": diagnostic.label});
    }
    value
}
