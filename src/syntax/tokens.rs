//! The tokens of a file as the grammar reads them, for the formatter.
//!
//! Every leaf of the pest parse is one token; strings, triple-quoted strings
//! and JSON blocks are single tokens whatever they contain. The text between
//! leaves holds only the grammar's literal punctuation, white space and
//! comments, and is split into tokens here. Because the grammar itself finds
//! the tokens, the list stays right for rules this module does not name.

use pest::iterators::Pair;
use pest::Parser as _;

use crate::diagnostic::Span;
use crate::syntax::{FlowParser, Rule};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A word, number, path or option argument.
    Word,
    /// A `"..."` string.
    Str,
    /// A `"""..."""` string, which may span lines.
    Triple,
    /// A `{ ... }` or `[ ... ]` JSON payload block, which may span lines.
    Block,
    /// `# ...` up to the end of its line.
    Comment,
    /// `{` opening a block of the language (a step, headers, a schema).
    Open,
    /// `}` closing such a block.
    Close,
    /// Other punctuation written by the grammar: `:`, `,`, `=`, `->`, `[`.
    Punct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
    /// True for the braces of a `step` block.
    pub step_brace: bool,
    /// True for the first token of an action's clause: a payload, `headers`,
    /// or a clause of `llm`.
    pub clause_start: bool,
    /// True for the first token of an item of a step: an action, a step
    /// option, or the `inputs` or `outputs` of a code step. The clauses that
    /// continue an action are not items of their own.
    pub item_start: bool,
}

/// Returns the tokens of `source` in order, or `None` when the grammar
/// rejects the file.
pub fn tokens(source: &str) -> Option<Vec<Token>> {
    let pairs = FlowParser::parse(Rule::file, source).ok()?;
    let mut out = Vec::new();
    for pair in pairs {
        walk(pair, source, &mut out, false);
    }
    Some(out)
}

fn walk(pair: Pair<'_, Rule>, source: &str, out: &mut Vec<Token>, clause_start: bool) {
    let rule = pair.as_rule();
    let span = Span::from(pair.as_span());
    let leaf_kind = match rule {
        Rule::string => Some(TokenKind::Str),
        Rule::triple_string => Some(TokenKind::Triple),
        Rule::json_object | Rule::json_array => Some(TokenKind::Block),
        _ => None,
    };
    if let Some(kind) = leaf_kind {
        push(out, kind, span, false, clause_start);
        return;
    }
    let children: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
    if children.is_empty() {
        if !span.is_empty() {
            push(out, TokenKind::Word, span, false, clause_start);
        }
        return;
    }
    let starts_clause = matches!(
        rule,
        Rule::payload
            | Rule::headers
            | Rule::llm_text
            | Rule::llm_list
            | Rule::llm_schema
            | Rule::llm_output
            | Rule::extract_fields
            | Rule::transcribe_text
            | Rule::transcribe_part
    );
    let mut pending_clause = clause_start || starts_clause;
    let mut cursor = span.start;
    for child in children {
        let child_span = Span::from(child.as_span());
        let before = out.len();
        gap(
            source,
            Span::new(cursor, child_span.start),
            rule,
            pending_clause,
            out,
        );
        if out.len() > before {
            pending_clause = false;
        }
        let first_of_child = out.len();
        let is_item = rule == Rule::step
            && matches!(
                child.as_rule(),
                Rule::http_action
                    | Rule::llm_action
                    | Rule::extract_action
                    | Rule::transcribe_action
                    | Rule::code_action
                    | Rule::code_inputs
                    | Rule::code_outputs
                    | Rule::option
            );
        walk(child, source, out, pending_clause);
        if is_item {
            if let Some(token) = out[first_of_child..]
                .iter_mut()
                .find(|token| token.kind != TokenKind::Comment)
            {
                token.item_start = true;
            }
        }
        pending_clause = false;
        cursor = child_span.end.max(cursor);
    }
    gap(source, Span::new(cursor, span.end), rule, false, out);
}

fn push(out: &mut Vec<Token>, kind: TokenKind, span: Span, step_brace: bool, clause_start: bool) {
    out.push(Token {
        kind,
        span,
        step_brace,
        clause_start,
        item_start: false,
    });
}

/// Splits the text between two leaves of a pair of rule `parent`.
fn gap(source: &str, span: Span, parent: Rule, clause_start: bool, out: &mut Vec<Token>) {
    let text = &source[span.start..span.end];
    let bytes = text.as_bytes();
    let step_brace = parent == Rule::step;
    let mut first = clause_start;
    let mut index = 0;
    while index < bytes.len() {
        let start = index;
        let byte = bytes[index];
        // A byte order mark at the start of the file is no token.
        if span.start + index == 0 && text.starts_with('\u{FEFF}') {
            index += '\u{FEFF}'.len_utf8();
            continue;
        }
        let kind = match byte {
            b' ' | b'\t' | b'\r' | b'\n' => {
                index += 1;
                continue;
            }
            b'#' => {
                index = text[index..].find('\n').map_or(text.len(), |end| index + end);
                TokenKind::Comment
            }
            b'{' => {
                index += 1;
                TokenKind::Open
            }
            b'}' => {
                index += 1;
                TokenKind::Close
            }
            b'-' if bytes.get(index + 1) == Some(&b'>') => {
                index += 2;
                TokenKind::Punct
            }
            // Comparison operators such as `==`, `!=` and `<=` stay one token.
            b'=' | b'!' | b'<' | b'>' => {
                while index < bytes.len() && matches!(bytes[index], b'=' | b'!' | b'<' | b'>') {
                    index += 1;
                }
                TokenKind::Punct
            }
            _ if byte.is_ascii_alphanumeric() || byte == b'_' => {
                while index < bytes.len() && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_') {
                    index += 1;
                }
                TokenKind::Word
            }
            _ => {
                index += text[index..].chars().next().map_or(1, char::len_utf8);
                TokenKind::Punct
            }
        };
        let is_brace = matches!(kind, TokenKind::Open | TokenKind::Close);
        push(
            out,
            kind,
            Span::new(span.start + start, span.start + index),
            step_brace && is_brace,
            first && kind != TokenKind::Comment,
        );
        if kind != TokenKind::Comment {
            first = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(source: &str) -> Vec<(TokenKind, &str)> {
        tokens(source)
            .expect("the source parses")
            .into_iter()
            .map(|token| (token.kind, &source[token.span.start..token.span.end]))
            .collect()
    }

    #[test]
    fn strings_blocks_and_comments_are_single_tokens() {
        let source = "step \"a # b\" { # note\n  http POST \"u\" json { \"x\": \"}\" }\n}\n";
        assert_eq!(
            texts(source),
            vec![
                (TokenKind::Word, "step"),
                (TokenKind::Str, "\"a # b\""),
                (TokenKind::Open, "{"),
                (TokenKind::Comment, "# note"),
                (TokenKind::Word, "http"),
                (TokenKind::Word, "POST"),
                (TokenKind::Str, "\"u\""),
                (TokenKind::Word, "json"),
                (TokenKind::Block, "{ \"x\": \"}\" }"),
                (TokenKind::Close, "}"),
            ]
        );
    }

    #[test]
    fn option_arguments_keep_their_quotes_and_brackets() {
        let source = "step \"a\" {\n  http GET \"u\"\n  save response.headers[\"X-Id\"] -> entity.id\n}\n";
        let words: Vec<&str> = texts(source).into_iter().map(|(_, text)| text).collect();
        assert!(words.contains(&"response.headers[\"X-Id\"]"), "{words:?}");
    }

    #[test]
    fn comparison_operators_are_one_token() {
        let source = "a == b != c -> d";
        let mut out = Vec::new();
        gap(source, Span::new(0, source.len()), Rule::file, false, &mut out);
        let texts: Vec<&str> = out
            .iter()
            .map(|token| &source[token.span.start..token.span.end])
            .collect();
        assert_eq!(texts, ["a", "==", "b", "!=", "c", "->", "d"]);
    }

    #[test]
    fn byte_order_mark_is_no_token() {
        let source = "\u{FEFF}let a = 1\n";
        assert_eq!(
            texts(source),
            vec![
                (TokenKind::Word, "let"),
                (TokenKind::Word, "a"),
                (TokenKind::Punct, "="),
                (TokenKind::Word, "1"),
            ]
        );
    }

    #[test]
    fn a_rejected_file_has_no_tokens() {
        assert!(tokens("step \"a\" {").is_none());
    }
}
