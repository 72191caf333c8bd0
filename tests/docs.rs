//! The examples of `docs/language.md`: every block fenced as ```` ```flow ````
//! is a whole workflow and passes `flowrun check` unchanged. An excerpt
//! that is not a whole workflow is fenced as ```` ```flow fragment ```` and a
//! syntax outline as ```` ```text ````, and neither is checked. Every fence
//! names its kind, so that no example goes unchecked by accident.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::cli::{flowrun, output, path_str, Workspace};

/// One fenced block of a Markdown file.
struct Block {
    /// The line of its opening fence, from 1.
    line: usize,
    /// The info string after the opening backticks, such as `flow fragment`.
    info: String,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match open.as_mut() {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some(Block {
                        line: index + 1,
                        info: info.trim().to_string(),
                        text: String::new(),
                    });
                }
            }
            Some(_) if line.trim_end() == "```" => blocks.extend(open.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a fence is never closed");
    blocks
}

fn language_blocks() -> Vec<Block> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/language.md");
    blocks(&std::fs::read_to_string(path).unwrap())
}

#[test]
fn language_fences_name_their_kind() {
    let unnamed: Vec<usize> = language_blocks()
        .iter()
        .filter(|block| block.info.is_empty())
        .map(|block| block.line)
        .collect();
    assert_eq!(
        unnamed,
        Vec::<usize>::new(),
        "fences of docs/language.md without an info string"
    );
}

#[test]
fn language_flow_examples_check_cleanly() {
    let examples: Vec<Block> = language_blocks()
        .into_iter()
        .filter(|block| block.info == "flow")
        .collect();
    assert!(
        examples.iter().any(|block| block.text.contains("code python")),
        "the code step example is not fenced as ```flow"
    );

    // Each file is named after the line of its fence, so the `file` of a
    // diagnostic points to the example.
    let workspace = Workspace::new();
    let files: Vec<PathBuf> = examples
        .iter()
        .map(|block| workspace.file(&format!("language-{}.flow", block.line), &block.text))
        .collect();
    let mut arguments = vec!["check", "--format", "json"];
    arguments.extend(files.iter().map(|file| path_str(file)));
    let (code, stdout, stderr) = output(&mut flowrun(&arguments));
    let diagnostics: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}{stderr}"));
    assert_eq!(diagnostics, json!([]));
    assert_eq!(code, 0, "{stderr}");
}
