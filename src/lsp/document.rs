//! An open document and its analysis, computed on first use after each
//! change.

use std::path::PathBuf;

use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::lsp::position::{Encoding, LineMap, Position};
use crate::schema::EntitySchema;
use crate::syntax::{self, Parsed};

pub struct Document {
    /// The file path of a `file:` URI, which locates `flowrun.toml` and the
    /// entity schema.
    pub path: Option<PathBuf>,
    pub text: String,
    pub version: i64,
    entity_schema: Option<PathBuf>,
    analysis: Option<Analysis>,
}

/// The parse, the check and the schema of one version of a document.
pub struct Analysis {
    pub parsed: Parsed,
    pub diagnostics: Vec<Diagnostic>,
    pub lines: LineMap,
    pub schema: Option<EntitySchema>,
}

impl Document {
    pub fn new(uri: &str, text: String, version: i64, entity_schema: Option<PathBuf>) -> Document {
        Document {
            path: file_path(uri),
            text,
            version,
            entity_schema,
            analysis: None,
        }
    }

    /// Returns the path to check the document as: its own, or `untitled.flow` in
    /// the current folder.
    pub fn check_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("untitled.flow"))
    }

    pub fn invalidate(&mut self) {
        self.analysis = None;
    }

    /// Applies one `contentChanges` entry: a range and its new text, or the
    /// whole text when there is no range. A range with an invalid position
    /// leaves the text unchanged and returns what is wrong with it.
    pub fn apply_change(&mut self, change: &Value, encoding: Encoding) -> Result<(), String> {
        let text = change["text"].as_str().unwrap_or("");
        match change.get("range") {
            Some(range) if !range.is_null() => {
                let start = Position::from_json(&range["start"], "range.start")?;
                let end = Position::from_json(&range["end"], "range.end")?;
                let lines = LineMap::new(&self.text);
                let start = lines.offset(&self.text, start, encoding);
                let end = lines.offset(&self.text, end, encoding).max(start);
                self.text.replace_range(start..end, text);
            }
            _ => self.text = text.to_string(),
        }
        self.analysis = None;
        Ok(())
    }

    pub fn analysis(&mut self) -> &Analysis {
        if self.analysis.is_none() {
            let path = self.check_path();
            let parsed = syntax::parse(&self.text);
            let checked = crate::cli::check_tree(
                &parsed.file,
                parsed.diagnostics.clone(),
                &path,
                self.entity_schema.as_deref(),
            );
            let schema = crate::schema::for_workflow(&parsed.file, &path, self.entity_schema.as_deref()).0;
            self.analysis = Some(Analysis {
                parsed,
                diagnostics: checked.diagnostics,
                lines: LineMap::new(&self.text),
                schema,
            });
        }
        self.analysis
            .as_ref()
            .expect("Document::analysis: computed above")
    }
}

/// Decodes a `file:` URI into a path.
pub fn file_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let bytes = rest.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                decoded.push(byte);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8(decoded).ok().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_are_decoded() {
        let path = PathBuf::from("/tmp/my flows/claim%.flow");
        assert_eq!(file_path("file:///tmp/my%20flows/claim%25.flow"), Some(path));
        assert_eq!(file_path("untitled:Untitled-1"), None);
    }

    #[test]
    fn range_changes_edit_the_text() {
        let mut document = Document::new("untitled:a", "let a = 1\n".into(), 1, None);
        let change = serde_json::json!({
            "range": {"start": {"line": 0, "character": 8}, "end": {"line": 0, "character": 9}},
            "text": "22",
        });
        assert_eq!(document.apply_change(&change, Encoding::Utf16), Ok(()));
        assert_eq!(document.text, "let a = 22\n");
    }
}
