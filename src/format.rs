//! The canonical layout of `.flow` files, shared by `flowrun fmt` and the
//! language server.
//!
//! The formatter works on the grammar's tokens (see [`syntax::tokens`]).
//! It indents lines by block depth with spaces and puts one space between
//! tokens that were apart. It spaces punctuation, starts each step item on its
//! own line and breaks a long action before each clause, keeping the first
//! clause of `llm` beside the keyword. Strings are copied byte for byte,
//! comments lose only their trailing white space, and a JSON block moves with
//! its first line. Tabs that indent the lines of a JSON block become spaces,
//! which changes the bytes of the payload but not the JSON it is.
//!
//! Every line break the formatter writes is the file's own: CRLF when the
//! first line ends with CRLF, else LF. This includes the line breaks inside
//! triple-quoted strings, whose value ignores a CR before each LF. Line breaks
//! inside a JSON block are part of its payload and stay as they are. A leading
//! UTF-8 byte order mark stays at the start of the text.
//!
//! Every result is verified: the formatted text must parse to the same tree
//! (byte offsets aside) and keep the same comments. When tabs in JSON blocks
//! become spaces, the tree compared is that of the text with spaces. When the
//! full layout would change either, a layout that keeps every line where it
//! is is tried, and when that fails too the text is returned unchanged.

use crate::diagnostic::Diagnostic;
use crate::syntax::{self, tokens::Token, tokens::TokenKind};

/// Lines longer than this break before each clause of their action.
pub const MAX_WIDTH: usize = 100;

const INDENT: &str = "  ";

/// Formats a whole file. A file with syntax errors is not formatted: its
/// syntax diagnostics are returned instead.
pub fn format(source: &str) -> Result<String, Vec<Diagnostic>> {
    let parsed = syntax::parse(source);
    let syntax_errors: Vec<Diagnostic> = parsed
        .diagnostics
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect();
    if !syntax_errors.is_empty() {
        return Err(syntax_errors);
    }
    match source.strip_prefix(BOM) {
        Some(body) => Ok(format!("{BOM}{}", format_valid(body))),
        None => Ok(format_valid(source)),
    }
}

/// The UTF-8 byte order mark, which the grammar accepts at the start of a
/// file.
const BOM: char = '\u{FEFF}';

/// Formats a file without syntax errors or byte order mark.
fn format_valid(source: &str) -> String {
    let Some(tokens) = syntax::tokens::tokens(source) else {
        return source.to_string();
    };
    if let Some(untabbed) = untab_blocks(source, &tokens) {
        let laid_out = syntax::tokens::tokens(&untabbed)
            .and_then(|untabbed_tokens| verified_layout(&untabbed, &untabbed_tokens));
        if let Some(formatted) = laid_out {
            return formatted;
        }
    }
    verified_layout(source, &tokens).unwrap_or_else(|| source.to_string())
}

/// Returns the first layout of `source` that keeps its tree and comments.
fn verified_layout(source: &str, tokens: &[Token]) -> Option<String> {
    let expected = tree_key(source);
    let comments = comment_texts(source, tokens);
    let newline = line_break_of(source);
    for mode in [Mode::Full, Mode::KeepLines] {
        let formatted = layout(source, tokens, mode, newline);
        if formatted == source || same_meaning(&formatted, &expected, &comments) {
            return Some(formatted);
        }
    }
    None
}

/// Replaces each tab in the leading white space of a JSON block's later
/// lines with [`INDENT`], leaving the part that the parser removes (see
/// [`shift_block`]). Returns `None` when no block has such a tab.
///
/// The payload then differs in bytes but not as JSON: neither JSON strings
/// nor merge fields span lines, so white space at the start of a line lies
/// between JSON tokens. A block with a line that ends in a backslash, which
/// could continue a string, is left as it is.
fn untab_blocks(source: &str, tokens: &[Token]) -> Option<String> {
    let mut out = String::with_capacity(source.len());
    let mut cursor = 0;
    for token in tokens.iter().filter(|token| token.kind == TokenKind::Block) {
        let block = text(source, token);
        let continues_a_line = block
            .split('\n')
            .any(|line| line.trim_end_matches('\r').ends_with('\\'));
        if !block.contains('\t') || continues_a_line {
            continue;
        }
        let old = indent_of_line(source, token.span.start);
        out.push_str(&source[cursor..token.span.start]);
        for (index, line) in block.split('\n').enumerate() {
            if index > 0 {
                out.push('\n');
            }
            let leading = line.len() - line.trim_start_matches([' ', '\t']).len();
            let removed = if index == 0 { leading } else { leading.min(old) };
            out.push_str(&line[..removed]);
            out.push_str(&line[removed..leading].replace('\t', INDENT));
            out.push_str(&line[leading..]);
        }
        cursor = token.span.end;
    }
    if cursor == 0 {
        return None;
    }
    out.push_str(&source[cursor..]);
    (out != source).then_some(out)
}

/// Returns the line break of `source`: CRLF when its first line ends with
/// CRLF, else LF.
fn line_break_of(source: &str) -> &'static str {
    match source.find('\n') {
        Some(index) if source[..index].ends_with('\r') => "\r\n",
        _ => "\n",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Canonical layout: blank lines collapsed, steps and long actions
    /// broken into lines, punctuation spaced.
    Full,
    /// Indentation and spacing only, every token on its original line, for
    /// files whose meaning depends on line numbers (a bare action is named
    /// after its line).
    KeepLines,
}

fn same_meaning(formatted: &str, expected: &str, comments: &[String]) -> bool {
    let parsed = syntax::parse(formatted);
    if parsed.diagnostics.iter().any(Diagnostic::is_error) {
        return false;
    }
    let Some(tokens) = syntax::tokens::tokens(formatted) else {
        return false;
    };
    tree_key(formatted) == expected && comment_texts(formatted, &tokens) == comments
}

/// Prints the syntax tree of `source` without spans or other byte offsets,
/// to compare what two texts mean.
pub fn tree_key(source: &str) -> String {
    let printed = format!("{:?}", syntax::parse(source).file);
    let printed = erase_between(&printed, "Span { start: ", '}', "Span");
    // A code step keeps the offset of each line of its script.
    erase_between(&printed, "line_starts: [", ']', "line_starts")
}

/// Replaces every piece of `printed` that starts with `mark` and ends with
/// the next `end` by `replacement`.
fn erase_between(printed: &str, mark: &str, end: char, replacement: &str) -> String {
    let mut out = String::with_capacity(printed.len());
    let mut rest = printed;
    while let Some(index) = rest.find(mark) {
        out.push_str(&rest[..index]);
        out.push_str(replacement);
        let after = &rest[index..];
        rest = after.find(end).map_or("", |end_index| &after[end_index + 1..]);
    }
    out.push_str(rest);
    out
}

fn comment_texts(source: &str, tokens: &[Token]) -> Vec<String> {
    tokens
        .iter()
        .filter(|token| token.kind == TokenKind::Comment)
        .map(|token| source[token.span.start..token.span.end].trim_end().to_string())
        .collect()
}

fn text<'a>(source: &'a str, token: &Token) -> &'a str {
    &source[token.span.start..token.span.end]
}

/// Lays out the tokens in `mode`, ending lines with `newline`.
fn layout(source: &str, tokens: &[Token], mode: Mode, newline: &str) -> String {
    let breaks = line_breaks(source, tokens, mode);
    let mut out = String::with_capacity(source.len() + source.len() / 8);
    let mut depth = 0usize;
    let mut line_indent = 0usize;
    for (index, token) in tokens.iter().enumerate() {
        let previous = index.checked_sub(1).map(|before| &tokens[before]);
        if token.kind == TokenKind::Close {
            depth = depth.saturating_sub(1);
        }
        let newlines = breaks[index];
        if previous.is_none() {
            for _ in 0..newlines {
                out.push_str(newline);
            }
            line_indent = depth * INDENT.len();
        } else if newlines > 0 {
            for _ in 0..newlines {
                out.push_str(newline);
            }
            line_indent = depth * INDENT.len();
            for _ in 0..depth {
                out.push_str(INDENT);
            }
        } else if let Some(previous) = previous {
            let apart = token.span.start > previous.span.end;
            if spaced(source, previous, token, apart, mode) {
                out.push(' ');
            }
        }
        match token.kind {
            TokenKind::Block => {
                let old_indent = indent_of_line(source, token.span.start);
                shift_block(text(source, token), old_indent, line_indent, &mut out);
            }
            TokenKind::Triple => {
                let body = text(source, token).replace("\r\n", "\n");
                out.push_str(&body.replace('\n', newline));
            }
            TokenKind::Comment => out.push_str(text(source, token).trim_end()),
            _ => out.push_str(text(source, token)),
        }
        if token.kind == TokenKind::Open {
            depth += 1;
        }
    }
    if !out.is_empty() {
        out.push_str(newline);
    }
    out
}

/// Counts the line breaks to write before each token.
fn line_breaks(source: &str, tokens: &[Token], mode: Mode) -> Vec<usize> {
    let mut breaks: Vec<usize> = tokens
        .iter()
        .enumerate()
        .map(|(index, token)| {
            let gap_start = index.checked_sub(1).map_or(0, |before| tokens[before].span.end);
            source[gap_start..token.span.start].matches('\n').count()
        })
        .collect();
    if mode == Mode::KeepLines {
        return breaks;
    }
    if let Some(first) = breaks.first_mut() {
        *first = 0;
    }
    // A step's items each start a line, and its closing brace has its own.
    let mut open_steps: Vec<usize> = Vec::new();
    for index in 1..tokens.len() {
        let token = &tokens[index];
        let previous = &tokens[index - 1];
        if previous.kind == TokenKind::Open && previous.step_brace && token.kind != TokenKind::Comment {
            breaks[index] = breaks[index].max(1);
        }
        if token.item_start {
            breaks[index] = breaks[index].max(1);
        }
        if token.step_brace && token.kind == TokenKind::Open {
            open_steps.push(index);
        }
        if token.step_brace && token.kind == TokenKind::Close {
            let opened = open_steps.pop();
            if opened != Some(index - 1) {
                breaks[index] = breaks[index].max(1);
            }
        }
        // No blank line right inside a block, at most one elsewhere.
        if previous.kind == TokenKind::Open || token.kind == TokenKind::Close {
            breaks[index] = breaks[index].min(1);
        }
        breaks[index] = breaks[index].min(2);
    }
    break_long_actions(source, tokens, &mut breaks);
    breaks
}

/// Breaks a line longer than [`MAX_WIDTH`] that contains an `http`, `llm`,
/// `extract` or `transcribe` action and more than one of its clauses, before
/// each clause but one that directly follows the keyword, so that `llm` is
/// never alone on its line. The width counts the line's indentation, and
/// when a triple-quoted string or JSON block spans lines, the widest of them.
fn break_long_actions(source: &str, tokens: &[Token], breaks: &mut [usize]) {
    let mut depth = 0usize;
    let mut start = 0;
    while start < tokens.len() {
        let mut end = start + 1;
        while end < tokens.len() && breaks[end] == 0 {
            end += 1;
        }
        let line = &tokens[start..end];
        if line[0].kind == TokenKind::Close {
            depth = depth.saturating_sub(1);
        }
        let first = text(source, &line[0]);
        let clauses = line[1..].iter().filter(|token| token.clause_start).count();
        if matches!(first, "http" | "llm" | "extract" | "transcribe")
            && clauses > 1
            && line_width(source, line, depth * INDENT.len()) > MAX_WIDTH
        {
            for index in start + 2..end {
                if tokens[index].clause_start {
                    breaks[index] = 1;
                }
            }
        }
        for (index, token) in line.iter().enumerate() {
            match token.kind {
                TokenKind::Open => depth += 1,
                TokenKind::Close if index > 0 => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        start = end;
    }
}

/// Measures the widest physical line of a line of tokens that starts at
/// column `indent`, in characters, counting one space between tokens.
fn line_width(source: &str, tokens: &[Token], indent: usize) -> usize {
    let mut widest = 0;
    let mut width = indent;
    for token in tokens {
        let body = text(source, token);
        match (body.find('\n'), body.rfind('\n')) {
            (Some(first_end), Some(last_start)) => {
                widest = widest.max(width + body[..first_end].trim_end().chars().count());
                width = body[last_start + 1..].chars().count() + 1;
            }
            _ => width += body.chars().count() + 1,
        }
    }
    // The last token has no space after it.
    widest.max(width.saturating_sub(1))
}

/// Decides whether to write a space between two tokens on one line. `apart`
/// is true when the source had white space between them.
fn spaced(source: &str, previous: &Token, token: &Token, apart: bool, mode: Mode) -> bool {
    if mode == Mode::KeepLines {
        return apart;
    }
    let before = text(source, previous);
    let this = text(source, token);
    let punct =
        |token: &Token, text: &str, set: &[&str]| token.kind == TokenKind::Punct && set.contains(&text);
    if token.kind == TokenKind::Comment {
        return true;
    }
    if punct(token, this, &[":", ","]) {
        return false;
    }
    if punct(previous, before, &[":", ","]) {
        return true;
    }
    if punct(token, this, &["=", "->", "|"]) || punct(previous, before, &["=", "->", "|"]) {
        return true;
    }
    if token.kind == TokenKind::Open || previous.kind == TokenKind::Close {
        return true;
    }
    if (previous.kind == TokenKind::Open || token.kind == TokenKind::Close)
        && !(previous.kind == TokenKind::Open && token.kind == TokenKind::Close)
    {
        return true;
    }
    apart
}

/// Measures the leading white space, in bytes, of the line containing `offset`.
fn indent_of_line(source: &str, offset: usize) -> usize {
    let line_start = source[..offset].rfind('\n').map_or(0, |index| index + 1);
    let line = &source[line_start..offset];
    line.len() - line.trim_start_matches([' ', '\t']).len()
}

/// Writes a JSON block whose first line moves from indentation `old` to
/// `new`. The parser removes up to the first line's indentation from each
/// later line, so each later line gets `new` spaces in place of what the
/// parser removes, and the payload stays byte for byte. A line that is
/// blank after that removal gets no indentation, so no trailing white space.
///
/// White space beyond the removed part stays as written: [`untab_blocks`]
/// has already turned its tabs into spaces where that keeps the JSON.
fn shift_block(block: &str, old: usize, new: usize, out: &mut String) {
    for (index, line) in block.split('\n').enumerate() {
        if index == 0 {
            out.push_str(line);
            continue;
        }
        // A CR before the LF stays with its line because it is part of the payload.
        out.push('\n');
        let leading = line.len() - line.trim_start_matches([' ', '\t']).len();
        let payload = &line[leading.min(old)..];
        if !payload.trim_end_matches('\r').is_empty() {
            for _ in 0..new {
                out.push(' ');
            }
        }
        out.push_str(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(source: &str) -> String {
        format(source).expect("the source parses")
    }

    #[test]
    fn indents_by_depth_and_spaces_punctuation() {
        let source = "workflow   \"W\"\nlet a=1\nstep \"s\"{\nhttp GET \"http://x.test/\"   headers {\"A\":\"b\",\"C\" : \"d\"}\n      timeout  5s   # slow\n}\n";
        assert_eq!(
            formatted(source),
            "workflow \"W\"\nlet a = 1\nstep \"s\" {\n  http GET \"http://x.test/\" headers { \"A\": \"b\", \"C\": \"d\" }\n  timeout 5s # slow\n}\n"
        );
    }

    #[test]
    fn moves_a_json_block_with_its_first_line() {
        let source = "step \"s\" {\n      http POST \"http://x.test/\" json {\n        \"a\": [\n          1\n        ]\n      }\n}\n";
        assert_eq!(
            formatted(source),
            "step \"s\" {\n  http POST \"http://x.test/\" json {\n    \"a\": [\n      1\n    ]\n  }\n}\n"
        );
    }

    #[test]
    fn keeps_triple_strings_and_comments_byte_for_byte() {
        let source =
            "step \"s\" {\n# first\n    http PUT \"http://x.test/\" xml \"\"\"\n   <a>  x  </a>\n\"\"\"\n}\n";
        assert_eq!(
            formatted(source),
            "step \"s\" {\n  # first\n  http PUT \"http://x.test/\" xml \"\"\"\n   <a>  x  </a>\n\"\"\"\n}\n"
        );
    }

    #[test]
    fn puts_step_items_on_their_own_lines() {
        let source = "step \"s\" { http GET \"http://x.test/\" }\n\n\n\nstep \"t\" {\n\n  http GET \"http://x.test/\"\n\n}";
        assert_eq!(
            formatted(source),
            "step \"s\" {\n  http GET \"http://x.test/\"\n}\n\nstep \"t\" {\n  http GET \"http://x.test/\"\n}\n"
        );
    }

    #[test]
    fn puts_code_outputs_and_options_on_their_own_lines() {
        let source = "step \"s\" {\n  code python \"\"\"\nx = 1\n\"\"\" outputs { x -> entity.x }\n}\nstep \"t\" {\n  code python \"print(1)\" inputs { a: 1 } outputs { x -> entity.x } # c\n  http GET \"http://x.test/\" retry 3\n}\n";
        assert_eq!(
            formatted(source),
            "step \"s\" {\n  code python \"\"\"\nx = 1\n\"\"\"\n  outputs { x -> entity.x }\n}\nstep \"t\" {\n  code python \"print(1)\"\n  inputs { a: 1 }\n  outputs { x -> entity.x } # c\n  http GET \"http://x.test/\"\n  retry 3\n}\n"
        );
    }

    #[test]
    fn breaks_a_long_action_before_each_clause() {
        let url = format!("http://x.test/{}", "a".repeat(60));
        let source = format!(
            "step \"s\" {{\n  http POST \"{url}\" json {{ \"a\": 1 }} headers {{ \"A\": \"b\" }}\n}}\n"
        );
        assert_eq!(
            formatted(&source),
            format!("step \"s\" {{\n  http POST \"{url}\"\n  json {{ \"a\": 1 }}\n  headers {{ \"A\": \"b\" }}\n}}\n")
        );
    }

    #[test]
    fn keeps_the_first_llm_clause_beside_llm() {
        let prompt = "a".repeat(80);
        let source = format!(
            "step \"s\" {{\n  llm model \"m\" system \"be brief\" prompt \"{prompt}\" choices [\"x\", \"y\"] -> entity.kind\n}}\n"
        );
        let once = formatted(&source);
        assert_eq!(
            once,
            format!(
                "step \"s\" {{\n  llm model \"m\"\n  system \"be brief\"\n  prompt \"{prompt}\"\n  choices [\"x\", \"y\"]\n  -> entity.kind\n}}\n"
            )
        );
        assert_eq!(formatted(&once), once);
    }

    #[test]
    fn measures_a_long_line_after_a_triple_string() {
        let system = "b".repeat(80);
        let source = format!(
            "step \"s\" {{\n  llm prompt \"\"\"\n    Summarise\n  \"\"\" system \"{system}\" -> entity.summary\n}}\n"
        );
        let once = formatted(&source);
        assert_eq!(
            once,
            format!(
                "step \"s\" {{\n  llm prompt \"\"\"\n    Summarise\n  \"\"\"\n  system \"{system}\"\n  -> entity.summary\n}}\n"
            )
        );
        assert_eq!(formatted(&once), once);
    }

    #[test]
    fn counts_indentation_in_the_line_width() {
        // Two spaces of indentation and 37 other characters around the prompt.
        let at_limit = format!(
            "step \"s\" {{\n  llm model \"m\" prompt \"{}\" -> entity.s\n}}\n",
            "c".repeat(63)
        );
        assert_eq!(formatted(&at_limit), at_limit);
        let prompt = "c".repeat(64);
        let over_limit = format!("step \"s\" {{\n  llm model \"m\" prompt \"{prompt}\" -> entity.s\n}}\n");
        assert_eq!(
            formatted(&over_limit),
            format!("step \"s\" {{\n  llm model \"m\"\n  prompt \"{prompt}\"\n  -> entity.s\n}}\n")
        );
    }

    #[test]
    fn formats_before_a_code_step() {
        let source = "let a=1\nstep \"s\" {\n\tcode python \"\"\"\n\t\tx = 1\n\t\"\"\"\n}\n";
        assert_eq!(
            formatted(source),
            "let a = 1\nstep \"s\" {\n  code python \"\"\"\n\t\tx = 1\n\t\"\"\"\n}\n"
        );
    }

    #[test]
    fn bare_action_keeps_its_line() {
        let source = "\n\n\nhttp   GET \"http://x.test/\"\n";
        assert_eq!(formatted(source), "\n\n\nhttp GET \"http://x.test/\"\n");
    }

    #[test]
    fn is_idempotent() {
        let source = "let a =   \"x\"\nstep \"s\"{ http POST \"http://x.test/\" json {\n\"a\": 1\n} headers { \"A\": \"b\" }\nsave response.status->entity.s\n}\n";
        let once = formatted(source);
        assert_eq!(formatted(&once), once);
        assert_eq!(tree_key(&once), tree_key(source));
    }

    #[test]
    fn writes_the_first_line_break_everywhere() {
        let source = "let a = 1\r\nlet b = 2\nstep \"s\" {\r\n\thttp GET \"http://x.test/\" # get  \r\n}";
        assert_eq!(
            formatted(source),
            "let a = 1\r\nlet b = 2\r\nstep \"s\" {\r\n  http GET \"http://x.test/\" # get\r\n}\r\n"
        );
        let source = "let a = 1\nlet b = 2\r\n";
        assert_eq!(formatted(source), "let a = 1\nlet b = 2\n");
    }

    #[test]
    fn replaces_the_removed_indentation_of_a_json_block() {
        let source =
            "step \"s\" {\r\n\thttp POST \"http://x.test/\" json {\r\n\t  \"a\": 1\r\n\r\n\t}\r\n}\r\n";
        let once = formatted(source);
        assert_eq!(
            once,
            "step \"s\" {\r\n  http POST \"http://x.test/\" json {\r\n    \"a\": 1\r\n\r\n  }\r\n}\r\n"
        );
        assert_eq!(formatted(&once), once);
    }

    #[test]
    fn turns_tabs_in_a_json_block_into_spaces() {
        let source =
            "step \"s\" {\n\thttp POST \"http://x.test/\" json {\n\t\t\"a\": [\n\t\t\t1\n\t\t]\n\t}\n}\n";
        let once = formatted(source);
        assert_eq!(
            once,
            "step \"s\" {\n  http POST \"http://x.test/\" json {\n    \"a\": [\n      1\n    ]\n  }\n}\n"
        );
        assert_eq!(formatted(&once), once);
    }

    #[test]
    fn keeps_tabs_before_a_backslash_newline() {
        let source =
            "step \"s\" {\n\thttp POST \"http://x.test/\" json {\n\t\t\"a\": \"b\\\n\t\tc\"\n\t}\n}\n";
        assert_eq!(
            formatted(source),
            "step \"s\" {\n  http POST \"http://x.test/\" json {\n  \t\"a\": \"b\\\n  \tc\"\n  }\n}\n"
        );
    }

    #[test]
    fn keeps_a_byte_order_mark() {
        assert_eq!(formatted("\u{FEFF}let a=1\n"), "\u{FEFF}let a = 1\n");
        assert_eq!(formatted("\u{FEFF}let a = 1\n"), "\u{FEFF}let a = 1\n");
    }

    #[test]
    fn refuses_a_file_with_syntax_errors() {
        let errors = format("step \"s\" {").expect_err("a syntax error");
        assert_eq!(errors[0].code, crate::diagnostic::Code::SyntaxError);
    }
}
