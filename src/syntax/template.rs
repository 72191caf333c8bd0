//! Parses the content of string literals and payload blocks into templates:
//! literal text and `<<merge field>>` expressions, each with its span.
//!
//! `\<` writes a literal `<` that never starts a merge field, so `\<<` is a
//! literal `<<` in every kind of string.

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::syntax::ast::{
    Call, Expr, Ident, MergeField, Path, PathKey, PathSegment, Segment, Template, TextPart,
};

/// How the text between the delimiters is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A `"..."` string: `\"`, `\\`, `\n`, `\r`, `\t`, `\u{...}` and `\<`
    /// escapes are decoded.
    Quoted,
    /// A `{ ... }` JSON block: text is kept verbatim, so JSON escapes reach
    /// the JSON parser, and only `\<` is decoded.
    Raw,
    /// A `"""..."""` string: verbatim like `Raw`, with the first line break,
    /// a blank last line and the common indentation removed.
    Triple,
    /// A `{ ... }` block that starts on a line indented by this many bytes:
    /// verbatim like `Raw`, with up to that much leading white space removed
    /// from each later line, so the payload is indented as the file shows it.
    Block(usize),
}

/// Parses `content`, which starts at byte `base` of the source.
pub fn parse(content: &str, base: usize, mode: Mode, diagnostics: &mut Vec<Diagnostic>) -> Template {
    let mut segments = Vec::new();
    match mode {
        Mode::Quoted | Mode::Raw => {
            parse_line(content, base, mode, &mut segments, diagnostics);
        }
        Mode::Block(indent) => {
            let mut offset = 0;
            for (index, line) in content.split('\n').enumerate() {
                let mut start = offset;
                offset += line.len() + 1;
                if index > 0 {
                    segments.push(Segment::Text(TextPart {
                        text: "\n".to_string(),
                        span: Span::new(base + start - 1, base + start),
                        verbatim: true,
                    }));
                    let leading = line.len() - line.trim_start_matches([' ', '\t']).len();
                    start += leading.min(indent);
                }
                parse_line(
                    &content[start..offset - 1],
                    base + start,
                    Mode::Raw,
                    &mut segments,
                    diagnostics,
                );
            }
        }
        Mode::Triple => {
            for (index, (start, line)) in dedent(content).into_iter().enumerate() {
                if index > 0 {
                    segments.push(Segment::Text(TextPart {
                        text: "\n".to_string(),
                        span: Span::new(base + start, base + start),
                        verbatim: false,
                    }));
                }
                parse_line(line, base + start, Mode::Raw, &mut segments, diagnostics);
            }
        }
    }
    Template { segments }
}

/// Splits triple-quoted content into lines with the common indentation
/// removed, each with its offset in `content`.
pub(crate) fn dedent(content: &str) -> Vec<(usize, &str)> {
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut offset = 0;
    for line in content.split('\n') {
        let trimmed = line.strip_suffix('\r').unwrap_or(line);
        lines.push((offset, trimmed));
        offset += line.len() + 1;
    }

    if lines.len() > 1 && lines[0].1.trim().is_empty() {
        lines.remove(0);
    }
    if lines.len() > 1 && lines.last().is_some_and(|(_, line)| line.trim().is_empty()) {
        lines.pop();
    }

    // The common indentation is the longest run of white space that every
    // non-blank line starts with, so a tab and a space never count as equal.
    let mut common: Option<&str> = None;
    for (_, line) in lines.iter().filter(|(_, line)| !line.trim().is_empty()) {
        let leading = &line[..line.len() - line.trim_start_matches([' ', '\t']).len()];
        common = Some(match common {
            None => leading,
            Some(prefix) => {
                let shared = prefix
                    .bytes()
                    .zip(leading.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                &prefix[..shared]
            }
        });
    }
    let indent = common.map_or(0, str::len);

    lines
        .into_iter()
        .map(|(start, line)| {
            let cut = indent.min(line.len() - line.trim_start_matches([' ', '\t']).len());
            (start + cut, &line[cut..])
        })
        .collect()
}

fn parse_line(
    content: &str,
    base: usize,
    mode: Mode,
    segments: &mut Vec<Segment>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let bytes = content.as_bytes();
    let mut text = String::new();
    let mut text_start = 0;
    let mut verbatim = true;
    let mut pos = 0;

    let flush = |text: &mut String, start: usize, end: usize, verbatim: bool, segments: &mut Vec<Segment>| {
        if !text.is_empty() {
            segments.push(Segment::Text(TextPart {
                text: std::mem::take(text),
                span: Span::new(base + start, base + end),
                verbatim,
            }));
        }
    };

    while pos < bytes.len() {
        if bytes[pos] == b'\\' {
            let escape_start = pos;
            let Some(next) = content[pos + 1..].chars().next() else {
                text.push('\\');
                pos += 1;
                continue;
            };
            if next == '<' {
                // The escaped `<` forms its own segment so that the text
                // around it stays a verbatim copy of the source.
                flush(&mut text, text_start, pos, verbatim, segments);
                segments.push(Segment::Text(TextPart {
                    text: "<".to_string(),
                    span: Span::new(base + pos, base + pos + 2),
                    verbatim: false,
                }));
                pos += 2;
                text_start = pos;
                verbatim = true;
                continue;
            }
            if mode != Mode::Quoted {
                text.push('\\');
                text.push(next);
                pos += 1 + next.len_utf8();
                continue;
            }
            verbatim = false;
            match decode_escape(&content[pos + 1..]) {
                Ok((decoded, used)) => {
                    text.push(decoded);
                    pos += 1 + used;
                }
                Err(used) => {
                    let end = (pos + 1 + used).min(content.len());
                    diagnostics.push(
                        Diagnostic::error(
                            Code::InvalidEscape,
                            format!("invalid escape `{}` in string", &content[escape_start..end]),
                        )
                        .with_label(Span::new(base + escape_start, base + end), "unknown escape")
                        .with_help(
                            "valid escapes are \\\" \\\\ \\n \\r \\t \\0 \\u{hex} and \\< (a literal `<`)",
                        ),
                    );
                    pos = end;
                }
            }
            continue;
        }

        if content[pos..].starts_with("<<") {
            flush(&mut text, text_start, pos, verbatim, segments);
            match find_field_end(content, pos + 2) {
                Some(close) => {
                    let span = Span::new(base + pos, base + close + 2);
                    let inner = &content[pos + 2..close];
                    if let Some(expr) = parse_expression(inner, base + pos + 2, span, diagnostics) {
                        segments.push(Segment::Field(MergeField { expr, span }));
                    }
                    pos = close + 2;
                }
                None => {
                    diagnostics.push(
                        Diagnostic::error(Code::UnterminatedMergeField, "unterminated merge field")
                            .with_label(Span::new(base + pos, base + pos + 2), "this `<<` has no closing `>>`")
                            .with_help("close the merge field with `>>` on the same line, or write `\\<<` for a literal `<<`"),
                    );
                    pos = content.len();
                }
            }
            text_start = pos;
            verbatim = true;
            continue;
        }

        let c = content[pos..].chars().next().unwrap_or_default();
        text.push(c);
        pos += c.len_utf8();
    }
    flush(&mut text, text_start, pos, verbatim, segments);
}

/// Decodes one escape after its backslash. Returns the character and the
/// bytes used, or on failure the bytes that form the invalid escape.
fn decode_escape(rest: &str) -> Result<(char, usize), usize> {
    let mut chars = rest.chars();
    let first = chars.next().ok_or(0usize)?;
    let simple = match first {
        '"' => Some('"'),
        '\\' => Some('\\'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        '0' => Some('\0'),
        _ => None,
    };
    if let Some(decoded) = simple {
        return Ok((decoded, 1));
    }
    if first != 'u' {
        return Err(first.len_utf8());
    }
    let Some(body) = rest.strip_prefix("u{") else {
        return Err(1);
    };
    let Some(close) = body.find('}') else {
        return Err(1);
    };
    let digits = &body[..close];
    let used = 2 + close + 1;
    if digits.is_empty() || digits.len() > 6 {
        return Err(used);
    }
    u32::from_str_radix(digits, 16)
        .ok()
        .and_then(char::from_u32)
        .map(|c| (c, used))
        .ok_or(used)
}

/// Finds the `>>` that closes a merge field, skipping quoted arguments.
fn find_field_end(content: &str, mut pos: usize) -> Option<usize> {
    let bytes = content.as_bytes();
    while pos < bytes.len() {
        match bytes[pos] {
            b'>' if bytes.get(pos + 1) == Some(&b'>') => return Some(pos),
            b'"' => {
                pos += 1;
                while pos < bytes.len() && bytes[pos] != b'"' {
                    if bytes[pos] == b'\\' {
                        pos += 1;
                    }
                    pos += 1;
                }
                pos += 1;
            }
            b'\n' => return None,
            _ => pos += 1,
        }
    }
    None
}

/// Parses the expression between `<<` and `>>`.
pub fn parse_expression(
    inner: &str,
    base: usize,
    field_span: Span,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Expr> {
    let mut parser = ExprParser {
        text: inner,
        base,
        pos: 0,
        depth: 0,
    };
    parser.skip_spaces();
    if parser.at_end() {
        diagnostics.push(
            Diagnostic::error(Code::InvalidMergeField, "empty merge field")
                .with_label(field_span, "nothing between `<<` and `>>`")
                .with_help("write a path such as `<<entity.id>>`, or `\\<<` for a literal `<<`"),
        );
        return None;
    }
    let result = parser.expression().and_then(|expr| {
        parser.skip_spaces();
        if parser.at_end() {
            Ok(expr)
        } else {
            Err(parser.error("expected `>>` after the expression"))
        }
    });
    match result {
        Ok(expr) => Some(expr),
        Err((message, span)) => {
            diagnostics.push(
                Diagnostic::error(Code::InvalidMergeField, format!("invalid merge field: {message}"))
                    .with_label(span, message)
                    .with_help("a merge field is a path such as `entity.items[0].sku`, `entity[\"first name\"]`, or a helper call such as `default entity.name \"n/a\"`"),
            );
            None
        }
    }
}

type ParseError = (String, Span);

/// Helper calls nested deeper than this are rejected, so that hostile input
/// cannot exhaust the stack.
const MAX_CALL_DEPTH: usize = 32;

struct ExprParser<'a> {
    text: &'a str,
    base: usize,
    pos: usize,
    depth: usize,
}

impl ExprParser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn span_from(&self, start: usize) -> Span {
        Span::new(self.base + start, self.base + self.pos)
    }

    fn error(&self, message: &str) -> ParseError {
        let end = self.text[self.pos..]
            .chars()
            .next()
            .map_or(self.pos, |c| self.pos + c.len_utf8());
        (
            message.to_string(),
            Span::new(self.base + self.pos, self.base + end),
        )
    }

    /// `expr := name atom+ | atom`
    fn expression(&mut self) -> Result<Expr, ParseError> {
        let start = self.pos;
        let first = self.atom()?;
        let Expr::Path(path) = &first else {
            return Ok(first);
        };
        self.skip_spaces();
        if self.at_end() || self.peek() == Some(')') || !path.segments.is_empty() {
            return Ok(first);
        }
        let helper = path.root.clone();
        let mut args = Vec::new();
        while !self.at_end() && self.peek() != Some(')') {
            args.push(self.atom()?);
            self.skip_spaces();
        }
        Ok(Expr::Call(Call {
            helper,
            args,
            span: self.span_from(start),
        }))
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        self.skip_spaces();
        let start = self.pos;
        match self.peek() {
            Some('"') => {
                let text = self.quoted()?;
                Ok(Expr::String(text, self.span_from(start)))
            }
            Some('(') => {
                if self.depth >= MAX_CALL_DEPTH {
                    return Err(self.error("helper calls nest more than 32 levels deep"));
                }
                self.depth += 1;
                self.pos += 1;
                self.skip_spaces();
                let inner = self.expression()?;
                self.depth -= 1;
                self.skip_spaces();
                if self.peek() != Some(')') {
                    return Err(self.error("expected `)`"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                self.pos += 1;
                while matches!(self.peek(), Some(c) if c.is_ascii_digit() || c == '.') {
                    self.pos += 1;
                }
                let literal = &self.text[start..self.pos];
                if literal.parse::<f64>().is_err() {
                    return Err((format!("`{literal}` is not a number"), self.span_from(start)));
                }
                Ok(Expr::Number(literal.to_string(), self.span_from(start)))
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => self.path().map(Expr::Path),
            Some(_) => Err(self.error("expected a path, a quoted string or a number")),
            None => Err(self.error("expected an expression")),
        }
    }

    fn name(&mut self) -> Ident {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            self.pos += 1;
        }
        Ident {
            text: self.text[start..self.pos].to_string(),
            span: self.span_from(start),
        }
    }

    fn path(&mut self) -> Result<Path, ParseError> {
        let start = self.pos;
        let root = self.name();
        let mut segments = Vec::new();
        loop {
            let segment_start = self.pos;
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    // The span of a `.name` step leaves out the dot.
                    let segment_start = self.pos;
                    match self.peek() {
                        Some(c) if c.is_ascii_digit() => {
                            let digits_start = self.pos;
                            while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                                self.pos += 1;
                            }
                            let index = self.index(digits_start)?;
                            segments.push(PathSegment {
                                key: PathKey::Index(index),
                                span: self.span_from(segment_start),
                            });
                        }
                        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                            let name = self.name();
                            segments.push(PathSegment {
                                key: PathKey::Field(name.text),
                                span: self.span_from(segment_start),
                            });
                        }
                        _ => return Err(self.error("expected a field name after `.`")),
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    let key = match self.peek() {
                        Some('"') => PathKey::Field(self.quoted()?),
                        Some(c) if c.is_ascii_digit() => {
                            let digits_start = self.pos;
                            while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                                self.pos += 1;
                            }
                            PathKey::Index(self.index(digits_start)?)
                        }
                        _ => return Err(self.error("expected an index or a quoted key after `[`")),
                    };
                    if self.peek() != Some(']') {
                        return Err(self.error("expected `]`"));
                    }
                    self.pos += 1;
                    segments.push(PathSegment {
                        key,
                        span: self.span_from(segment_start),
                    });
                }
                _ => break,
            }
        }
        Ok(Path {
            root,
            segments,
            span: self.span_from(start),
        })
    }

    fn index(&self, digits_start: usize) -> Result<usize, ParseError> {
        let digits = &self.text[digits_start..self.pos];
        digits.parse().map_err(|_| {
            (
                format!("index `{digits}` is too large"),
                self.span_from(digits_start),
            )
        })
    }

    /// Reads a `"..."` string with JSON-style escapes.
    fn quoted(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut escaped = false;
        while let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                return serde_json::from_str(&self.text[start..self.pos]).map_err(|_| {
                    (
                        "invalid escape in quoted string".to_string(),
                        self.span_from(start),
                    )
                });
            }
        }
        Err(("unterminated quoted string".to_string(), self.span_from(start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(content: &str, mode: Mode) -> Template {
        let mut diagnostics = Vec::new();
        let template = parse(content, 0, mode, &mut diagnostics);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        template
    }

    fn codes(content: &str, mode: Mode) -> Vec<Code> {
        let mut diagnostics = Vec::new();
        parse(content, 0, mode, &mut diagnostics);
        diagnostics.into_iter().map(|d| d.code).collect()
    }

    #[test]
    fn fields_and_text_keep_spans() {
        let template = parse_ok("a/<<entity.id>>/b", Mode::Quoted);
        assert_eq!(template.segments.len(), 3);
        let field = template.fields().next().unwrap();
        assert_eq!(field.span, Span::new(2, 15));
        let Expr::Path(path) = &field.expr else {
            panic!("not a path")
        };
        assert_eq!(path.display(), "entity.id");
        assert_eq!(path.root.span, Span::new(4, 10));
    }

    #[test]
    fn paths_with_indexes_and_quoted_keys() {
        let template = parse_ok(r#"<<entity.items[0]["first name"].x-y>>"#, Mode::Raw);
        let Expr::Path(path) = &template.fields().next().unwrap().expr else {
            panic!()
        };
        assert_eq!(
            path.segments.iter().map(|s| s.key.clone()).collect::<Vec<_>>(),
            vec![
                PathKey::Field("items".into()),
                PathKey::Index(0),
                PathKey::Field("first name".into()),
                PathKey::Field("x-y".into()),
            ]
        );
        assert_eq!(path.display(), r#"entity.items[0]["first name"].x-y"#);
    }

    #[test]
    fn helper_calls_with_nested_calls() {
        let template = parse_ok(r#"<<upper (default entity.name "n/a")>>"#, Mode::Quoted);
        let Expr::Call(call) = &template.fields().next().unwrap().expr else {
            panic!()
        };
        assert_eq!(call.helper.text, "upper");
        let Expr::Call(inner) = &call.args[0] else {
            panic!()
        };
        assert_eq!(inner.helper.text, "default");
        assert_eq!(inner.args[1], Expr::String("n/a".into(), Span::new(29, 34)));
    }

    #[test]
    fn escaped_angle_brackets_are_text() {
        let template = parse_ok(r"a\<<b>>", Mode::Quoted);
        assert_eq!(template.as_plain().unwrap(), "a<<b>>");
        let template = parse_ok(r#"{"a": "\<<x>>"}"#, Mode::Raw);
        assert_eq!(template.as_plain().unwrap(), r#"{"a": "<<x>>"}"#);
    }

    #[test]
    fn quoted_escapes_are_decoded() {
        let template = parse_ok(r#"a\"b\\c\nd\u{1F600}"#, Mode::Quoted);
        assert_eq!(template.as_plain().unwrap(), "a\"b\\c\nd\u{1F600}");
    }

    #[test]
    fn raw_mode_keeps_json_escapes() {
        let template = parse_ok(r#"{"a": "x\"y\n"}"#, Mode::Raw);
        assert_eq!(template.as_plain().unwrap(), r#"{"a": "x\"y\n"}"#);
    }

    #[test]
    fn triple_strings_are_dedented() {
        let template = parse_ok("\n    <a>\n      <b><<entity.x>></b>\n    </a>\n  ", Mode::Triple);
        let mut text = String::new();
        for segment in &template.segments {
            match segment {
                Segment::Text(part) => text.push_str(&part.text),
                Segment::Field(_) => text.push_str("{x}"),
            }
        }
        assert_eq!(text, "<a>\n  <b>{x}</b>\n</a>");
    }

    #[test]
    fn dedent_never_treats_a_tab_as_a_space() {
        let template = parse_ok("\n  a\n\tb\n", Mode::Triple);
        assert_eq!(template.as_plain().unwrap(), "  a\n\tb");
        let template = parse_ok("\n\t\ta\n\t\t\tb\n", Mode::Triple);
        assert_eq!(template.as_plain().unwrap(), "a\n\tb");
    }

    #[test]
    fn invalid_input_is_reported() {
        assert_eq!(
            codes("<<entity.id", Mode::Quoted),
            vec![Code::UnterminatedMergeField]
        );
        assert_eq!(codes("<<  >>", Mode::Quoted), vec![Code::InvalidMergeField]);
        assert_eq!(
            codes("<<entity..id>>", Mode::Quoted),
            vec![Code::InvalidMergeField]
        );
        assert_eq!(
            codes("<<entity[x]>>", Mode::Quoted),
            vec![Code::InvalidMergeField]
        );
        assert_eq!(codes(r"\q", Mode::Quoted), vec![Code::InvalidEscape]);
        assert_eq!(codes(r"\u{110000}", Mode::Quoted), vec![Code::InvalidEscape]);
    }
}
