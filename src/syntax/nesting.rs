//! Limits on nesting, enforced on the source text before the grammar runs.
//!
//! The parser, the lowering to the syntax tree, the checker, the formatter
//! and the language server all walk `if` blocks, parentheses and `not`
//! recursively, so a file that nests them thousands of levels deep would
//! exhaust the stack. One linear scan over the text finds the first place
//! past a limit; the file is then not parsed at all.

use crate::diagnostic::{Code, Diagnostic, Span};

/// The maximum depth of `if` and `else` blocks. A block inside the `else` of an
/// `else if` counts one level more than the `if` before it, as it does in the
/// syntax tree.
pub const MAX_BLOCK_DEPTH: usize = 64;

/// The maximum depth of parentheses, in conditions and in arithmetic, and a
/// run of `not`, counted together.
pub const MAX_GROUP_DEPTH: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Bracket {
    /// `{`, with the block depth of the items it holds.
    Brace(usize),
    Paren,
    Square,
}

/// Returns a diagnostic for the first block, parenthesis or `not` that
/// nests past its limit, or `None` when the file stays within the limits.
/// Strings, `"""` strings and comments are skipped; the rest of the text is
/// read as words and brackets, without judging its syntax.
pub(crate) fn check(source: &str) -> Option<Diagnostic> {
    let bytes = source.as_bytes();
    let mut stack: Vec<Bracket> = Vec::new();
    // The block depth of the items inside each open bracket of `stack`.
    let mut depths: Vec<usize> = Vec::new();
    // The block depth of the next `{`, and where its `if` or `else` starts.
    let mut pending: Option<(usize, Span)> = None;
    // The depth of the items of the block that just closed, while `else`
    // may still follow it.
    let mut closed_block: Option<usize> = None;
    let mut after_else: Option<usize> = None;
    let mut previous_word = "";
    // The number of `(` on the stack, and the length of the run of `not`
    // that ends at the current token.
    let mut parens = 0usize;
    let mut nots = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte.is_ascii_whitespace() {
            index += 1;
            continue;
        }
        if byte == b'#' {
            index = line_end(bytes, index);
            continue;
        }
        let start = index;
        if source[index..].starts_with("\"\"\"") {
            index = source[index + 3..]
                .find("\"\"\"")
                .map_or(bytes.len(), |end| index + 3 + end + 3);
        } else if byte == b'"' {
            index = string_end(bytes, index);
        } else if byte.is_ascii_alphabetic() || byte == b'_' {
            while index < bytes.len() && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_') {
                index += 1;
            }
        } else {
            index += source[index..].chars().next().map_or(1, char::len_utf8);
        }
        let token = &source[start..index];

        let block_depth = depths.last().copied().unwrap_or(0);
        let else_base = after_else.take();
        let follows_block = closed_block.take();

        match token {
            "if" if previous_word != "only" => {
                let depth = else_base.unwrap_or(block_depth) + 1;
                pending = Some((depth, Span::new(start, index)));
            }
            "else" => {
                let depth = follows_block.unwrap_or(block_depth + 1);
                after_else = Some(depth);
                pending = Some((depth, Span::new(start, index)));
            }
            "not" => {
                nots += 1;
                if parens + nots > MAX_GROUP_DEPTH {
                    return Some(group_error(Span::new(start, index), "`not`"));
                }
            }
            "{" => {
                let depth = match pending.take() {
                    Some((depth, keyword)) => {
                        if depth > MAX_BLOCK_DEPTH {
                            return Some(block_error(keyword));
                        }
                        depth
                    }
                    None => block_depth,
                };
                stack.push(Bracket::Brace(depth));
                depths.push(depth);
            }
            "}" => {
                // Brackets left open inside the braces close with them.
                while let Some(bracket) = stack.pop() {
                    depths.pop();
                    match bracket {
                        Bracket::Brace(depth) => {
                            closed_block = Some(depth);
                            break;
                        }
                        Bracket::Paren => parens -= 1,
                        Bracket::Square => {}
                    }
                }
            }
            "(" => {
                stack.push(Bracket::Paren);
                depths.push(block_depth);
                parens += 1;
                if parens + nots > MAX_GROUP_DEPTH {
                    return Some(group_error(Span::new(start, index), "parenthesis"));
                }
            }
            ")" if stack.last() == Some(&Bracket::Paren) => {
                stack.pop();
                depths.pop();
                parens -= 1;
            }
            "[" => {
                stack.push(Bracket::Square);
                depths.push(block_depth);
            }
            "]" if stack.last() == Some(&Bracket::Square) => {
                stack.pop();
                depths.pop();
            }
            _ => {}
        }

        if token != "not" {
            nots = 0;
        }
        previous_word = token;
    }
    None
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|byte| *byte == b'\n')
        .map_or(bytes.len(), |end| from + end)
}

/// Finds the end of a `"` string: after its closing quote, or at the end of its
/// line when it is not closed there.
fn string_end(bytes: &[u8], from: usize) -> usize {
    let mut index = from + 1;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'"' => return index + 1,
            b'\n' => return index,
            _ => index += 1,
        }
    }
    bytes.len()
}

fn block_error(keyword: Span) -> Diagnostic {
    Diagnostic::error(
        Code::SyntaxError,
        format!("`if` and `else` blocks nest more than {MAX_BLOCK_DEPTH} levels deep"),
    )
    .with_label(
        keyword,
        format!("this block is nested {} levels deep", MAX_BLOCK_DEPTH + 1),
    )
    .with_help(format!(
        "join conditions with `and`, or move the inner blocks to steps of their own; blocks may nest \
         at most {MAX_BLOCK_DEPTH} levels, and each `else if` counts one level more than the `if` before it"
    ))
}

fn group_error(span: Span, what: &str) -> Diagnostic {
    Diagnostic::error(
        Code::SyntaxError,
        format!("parentheses and `not` nest more than {MAX_GROUP_DEPTH} levels deep"),
    )
    .with_label(
        span,
        format!("this {what} is nested {} levels deep", MAX_GROUP_DEPTH + 1),
    )
    .with_help(format!(
        "remove parentheses around single values, write `not` once, or split the expression with \
         `let`; parentheses and `not` may nest at most {MAX_GROUP_DEPTH} levels"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_ifs(depth: usize) -> String {
        format!(
            "{}set entity.x = 1\n{}",
            "if <<entity.a>> > 1 {\n".repeat(depth),
            "}\n".repeat(depth)
        )
    }

    #[test]
    fn blocks_at_limit_pass() {
        assert!(check(&nested_ifs(MAX_BLOCK_DEPTH)).is_none());
    }

    #[test]
    fn block_past_limit_is_reported() {
        let source = nested_ifs(MAX_BLOCK_DEPTH + 1);
        let diagnostic = check(&source).expect("a diagnostic");
        assert_eq!(
            diagnostic.message,
            "`if` and `else` blocks nest more than 64 levels deep"
        );
        let start = "if <<entity.a>> > 1 {\n".len() * MAX_BLOCK_DEPTH;
        assert_eq!(diagnostic.span, Some(Span::new(start, start + 2)));
    }

    #[test]
    fn else_if_counts_one_level_more() {
        let chain = |links: usize| {
            format!(
                "if <<entity.a>> > 0 {{\n}}{}\n",
                " else if <<entity.a>> > 1 {\n}".repeat(links)
            )
        };
        assert!(check(&chain(MAX_BLOCK_DEPTH - 1)).is_none());
        let source = chain(MAX_BLOCK_DEPTH);
        let diagnostic = check(&source).expect("a diagnostic");
        let start = source.rfind("if").unwrap();
        assert_eq!(diagnostic.span, Some(Span::new(start, start + 2)));
    }

    #[test]
    fn else_blocks_share_the_depth_of_their_if() {
        let source = format!(
            "{}set entity.x = 1\n{}",
            "if <<entity.a>> > 1 {\n".repeat(MAX_BLOCK_DEPTH),
            "} else {\n}\n".repeat(MAX_BLOCK_DEPTH)
        );
        assert!(check(&source).is_none());
    }

    #[test]
    fn strings_comments_and_json_do_not_count() {
        let source = format!(
            "# if {{ {}\nlet a = \"if {{ {}\"\nstep \"s\" {{\n  http POST \"http://127.0.0.1:9/\" json {}{}\n}}\nset entity.x = 1 only if blank\n",
            "if {".repeat(100),
            "(".repeat(100),
            "{\"a\": ".repeat(100),
            "}".repeat(100)
        );
        assert!(check(&source).is_none());
    }

    #[test]
    fn non_ascii_text_is_scanned() {
        let source = "\u{FEFF}let a = 1 é ü 😀 \"é\\\u{e9}\"\nif é {\n}\n";
        assert!(check(source).is_none());
    }

    #[test]
    fn parentheses_and_not_share_a_limit() {
        let group = |depth: usize| format!("set entity.x = {}1{}\n", "(".repeat(depth), ")".repeat(depth));
        assert!(check(&group(MAX_GROUP_DEPTH)).is_none());
        let diagnostic = check(&group(MAX_GROUP_DEPTH + 1)).expect("a diagnostic");
        assert_eq!(
            diagnostic.message,
            "parentheses and `not` nest more than 64 levels deep"
        );
        let start = "set entity.x = ".len() + MAX_GROUP_DEPTH;
        assert_eq!(diagnostic.span, Some(Span::new(start, start + 1)));

        let nots = |depth: usize| format!("if (({}<<entity.a>> > 1)) {{\n}}\n", "not ".repeat(depth));
        assert!(check(&nots(MAX_GROUP_DEPTH - 2)).is_none());
        let source = nots(MAX_GROUP_DEPTH - 1);
        let diagnostic = check(&source).expect("a diagnostic");
        let start = source.rfind("not").unwrap();
        assert_eq!(diagnostic.span, Some(Span::new(start, start + 3)));
    }
}
