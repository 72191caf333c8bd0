//! `flowrun check --format sarif` and `--format github`: the documents and
//! lines that code scanning tools and GitHub Actions read.

mod support;

use serde_json::{json, Value};
use support::cli::{flowrun, Workspace};

const WORKFLOW: &str = "step \"Send\" {\n  http POTS \"http://127.0.0.1:1/claims\"\n}\nstep \"Send\" {\n  http GET \"http://127.0.0.1:1/a,b\" json { \"a\": 1 }\n}\n";

#[test]
fn sarif_lists_each_problem_with_rule_region_and_related_location() {
    let workspace = Workspace::new();
    let path = workspace.file("two problems.flow", WORKFLOW);
    let output = flowrun(&["check", "--format", "sarif"])
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(2));
    let log: Value = serde_json::from_slice(&output.stdout).expect("SARIF is JSON");
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "flowrun");
    let results = run["results"].as_array().expect("results");
    let codes: Vec<&str> = results
        .iter()
        .map(|result| result["ruleId"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "flow::check::unknown_method",
            "flow::check::duplicate_step_name",
            "flow::check::payload_on_get"
        ]
    );
    let method = &results[0];
    assert_eq!(method["level"], "error");
    assert_eq!(
        method["message"]["text"],
        "unknown HTTP method `POTS`\nhelp: did you mean `POST`?"
    );
    let location = &method["locations"][0]["physicalLocation"];
    assert!(location["artifactLocation"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("two%20problems.flow"));
    assert_eq!(
        location["region"],
        json!({"startLine": 2, "startColumn": 8, "endLine": 2, "endColumn": 12})
    );
    let duplicate = &results[1];
    assert_eq!(
        duplicate["relatedLocations"][0]["physicalLocation"]["region"],
        json!({"startLine": 1, "startColumn": 6, "endLine": 1, "endColumn": 12})
    );
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    assert_eq!(
        rules[duplicate["ruleIndex"].as_u64().unwrap() as usize]["id"],
        "flow::check::duplicate_step_name"
    );
    assert!(rules[0]["helpUri"]
        .as_str()
        .unwrap()
        .ends_with("docs/diagnostics.md#flowcheckunknown_method"));
}

#[test]
fn github_format_writes_one_escaped_annotation_per_problem() {
    let workspace = Workspace::new();
    let path = workspace.file("a,b.flow", WORKFLOW);
    let output = flowrun(&["check", "--format", "github"])
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let file = path.display().to_string().replace(':', "%3A").replace(',', "%2C");
    assert_eq!(
        lines[0],
        format!(
            "::error file={file},line=2,col=8,endLine=2,endColumn=12,title=flow%3A%3Acheck%3A%3Aunknown_method::unknown HTTP method `POTS`%0Ahelp: did you mean `POST`?"
        )
    );
    assert!(
        lines[2].starts_with(&format!("::error file={file},line=5,")),
        "{}",
        lines[2]
    );
}

#[test]
fn github_format_prints_nothing_for_a_clean_file() {
    let workspace = Workspace::new();
    let path = workspace.file("clean.flow", "http GET \"http://127.0.0.1:1/health\"\n");
    let output = flowrun(&["check", "--format", "github"])
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty());
}

#[cfg(unix)]
#[test]
fn sarif_uris_and_column_kind() {
    let workspace = Workspace::new();
    // `😀` is one code point but two UTF-16 units, so `POTS` starts at code
    // point 18 and at UTF-16 unit 19.
    let workflow = "step \"é😀\" { http POTS \"http://127.0.0.1:1/\" }\n";
    workspace.file("C:x.flow", workflow);
    let hashed = workspace.file("a #1?.flow", workflow);
    let folder = workspace.dir.path().to_str().expect("a UTF-8 path");
    assert!(
        folder
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"/._-".contains(&byte)),
        "the expected URI below assumes {folder} needs no encoding"
    );

    let output = flowrun(&["check", "--format", "sarif", "C:x.flow", "a #1?.flow"])
        .arg(&hashed)
        .current_dir(workspace.dir.path())
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(2));

    let log: Value = serde_json::from_slice(&output.stdout).expect("SARIF is JSON");
    let run = &log["runs"][0];
    assert_eq!(run["columnKind"], "unicodeCodePoints");

    let results = run["results"].as_array().expect("results");
    let uris: Vec<&str> = results
        .iter()
        .map(|result| {
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        uris,
        [
            "C%3Ax.flow".to_string(),
            "a%20%231%3F.flow".to_string(),
            format!("file://{folder}/a%20%231%3F.flow"),
        ]
    );

    for result in results {
        assert_eq!(
            result["locations"][0]["physicalLocation"]["region"],
            json!({"startLine": 1, "startColumn": 18, "endLine": 1, "endColumn": 22})
        );
    }
}

#[test]
fn json_positions_skip_a_byte_order_mark() {
    let workspace = Workspace::new();
    let path = workspace.file(
        "bom.flow",
        "\u{FEFF}step \"s\" { http POTS \"http://127.0.0.1:1/\" }\n",
    );
    let output = flowrun(&["check", "--format", "json"])
        .arg(&path)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(2));

    let entries: Value = serde_json::from_slice(&output.stdout).expect("the output is JSON");
    let entry = &entries[0];
    assert_eq!(entry["code"], "flow::check::unknown_method");
    assert_eq!(entry["span"], json!({"start": 16, "end": 20}));
    assert_eq!(
        entry["range"],
        json!({"start": {"line": 1, "column": 17}, "end": {"line": 1, "column": 21}})
    );
}
