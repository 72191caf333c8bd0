//! Converts byte offsets to protocol positions and back. A position's
//! character counts UTF-16 code units unless the client chose UTF-8.

use serde_json::{json, Value};

use crate::diagnostic::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf16,
}

/// The start offset of every line of a text.
pub struct LineMap {
    starts: Vec<usize>,
}

impl LineMap {
    pub fn new(text: &str) -> LineMap {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, byte)| *byte == b'\n')
                .map(|(index, _)| index + 1),
        );
        LineMap { starts }
    }

    /// Returns the 0-based line of `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(line) => line,
            Err(next) => next - 1,
        }
    }

    pub fn line_start(&self, line: usize) -> usize {
        self.starts[line.min(self.starts.len() - 1)]
    }

    /// Returns the position of a byte offset as `{line, character}`.
    pub fn position(&self, text: &str, offset: usize, encoding: Encoding) -> Value {
        let offset = floor_boundary(text, offset.min(text.len()));
        let line = self.line_of(offset);
        let start = self.starts[line];
        let prefix = &text[start..offset];
        let character = match encoding {
            Encoding::Utf8 => prefix.len(),
            Encoding::Utf16 => prefix.encode_utf16().count(),
        };
        json!({"line": line, "character": character})
    }

    pub fn range(&self, text: &str, span: Span, encoding: Encoding) -> Value {
        json!({
            "start": self.position(text, span.start, encoding),
            "end": self.position(text, span.end, encoding),
        })
    }

    /// Returns the byte offset of a `{line, character}` position, clamped
    /// to its line and to the text.
    pub fn offset(&self, text: &str, position: &Value, encoding: Encoding) -> usize {
        let line = position["line"].as_u64().unwrap_or(0) as usize;
        let character = position["character"].as_u64().unwrap_or(0) as usize;
        if line >= self.starts.len() {
            return text.len();
        }
        let start = self.starts[line];
        let end = self.starts.get(line + 1).map_or(text.len(), |next| next - 1);
        let line_text = &text[start..end.max(start)];
        let mut units = 0;
        for (index, c) in line_text.char_indices() {
            if units >= character {
                return start + index;
            }
            units += match encoding {
                Encoding::Utf8 => c.len_utf8(),
                Encoding::Utf16 => c.len_utf16(),
            };
        }
        start + line_text.len()
    }
}

fn floor_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_positions_count_surrogate_pairs() {
        let text = "a\n😀é=x\n";
        let map = LineMap::new(text);
        let offset = text.find('=').unwrap();
        assert_eq!(
            map.position(text, offset, Encoding::Utf16),
            json!({"line": 1, "character": 3})
        );
        assert_eq!(
            map.position(text, offset, Encoding::Utf8),
            json!({"line": 1, "character": 6})
        );
        assert_eq!(
            map.offset(text, &json!({"line": 1, "character": 3}), Encoding::Utf16),
            offset
        );
        assert_eq!(
            map.offset(text, &json!({"line": 1, "character": 99}), Encoding::Utf16),
            text.len() - 1
        );
        assert_eq!(
            map.offset(text, &json!({"line": 9, "character": 0}), Encoding::Utf16),
            text.len()
        );
    }
}
