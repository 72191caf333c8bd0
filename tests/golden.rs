//! Golden tests: every `.flow` file under `tests/diagnostics/` is checked and
//! its report, rendered at width 80 without colour, is compared with a
//! snapshot under `tests/snapshots/`.

use std::collections::BTreeSet;
use std::path::Path;

use flowrun::cli::check_source;
use flowrun::cli::output::{render_human, Source};
use flowrun::diagnostic::Code;

fn render_fixture(path: &Path) -> (String, BTreeSet<&'static str>) {
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    let checked = check_source(&text, path);
    let file_name = path.file_name().unwrap().to_string_lossy();
    let name = format!("tests/diagnostics/{file_name}");
    let source = Source {
        name: &name,
        text: &text,
    };
    let rendered = render_human(&checked.diagnostics, Some(&source), 80, false);
    let codes = checked
        .diagnostics
        .iter()
        .map(|diagnostic| diagnostic.code.as_str())
        .collect();
    (rendered, codes)
}

#[test]
fn diagnostics_match_snapshots() {
    insta::glob!("diagnostics/*.flow", |path| {
        let (rendered, codes) = render_fixture(path);
        assert!(!codes.is_empty(), "{} reports nothing", path.display());
        insta::assert_snapshot!(rendered);
    });
}

#[test]
fn every_syntax_and_check_code_has_a_fixture() {
    let mut covered = BTreeSet::new();
    let pattern = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    for entry in std::fs::read_dir(pattern).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "flow") {
            covered.extend(render_fixture(&path).1);
        }
    }
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|code| code.as_str())
        .filter(|code| code.starts_with("flow::syntax::") || code.starts_with("flow::check::"))
        .filter(|code| !covered.contains(code))
        .collect();
    assert_eq!(missing, Vec::<&str>::new());
}

#[test]
fn every_code_has_a_documented_section() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnostics.md")).unwrap();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|code| code.as_str())
        .filter(|code| !docs.contains(&format!("## `{code}`")))
        .collect();
    assert_eq!(missing, Vec::<&str>::new());
}
