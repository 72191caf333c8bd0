//! Validates a JSON payload template and decides, for each merge field,
//! whether it stands inside a JSON string or in place of a whole value.

use crate::diagnostic::Span;
use crate::program::Encoding;
use crate::syntax::ast::{Segment, Template};

/// A JSON error at a source span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub message: String,
    pub span: Span,
}

#[derive(Clone, Copy)]
enum Token {
    Char(char, usize),
    /// The merge field with this index among the template's fields.
    Field(usize, Span),
}

/// Returns the encoding of each merge field of `template`, in order, or the
/// first place where the payload is not valid JSON. `end` is the offset just
/// after the payload, where an error at the end of the input points.
pub fn scan(template: &Template, end: usize) -> Result<Vec<Encoding>, JsonError> {
    let mut tokens = Vec::new();
    let mut field_count = 0;
    for segment in &template.segments {
        match segment {
            Segment::Text(part) => {
                for (index, c) in part.text.char_indices() {
                    let offset = if part.verbatim {
                        part.span.start + index
                    } else {
                        part.span.start
                    };
                    tokens.push(Token::Char(c, offset));
                }
            }
            Segment::Field(field) => {
                tokens.push(Token::Field(field_count, field.span));
                field_count += 1;
            }
        }
    }

    let mut scanner = Scanner {
        tokens,
        pos: 0,
        end,
        encodings: vec![Encoding::JsonValue; field_count],
        depth: 0,
    };
    scanner.skip_whitespace();
    scanner.value()?;
    scanner.skip_whitespace();
    if scanner.pos < scanner.tokens.len() {
        return Err(scanner.error("unexpected text after the JSON value"));
    }
    Ok(scanner.encodings)
}

const COMMENT_HINT: &str = "JSON has no comments: move the `#` comment above the action";

/// Nesting deeper than this is rejected rather than risking the stack.
const MAX_DEPTH: usize = 128;

struct Scanner {
    tokens: Vec<Token>,
    pos: usize,
    end: usize,
    encodings: Vec<Encoding>,
    depth: usize,
}

impl Scanner {
    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.pos).copied()
    }

    fn peek_char(&self) -> Option<char> {
        match self.peek() {
            Some(Token::Char(c, _)) => Some(c),
            _ => None,
        }
    }

    fn span_here(&self) -> Span {
        match self.peek() {
            Some(Token::Char(c, offset)) => Span::new(offset, offset + c.len_utf8()),
            Some(Token::Field(_, span)) => span,
            None => Span::new(self.end, self.end),
        }
    }

    fn error(&self, message: impl Into<String>) -> JsonError {
        JsonError {
            message: message.into(),
            span: self.span_here(),
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(Token::Char(c, _)) if c.is_control() => format!("{c:?}"),
            Some(Token::Char(c, _)) => format!("`{c}`"),
            Some(Token::Field(..)) => "a merge field".to_string(),
            None => "the end of the payload".to_string(),
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek_char(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, expected: char, what: &str) -> Result<(), JsonError> {
        if self.peek_char() == Some(expected) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected {what}, found {}", self.found())))
        }
    }

    fn value(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            Some(Token::Field(index, _)) => {
                self.encodings[index] = Encoding::JsonValue;
                self.pos += 1;
                Ok(())
            }
            Some(Token::Char('{', _)) => self.nested(Scanner::object),
            Some(Token::Char('[', _)) => self.nested(Scanner::array),
            Some(Token::Char('"', _)) => self.string(),
            Some(Token::Char(c, _)) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(Token::Char(c, _)) if c.is_ascii_alphabetic() => self.literal(),
            Some(Token::Char('#', _)) => Err(self.error(COMMENT_HINT)),
            _ => Err(self.error(format!("expected a JSON value, found {}", self.found()))),
        }
    }

    fn nested(&mut self, parse: fn(&mut Scanner) -> Result<(), JsonError>) -> Result<(), JsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("the payload nests deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn object(&mut self) -> Result<(), JsonError> {
        self.pos += 1;
        self.skip_whitespace();
        if self.peek_char() == Some('}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            match self.peek() {
                Some(Token::Char('"', _)) => self.string()?,
                Some(Token::Field(..)) => {
                    return Err(self.error("a merge field used as a key must be inside quotes"));
                }
                Some(Token::Char('}', _)) => return Err(self.error("trailing comma before `}`")),
                Some(Token::Char('#', _)) => return Err(self.error(COMMENT_HINT)),
                _ => return Err(self.error(format!("expected a quoted key, found {}", self.found()))),
            }
            self.skip_whitespace();
            self.expect(':', "`:` after the key")?;
            self.skip_whitespace();
            self.value()?;
            self.skip_whitespace();
            match self.peek_char() {
                Some(',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some('}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error(format!("expected `,` or `}}`, found {}", self.found()))),
            }
        }
    }

    fn array(&mut self) -> Result<(), JsonError> {
        self.pos += 1;
        self.skip_whitespace();
        if self.peek_char() == Some(']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek_char() == Some(']') {
                return Err(self.error("trailing comma before `]`"));
            }
            self.value()?;
            self.skip_whitespace();
            match self.peek_char() {
                Some(',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some(']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error(format!("expected `,` or `]`, found {}", self.found()))),
            }
        }
    }

    fn string(&mut self) -> Result<(), JsonError> {
        let open = self.span_here();
        self.pos += 1;
        loop {
            match self.peek() {
                None => {
                    return Err(JsonError {
                        message: "unterminated JSON string".to_string(),
                        span: open,
                    })
                }
                Some(Token::Field(index, _)) => {
                    self.encodings[index] = Encoding::JsonString;
                    self.pos += 1;
                }
                Some(Token::Char('"', _)) => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(Token::Char('\\', _)) => {
                    self.pos += 1;
                    self.escape()?;
                }
                Some(Token::Char(c, _)) if (c as u32) < 0x20 => {
                    return Err(self.error(format!(
                        "control character {c:?} inside a JSON string; write it as an escape such as \\n"
                    )));
                }
                Some(Token::Char(..)) => self.pos += 1,
            }
        }
    }

    fn escape(&mut self) -> Result<(), JsonError> {
        match self.peek_char() {
            Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => {
                self.pos += 1;
                Ok(())
            }
            Some('u') => {
                self.pos += 1;
                for _ in 0..4 {
                    match self.peek_char() {
                        Some(c) if c.is_ascii_hexdigit() => self.pos += 1,
                        _ => return Err(self.error("expected four hex digits after \\u")),
                    }
                }
                Ok(())
            }
            _ => Err(self.error(format!(
                "invalid escape in JSON string: \\ followed by {}",
                self.found()
            ))),
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.span_here();
        let mut text = String::new();
        while let Some(c) = self.peek_char() {
            if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
                text.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        if is_json_number(&text) {
            Ok(())
        } else {
            Err(JsonError {
                message: format!("`{text}` is not a valid JSON number"),
                span: Span::new(start.start, start.start + text.len()),
            })
        }
    }

    fn literal(&mut self) -> Result<(), JsonError> {
        let start = self.span_here();
        let mut word = String::new();
        while let Some(c) = self
            .peek_char()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            word.push(c);
            self.pos += 1;
        }
        if matches!(word.as_str(), "true" | "false" | "null") {
            return Ok(());
        }
        let hint = if word.starts_with(char::is_alphabetic) && word.contains('.') {
            ""
        } else {
            "; quote text, and write a merge field as `<<path>>`"
        };
        Err(JsonError {
            message: format!("`{word}` is not a JSON value{hint}"),
            span: Span::new(start.start, start.start + word.len()),
        })
    }
}

fn is_json_number(text: &str) -> bool {
    let rest = text.strip_prefix('-').unwrap_or(text);
    let (int, rest) = split_digits(rest);
    if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
        return false;
    }
    let rest = match rest.strip_prefix('.') {
        Some(fraction) => {
            let (digits, rest) = split_digits(fraction);
            if digits.is_empty() {
                return false;
            }
            rest
        }
        None => rest,
    };
    let rest = match rest.strip_prefix(['e', 'E']) {
        Some(exponent) => {
            let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            let (digits, rest) = split_digits(exponent);
            if digits.is_empty() {
                return false;
            }
            rest
        }
        None => rest,
    };
    rest.is_empty()
}

fn split_digits(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    text.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::template::{parse, Mode};

    fn scan_text(text: &str) -> Result<Vec<Encoding>, JsonError> {
        let mut diagnostics = Vec::new();
        let template = parse(text, 0, Mode::Raw, &mut diagnostics);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        scan(&template, text.len())
    }

    #[test]
    fn fields_in_strings_and_values() {
        let encodings =
            scan_text(r#"{"a": "x<<entity.a>>", "<<vars.k>>": <<entity.b>>, "c": [<<entity.c>>, 1.5e3]}"#)
                .unwrap();
        assert_eq!(
            encodings,
            vec![
                Encoding::JsonString,
                Encoding::JsonString,
                Encoding::JsonValue,
                Encoding::JsonValue
            ]
        );
    }

    #[test]
    fn errors_point_at_the_offending_character() {
        let error = scan_text(r#"{"a": 1,}"#).unwrap_err();
        assert_eq!(error.span, Span::new(8, 9));
        assert_eq!(error.message, "trailing comma before `}`");

        let error = scan_text(r#"{"a" 1}"#).unwrap_err();
        assert_eq!(error.span, Span::new(5, 6));

        let error = scan_text(r#"{"a": 01}"#).unwrap_err();
        assert_eq!(error.message, "`01` is not a valid JSON number");

        let error = scan_text(r#"{<<entity.k>>: 1}"#).unwrap_err();
        assert_eq!(error.span, Span::new(1, 13));

        let error = scan_text(r#"{"a": yes}"#).unwrap_err();
        assert_eq!(error.span, Span::new(6, 9));

        let error = scan_text("{\"a\": \"x\ny\"}").unwrap_err();
        assert_eq!(error.span, Span::new(8, 9));
    }

    #[test]
    fn json_numbers() {
        for valid in ["0", "-1", "1.5", "1e10", "-0.5E-3", "12345678901234567890123"] {
            assert!(is_json_number(valid), "{valid}");
        }
        for invalid in ["01", "1.", ".5", "1e", "--1", "+1", "1.2.3"] {
            assert!(!is_json_number(invalid), "{invalid}");
        }
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let text = "[".repeat(200) + &"]".repeat(200);
        let error = scan_text(&text).unwrap_err();
        assert!(error.message.contains("deeper than 128"));
    }
}
