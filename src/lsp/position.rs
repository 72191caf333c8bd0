//! Converts byte offsets to protocol positions and back. A position's
//! character counts UTF-16 code units unless the client chose UTF-8.
//!
//! Lines end at `\n`, `\r\n` or a lone `\r`, as the protocol counts them
//! and as the grammar ends a comment.

use serde_json::{json, Value};

use crate::diagnostic::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf16,
}

/// The largest line or character a position may hold: the protocol's
/// `uinteger`.
pub const MAX_UINTEGER: u64 = i32::MAX as u64;

/// A `{line, character}` position as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub character: usize,
}

impl Position {
    /// Reads the position at `value`, named `name` in messages, such as
    /// `position` or `range.start`.
    pub fn from_json(value: &Value, name: &str) -> Result<Position, String> {
        if !value.is_object() {
            return Err(format!(
                "`{name}` is {}; give an object such as {{\"line\": 0, \"character\": 0}}",
                described(value)
            ));
        }
        let field = |field: &str| -> Result<usize, String> {
            let found = &value[field];
            match found.as_u64() {
                Some(number) if number <= MAX_UINTEGER => Ok(number as usize),
                _ => Err(format!(
                    "`{name}.{field}` is {}; give a whole number from 0 to {MAX_UINTEGER}",
                    described(found)
                )),
            }
        };
        Ok(Position {
            line: field("line")?,
            character: field("character")?,
        })
    }
}

/// Describes a JSON value for a message: `missing` for null, else the
/// value as written.
pub fn described(value: &Value) -> String {
    match value {
        Value::Null => "missing".to_string(),
        other => format!("`{other}`"),
    }
}

/// The start offset of every line of a text.
pub struct LineMap {
    starts: Vec<usize>,
}

impl LineMap {
    pub fn new(text: &str) -> LineMap {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        for (index, byte) in bytes.iter().enumerate() {
            let ends_line = match byte {
                b'\n' => true,
                b'\r' => bytes.get(index + 1) != Some(&b'\n'),
                _ => false,
            };
            if ends_line {
                starts.push(index + 1);
            }
        }
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

    /// Returns the end of a line's text, before its line break.
    fn line_end(&self, text: &str, line: usize) -> usize {
        let Some(&next) = self.starts.get(line + 1) else {
            return text.len();
        };
        let bytes = text.as_bytes();
        let mut end = next - 1;
        if bytes[end] == b'\n' && end > self.starts[line] && bytes[end - 1] == b'\r' {
            end -= 1;
        }
        end
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

    /// Returns the byte offset of a position. A character past the end of
    /// its line means the line end before its line break, so a CRLF is never
    /// split. A line past the last means the end of the text.
    pub fn offset(&self, text: &str, position: Position, encoding: Encoding) -> usize {
        if position.line >= self.starts.len() {
            return text.len();
        }
        let start = self.starts[position.line];
        let line_text = &text[start..self.line_end(text, position.line)];
        let mut units = 0;
        for (index, c) in line_text.char_indices() {
            if units >= position.character {
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

    fn at(line: usize, character: usize) -> Position {
        Position { line, character }
    }

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
        assert_eq!(map.offset(text, at(1, 3), Encoding::Utf16), offset);
        assert_eq!(map.offset(text, at(1, 99), Encoding::Utf16), text.len() - 1);
        assert_eq!(map.offset(text, at(9, 0), Encoding::Utf16), text.len());
    }

    #[test]
    fn lines_end_at_lf_crlf_and_lone_cr() {
        let text = "ab\r\ncd\ref\ngh";
        let map = LineMap::new(text);
        assert_eq!(map.starts, [0, 4, 7, 10]);
        assert_eq!(
            map.position(text, 7, Encoding::Utf16),
            json!({"line": 2, "character": 0})
        );
        assert_eq!(map.offset(text, at(0, 50), Encoding::Utf16), 2);
        assert_eq!(map.offset(text, at(1, 50), Encoding::Utf16), 6);
        assert_eq!(map.offset(text, at(2, 50), Encoding::Utf16), 9);
        assert_eq!(map.offset(text, at(3, 50), Encoding::Utf16), text.len());
        assert_eq!(LineMap::new("\r\r\n\n").starts, [0, 1, 3, 4]);
    }

    #[test]
    fn invalid_positions_name_the_field() {
        assert_eq!(
            Position::from_json(&json!({"line": 2, "character": 7}), "position"),
            Ok(at(2, 7))
        );
        let cases = [
            (
                json!({"line": -1, "character": 0}),
                "`position.line` is `-1`; give a whole number from 0 to 2147483647",
            ),
            (
                json!({"line": "a", "character": 0}),
                "`position.line` is `\"a\"`; give a whole number from 0 to 2147483647",
            ),
            (
                json!({"line": 0}),
                "`position.character` is missing; give a whole number from 0 to 2147483647",
            ),
            (
                json!({"line": 0, "character": 1.5}),
                "`position.character` is `1.5`; give a whole number from 0 to 2147483647",
            ),
            (
                json!({"line": 9007199254740992_u64, "character": 0}),
                "`position.line` is `9007199254740992`; give a whole number from 0 to 2147483647",
            ),
            (
                Value::Null,
                "`position` is missing; give an object such as {\"line\": 0, \"character\": 0}",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(Position::from_json(&value, "position"), Err(message.to_string()));
        }
    }
}
