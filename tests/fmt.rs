//! `flowrun fmt`: every sample and every parsing fixture formats to a fixed
//! point with the same tree and comments, and the command line rewrites,
//! checks and refuses files as documented.

mod support;

use std::path::{Path, PathBuf};

use flowrun::format::{format, tree_key};
use support::cli::flowrun;

/// Every `.flow` file under `samples/` and `tests/diagnostics/`.
fn workflows() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for folder in ["samples", "tests/diagnostics"] {
        for entry in std::fs::read_dir(root.join(folder)).expect("the folder is readable") {
            let path = entry.expect("the entry is readable").path();
            if path.extension().is_some_and(|extension| extension == "flow") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn comments(text: &str) -> Vec<String> {
    let tokens = flowrun::syntax::tokens::tokens(text).expect("the text parses");
    tokens
        .iter()
        .filter(|token| token.kind == flowrun::syntax::tokens::TokenKind::Comment)
        .map(|token| text[token.span.start..token.span.end].trim_end().to_string())
        .collect()
}

#[test]
fn formatting_twice_changes_nothing_and_keeps_tree_and_comments() {
    let mut formatted_files = 0;
    for path in workflows() {
        let text = std::fs::read_to_string(&path).expect("the workflow is readable");
        let Ok(once) = format(&text) else {
            // Files with syntax errors are refused; the CLI test covers it.
            assert!(
                flowrun::syntax::parse(&text)
                    .diagnostics
                    .iter()
                    .any(|d| d.is_error()),
                "{} was refused without a syntax error",
                path.display()
            );
            continue;
        };
        let twice = format(&once).expect("formatted text parses");
        assert_eq!(twice, once, "{} is not a fixed point", path.display());
        assert_eq!(
            tree_key(&once),
            tree_key(&text),
            "{} changed its tree",
            path.display()
        );
        assert_eq!(
            comments(&once),
            comments(&text),
            "{} changed its comments",
            path.display()
        );
        formatted_files += 1;
    }
    assert!(formatted_files >= 30, "only {formatted_files} files formatted");
}

#[test]
fn samples_are_in_the_canonical_layout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let samples: Vec<PathBuf> = workflows()
        .into_iter()
        .filter(|path| path.starts_with(root.join("samples")))
        .collect();
    let mut command = flowrun(&[]);
    command.arg("fmt").arg("--check").args(&samples);
    let output = command.output().expect("flowrun runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn fmt_rewrites_a_file_and_check_reports_it() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("messy.flow");
    let messy = "step   \"s\"{\nhttp POST \"http://127.0.0.1:1/x\" json {\n\"a\": 1\n}   # the body\n}\n";
    std::fs::write(&path, messy).expect("the file is written");

    let output = flowrun(&[])
        .arg("fmt")
        .arg("--check")
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("messy.flow: not formatted"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).expect("readable"), messy);

    let output = flowrun(&[]).arg("fmt").arg(&path).output().expect("flowrun runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("readable"),
        "step \"s\" {\n  http POST \"http://127.0.0.1:1/x\" json {\n  \"a\": 1\n  } # the body\n}\n"
    );

    let output = flowrun(&[])
        .arg("fmt")
        .arg("--check")
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn fmt_refuses_a_file_with_a_syntax_error() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("broken.flow");
    let broken = "step \"s\" {\n  http GET \"http://127.0.0.1:1/\n}\n";
    std::fs::write(&path, broken).expect("the file is written");
    let output = flowrun(&[]).arg("fmt").arg(&path).output().expect("flowrun runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("flow::syntax::unexpected"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).expect("readable"), broken);
}

#[test]
fn fmt_keeps_crlf_line_breaks_on_every_line() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("windows.flow");
    let messy = concat!(
        "workflow \"W\"\r\n",
        "# top   \r\n",
        "step \"s\" {\r\n",
        "\thttp POST \"http://127.0.0.1:1/x\" json {\r\n",
        "\t  \"a\": 1\r\n",
        "\t}\r\n",
        "\tsave response.status -> entity.s # saved\r\n",
        "}\r\n",
        "step \"t\" {\r\n",
        "    llm model \"m\" prompt \"\"\"\r\n",
        "      Summarise <<entity.s>>\n",
        "      \"\"\" -> entity.summary\r\n",
        "}\r\n",
    );
    std::fs::write(&path, messy).expect("the file is written");

    let output = flowrun(&[]).arg("fmt").arg(&path).output().expect("flowrun runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let formatted = std::fs::read_to_string(&path).expect("readable");
    assert_eq!(
        formatted,
        concat!(
            "workflow \"W\"\r\n",
            "# top\r\n",
            "step \"s\" {\r\n",
            "  http POST \"http://127.0.0.1:1/x\" json {\r\n",
            "    \"a\": 1\r\n",
            "  }\r\n",
            "  save response.status -> entity.s # saved\r\n",
            "}\r\n",
            "step \"t\" {\r\n",
            "  llm model \"m\" prompt \"\"\"\r\n",
            "      Summarise <<entity.s>>\r\n",
            "      \"\"\" -> entity.summary\r\n",
            "}\r\n",
        )
    );
    assert_eq!(tree_key(&formatted), tree_key(messy));
    assert_eq!(format(&formatted).expect("formatted text parses"), formatted);

    let output = flowrun(&[])
        .arg("fmt")
        .arg("--check")
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn fmt_keeps_a_byte_order_mark() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("bom.flow");
    let messy = "\u{FEFF}workflow   \"W\"\nstep \"s\" {\nhttp GET \"http://127.0.0.1:1/\"\n}\n";
    let canonical = "\u{FEFF}workflow \"W\"\nstep \"s\" {\n  http GET \"http://127.0.0.1:1/\"\n}\n";
    std::fs::write(&path, messy).expect("the file is written");

    let output = flowrun(&[])
        .arg("fmt")
        .arg("--check")
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(1));

    let output = flowrun(&[]).arg("fmt").arg(&path).output().expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&path).expect("readable"), canonical);

    let output = flowrun(&[])
        .arg("fmt")
        .arg("--check")
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0));

    let output = flowrun(&["fmt", "-"])
        .stdin(std::fs::File::open(&path).expect("readable"))
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), canonical);
}

#[test]
fn fmt_bom_error_columns_match_check() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("broken.flow");
    std::fs::write(&path, "\u{FEFF}step \"s\" { http GET \"http://127.0.0.1:1/ }\n")
        .expect("the file is written");
    let output = flowrun(&[]).arg("fmt").arg(&path).output().expect("flowrun runs");
    assert_eq!(output.status.code(), Some(2));
    let fmt_stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let output = flowrun(&[])
        .arg("check")
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(2));
    let check_stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(check_stderr.contains("broken.flow:1:21]"), "{check_stderr}");
    assert_eq!(fmt_stderr, check_stderr);
}

#[test]
fn fmt_check_stdin_writes_nothing_to_stdout() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let messy = folder.path().join("messy.flow");
    std::fs::write(&messy, "step \"a\" {\nhttp GET \"http://127.0.0.1:9/\"\n}\n").expect("written");
    let canonical = folder.path().join("canonical.flow");
    std::fs::write(
        &canonical,
        "step \"a\" {\n  http GET \"http://127.0.0.1:9/\"\n}\n",
    )
    .expect("written");

    let output = flowrun(&["fmt", "--check", "-"])
        .stdin(std::fs::File::open(&messy).expect("readable"))
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "<stdin>: not formatted; run `flowrun fmt -` to format it\n"
    );

    let output = flowrun(&["fmt", "--check", "-"])
        .stdin(std::fs::File::open(&canonical).expect("readable"))
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn fmt_writes_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt as _;
    let folder = tempfile::tempdir().expect("a temporary folder");
    let target = folder.path().join("real.flow");
    std::fs::write(&target, "step \"a\" {\nhttp GET \"http://127.0.0.1:9/\"\n}\n").expect("written");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let link = folder.path().join("link.flow");
    std::os::unix::fs::symlink("real.flow", &link).expect("a symlink");

    let output = flowrun(&[]).arg("fmt").arg(&link).output().expect("flowrun runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata = std::fs::symlink_metadata(&link).expect("the link exists");
    assert!(metadata.file_type().is_symlink(), "the link is kept");
    assert_eq!(std::fs::read_link(&link).expect("a link"), Path::new("real.flow"));
    assert_eq!(
        std::fs::read_to_string(&target).expect("readable"),
        "step \"a\" {\n  http GET \"http://127.0.0.1:9/\"\n}\n"
    );
    let mode = std::fs::metadata(&target)
        .expect("the target exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    let names: Vec<String> = std::fs::read_dir(folder.path())
        .expect("readable")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
}
