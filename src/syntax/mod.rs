//! Parsing: `.flow` source text to a syntax tree and syntax diagnostics.
//!
//! Parsing never fails. When the grammar rejects the file, each top-level
//! piece is parsed on its own, so that the tree keeps every piece that is
//! valid and every broken piece gets its own diagnostic.

pub mod ast;
mod errors;
mod lower;
pub mod nesting;
pub mod template;
pub mod tokens;

use pest::Parser as _;

use crate::diagnostic::{Diagnostic, LineIndex};
use ast::File;
use lower::Lowerer;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/flow.pest"]
struct FlowParser;

/// A syntax tree and the problems found while building it.
#[derive(Debug)]
pub struct Parsed {
    pub file: File,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses a whole `.flow` file. A file that nests blocks or parentheses
/// past the limits of [`nesting`] is not parsed: it gives an empty tree and
/// one diagnostic, so that no recursive pass ever walks it.
pub fn parse(source: &str) -> Parsed {
    if let Some(diagnostic) = nesting::check(source) {
        return Parsed {
            file: File {
                header: None,
                items: Vec::new(),
            },
            diagnostics: vec![diagnostic],
        };
    }
    let lines = LineIndex::new(source);
    let mut lowerer = Lowerer {
        diagnostics: Vec::new(),
        bare_names: Default::default(),
        lines: &lines,
        base: 0,
    };
    let mut file = File {
        header: None,
        items: Vec::new(),
    };

    match FlowParser::parse(Rule::file, source) {
        Ok(mut pairs) => {
            let pair = pairs.next().expect("parse: the file rule yields one pair");
            lowerer.file(pair, &mut file);
        }
        Err(_) => {
            for (start, chunk) in top_level_chunks(source) {
                lowerer.base = start;
                match FlowParser::parse(Rule::chunk, chunk) {
                    Ok(mut pairs) => {
                        let pair = pairs.next().expect("parse: the chunk rule yields one pair");
                        lowerer.file(pair, &mut file);
                    }
                    Err(error) => lowerer
                        .diagnostics
                        .push(errors::syntax_error(&error, source, start)),
                }
            }
        }
    }

    Parsed {
        file,
        diagnostics: lowerer.diagnostics,
    }
}

/// Splits the source before every line that starts, at column 1, with a
/// top-level keyword. Each piece keeps its offset in the source.
fn top_level_chunks(source: &str) -> Vec<(usize, &str)> {
    const STARTS: [&str; 11] = [
        "workflow", "let", "step", "http", "on", "notify", "provider", "if", "set", "clear", "stop",
    ];
    let mut starts = vec![0];
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let begins_item = STARTS.iter().any(|keyword| {
            line.strip_prefix(keyword)
                .is_some_and(|rest| rest.starts_with([' ', '\t']))
        });
        if begins_item && offset != 0 {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts.push(source.len());
    starts
        .windows(2)
        .map(|pair| (pair[0], &source[pair[0]..pair[1]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_mark_is_accepted() {
        let parsed = parse("\u{FEFF}let a = 1\n");
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        assert_eq!(parsed.file.items.len(), 1);
    }

    #[test]
    fn byte_order_mark_before_broken_piece() {
        let source = "\u{FEFF}let a = 1\nstep \"s\" {\n";
        let parsed = parse(source);
        assert_eq!(parsed.diagnostics.len(), 1, "{:?}", parsed.diagnostics);
        assert_eq!(
            parsed.diagnostics[0].span.map(|span| span.start),
            Some(source.len())
        );
        assert_eq!(parsed.file.items.len(), 1);
    }
}
