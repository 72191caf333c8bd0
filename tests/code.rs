//! `code python` steps: a real `python3` subprocess, its inputs and
//! outputs, the log limits, the timeout, the memory limit, exceptions, a
//! missing interpreter and the scrubbed environment.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use flowrun::cli::check_source;
use flowrun::diagnostic::Code;
use flowrun::run::http::Http;
use flowrun::run::report::{Outcome, Report};
use flowrun::run::{execute, prepare, Inputs, Options};
use flowrun::store::sqlite::SqliteStore;
use flowrun::store::Store;
use serde_json::{json, Value};
use support::cli::{flowrun, output, path_str, Workspace};

async fn run(source: &str, entity: Value) -> Report {
    let checked = check_source(source, Path::new("test.flow"));
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    let inputs = Inputs {
        entity,
        vars: Vec::new(),
        secrets: HashMap::new(),
        execution_id: Some("exec-1".to_string()),
        env: HashMap::new(),
    };
    let execution = prepare(&checked.program, source, inputs, false).expect("inputs are valid");
    let http = Http::new().unwrap();
    execute(
        &checked.program,
        source,
        execution,
        &http,
        &Options::default(),
        None,
    )
    .await
}

fn code_step(script: &str, extra: &str) -> String {
    let indented: String = script.lines().map(|line| format!("    {line}\n")).collect();
    format!("step \"Script\" {{\n  code python \"\"\"\n{indented}  \"\"\"\n{extra}}}\n")
}

#[tokio::test]
async fn risk_example_computes_from_a_variable() {
    let source = r#"
let score: number = <<entity.bureau_score>> or <<entity.manual_score>> or 0

step "Compute risk" {
  code python """
    outputs.risk = "high" if inputs.score < 600 else "low"
    outputs.log("score was %s" % inputs.score)
  """
  inputs { score: <<vars.score>> }
  outputs { risk -> entity.risk }
}
"#;
    let report = run(source, json!({"manual_score": "580"})).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity["risk"], "high");
    assert_eq!(report.steps[1].log, ["score was 580"]);
    let report = run(source, json!({"bureau_score": 720})).await;
    assert_eq!(report.entity["risk"], "low");
}

#[tokio::test]
async fn values_cross_the_boundary_as_json() {
    let source = r#"
let label = "claims"

step "Shape" {
  code python """
    outputs.total = inputs.a + inputs.b
    outputs.items = [item.upper() for item in inputs.items]
    outputs.nested = {"id": inputs.record["id"], "none": None, "flag": not inputs.flag}
    outputs.text = inputs.text + "!"
    outputs.quote = inputs.quote
  """
  inputs {
    a: <<entity.a>>, b: 2.5
    items: <<entity.items>>
    record: <<entity.record>>
    flag: true
    text: "<<vars.label>> for <<entity.record.id>>"
    quote: <<entity.quote>>
  }
  outputs {
    total -> entity.total
    items -> entity.items
    nested -> entity.result.nested
    text -> vars.label
    quote -> entity.quote_back
  }
}
set entity.label = <<vars.label>>
"#;
    let entity = json!({
        "a": 1,
        "items": ["x", "y"],
        "record": {"id": "C-1"},
        "quote": "it's \"quoted\" \\ and 😀 $(rm -rf /) `x`"
    });
    let report = run(source, entity).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity["total"], json!(3.5));
    assert_eq!(report.entity["items"], json!(["X", "Y"]));
    assert_eq!(
        report.entity["result"],
        json!({"nested": {"id": "C-1", "none": null, "flag": false}})
    );
    assert_eq!(report.entity["label"], "claims for C-1!");
    assert_eq!(
        report.entity["quote_back"],
        "it's \"quoted\" \\ and 😀 $(rm -rf /) `x`"
    );
}

#[tokio::test]
async fn an_output_the_script_did_not_set_fails_the_step() {
    let source = code_step("outputs.a = 1", "  outputs { b -> entity.b }\n");
    let report = run(&source, json!({})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::CodeFailed);
    assert_eq!(failure.message, "the Python script set no output `b`");
    assert_eq!(report.entity, json!({}));
}

#[tokio::test]
async fn log_limits_cut_messages_and_runs() {
    let source = code_step(
        "outputs.log(\"a\" * 9000)\noutputs.log(\"b\" * 8192)\noutputs.log(\"é\" * 5000)",
        "",
    );
    let report = run(&source, json!({})).await;
    let log = &report.steps[0].log;
    assert_eq!(log.len(), 3);
    assert_eq!(log[0], "a".repeat(8192));
    assert_eq!(log[1], "b".repeat(8192));
    // 4096 two-byte characters fill 8192 bytes exactly.
    assert_eq!(log[2], "é".repeat(4096));

    let source = code_step("for i in range(20):\n    outputs.log(str(i % 10) * 8192)", "");
    let report = run(&source, json!({})).await;
    let log = &report.steps[0].log;
    let total: usize = log.iter().map(String::len).sum();
    assert_eq!(total, 100 * 1024);
    assert_eq!(log.len(), 13);
    assert_eq!(log[12], "2".repeat(100 * 1024 - 12 * 8192));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["steps"][0]["log"].as_array().unwrap().len(), 13);
}

#[tokio::test]
async fn a_script_past_its_timeout_is_killed() {
    let source = code_step("while True:\n    pass", "  timeout 1s\n");
    let started = Instant::now();
    let report = run(&source, json!({})).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::CodeTimeout);
    assert_eq!(
        failure.message,
        "the Python script ran longer than 1s and was stopped"
    );
    assert_eq!(report.outcome, Outcome::Paused);
}

#[tokio::test]
async fn a_child_process_of_the_script_is_killed_with_it() {
    let source = code_step(
        "import subprocess, sys\nchild = subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(60)\"])\noutputs.pid = child.pid",
        "  outputs { pid -> entity.pid }\n",
    );
    let report = run(&source, json!({})).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    let pid = report.entity["pid"].as_u64().unwrap();
    // The group was killed; the child is gone once its parent reaped it or
    // it became a zombie of init, which reaps it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = status.split(") ").nth(1).and_then(|rest| rest.chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            break;
        }
        assert!(Instant::now() < deadline, "process {pid} still runs: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn the_memory_limit_stops_large_allocations() {
    let source = code_step(
        "data = bytearray(512 * 1024 * 1024)\noutputs.size = len(data)",
        "  memory 128MB\n  outputs { size -> entity.size }\n",
    );
    let report = run(&source, json!({})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::CodeFailed);
    assert!(
        failure
            .message
            .starts_with("the Python script raised MemoryError"),
        "{}",
        failure.message
    );
    assert_eq!(report.entity, json!({}));

    // The same allocation fits under the default limit of 1 GB.
    let source = code_step(
        "data = bytearray(512 * 1024 * 1024)\noutputs.size = len(data)",
        "  outputs { size -> entity.size }\n",
    );
    let report = run(&source, json!({})).await;
    assert_eq!(report.entity["size"], json!(536870912));
}

#[tokio::test]
async fn an_exception_fails_the_step_with_its_traceback() {
    let source = code_step(
        "def check(score):\n    raise ValueError(\"bad score %s\" % score)\ncheck(inputs.score)",
        "  inputs { score: 12 }\n",
    );
    let report = run(&source, json!({})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::CodeFailed);
    assert_eq!(
        failure.message,
        "the Python script raised ValueError: bad score 12\nTraceback (most recent call last):\n  File \"<script>\", line 3, in <module>\n  File \"<script>\", line 2, in check\nValueError: bad score 12"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["steps"][0]["error"], failure.message.as_str());
}

#[test]
fn the_traceback_reaches_the_execution_history() {
    let workspace = Workspace::new();
    let flow = workspace.file("code.flow", code_step("raise KeyError(\"policy\")", ""));
    let store_path = workspace.dir.path().join("store.db");
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--store",
        path_str(&store_path),
        "--execution-id",
        "exec-7",
    ]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("flow::run::code_failed"), "{stderr}");
    let store = SqliteStore::open(&store_path).unwrap();
    let steps = store.steps("exec-7").unwrap();
    assert_eq!(steps[0].code.as_deref(), Some("flow::run::code_failed"));
    assert_eq!(
        steps[0].error.as_deref(),
        Some("the Python script raised KeyError: 'policy'\nTraceback (most recent call last):\n  File \"<script>\", line 1, in <module>\nKeyError: 'policy'")
    );
}

#[tokio::test]
async fn a_missing_interpreter_is_a_clear_error() {
    let source = code_step("outputs.x = 1", "  interpreter \"/nonexistent/bin/python3\"\n");
    let report = run(&source, json!({})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::InterpreterMissing);
    assert_eq!(
        failure.message,
        "cannot run the code step: `/nonexistent/bin/python3` is not installed or not on PATH"
    );
}

#[test]
fn no_python3_on_path_is_a_clear_error() {
    let workspace = Workspace::new();
    let empty = workspace.dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let flow = workspace.file(
        "code.flow",
        code_step("outputs.x = 1", "  outputs { x -> entity.x }\n"),
    );
    let (code, stdout, stderr) = output(flowrun(&["run", path_str(&flow), "--no-store"]).env("PATH", &empty));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(stdout.trim(), "{}");
    assert!(stderr.contains("flow::run::interpreter_missing"), "{stderr}");
    assert!(
        stderr.contains("cannot run the code step: `python3` is not installed or not on PATH"),
        "{stderr}"
    );
}

#[test]
fn no_secret_reaches_the_script_environment() {
    let workspace = Workspace::new();
    let source = code_step(
        "import os\noutputs.env = dict(os.environ)\noutputs.length = len(inputs.token)",
        "  inputs { token: <<secret.api_token>> }\n  outputs {\n    env -> entity.env\n    length -> entity.length\n  }\n",
    );
    let flow = workspace.file("code.flow", source);
    let (code, stdout, stderr) = output(
        flowrun(&["run", path_str(&flow), "--no-store"])
            .env("FLOWRUN_SECRET_api_token", "tok-secret-4711")
            .env("OPENAI_API_KEY", "sk-other-secret-99")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-42"),
    );
    assert_eq!(code, 0, "{stderr}");
    let entity: Value = serde_json::from_str(&stdout).unwrap();
    // A secret passed as an input arrives; nothing else does.
    assert_eq!(entity["length"], json!(15));
    let env = entity["env"].as_object().unwrap();
    assert_eq!(env["PYTHONIOENCODING"], "utf-8");
    // `python3` may be a launcher, such as a pyenv shim, that adds its own
    // variables; none of flowrun's environment passes.
    for name in [
        "FLOWRUN_SECRET_api_token",
        "OPENAI_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "HOME",
        "COLUMNS",
    ] {
        assert!(!env.contains_key(name), "{name} reached the script: {env:?}");
    }
    assert!(!stdout.contains("tok-secret-4711"));
    assert!(!stdout.contains("sk-other-secret-99"));
    assert!(!stdout.contains("aws-secret-42"));
}

#[tokio::test]
async fn outputs_past_16_mb_fail_at_once() {
    let source = code_step(
        "outputs.h = \"y\" * inputs.n",
        "  inputs { n: 17000000 }\n  outputs { h -> entity.h }\n",
    );
    let report = run(&source, json!({})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::CodeFailed);
    assert_eq!(
        failure.message,
        "the Python script wrote more than 16 MB of outputs"
    );
    assert_eq!(report.entity, json!({}));
}

#[tokio::test]
async fn setsid_process_dies_with_its_step() {
    let source = code_step(
        "import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(600)\n    os._exit(0)\noutputs.pid = pid",
        "  outputs { pid -> entity.pid }\n",
    );
    let report = run(&source, json!({})).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    let pid = report.entity["pid"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = status.split(") ").nth(1).and_then(|rest| rest.chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            break;
        }
        assert!(Instant::now() < deadline, "process {pid} still runs: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn sys_exit_0_succeeds_and_another_code_fails() {
    let source = code_step(
        "import sys\noutputs.n = 7\nsys.exit(0)",
        "  outputs { n -> entity.n }\n",
    );
    let report = run(&source, json!({})).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity, json!({"n": 7}));

    let source = code_step(
        "import sys\noutputs.n = 7\nsys.exit(3)",
        "  outputs { n -> entity.n }\n",
    );
    let report = run(&source, json!({})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::CodeFailed);
    assert_eq!(failure.message, "the Python script called `sys.exit` with code 3");
    assert_eq!(report.entity, json!({}));
}

#[tokio::test]
async fn an_output_json_cannot_hold_is_named() {
    let source = code_step(
        "outputs.good = 1\noutputs.bad = {1, 2}",
        "  outputs {\n    good -> entity.good\n    bad -> entity.bad\n  }\n",
    );
    let report = run(&source, json!({})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::CodeFailed);
    assert_eq!(
        failure.message,
        "the Python script set output `bad` to a value JSON cannot hold: Object of type set is not JSON serializable"
    );
    assert_eq!(report.entity, json!({}));

    // An output the step does not write is not sent back.
    let source = code_step(
        "outputs.good = 1\noutputs.extra = b\"x\"",
        "  outputs { good -> entity.good }\n",
    );
    let report = run(&source, json!({})).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity, json!({"good": 1}));
}

#[tokio::test]
async fn the_smallest_memory_limit_runs_a_script() {
    let source = code_step(
        "outputs.n = sum(range(10))",
        "  memory 32MB\n  outputs { n -> entity.n }\n",
    );
    let checked = check_source(&source, Path::new("test.flow"));
    let codes: Vec<Code> = checked
        .diagnostics
        .iter()
        .map(|diagnostic| diagnostic.code)
        .collect();
    assert_eq!(codes, vec![Code::InvalidOption]);
    assert_eq!(checked.diagnostics[0].message, "invalid memory `32MB`");

    let source = code_step(
        "outputs.n = sum(range(10))",
        "  memory 64MB\n  outputs { n -> entity.n }\n",
    );
    let report = run(&source, json!({})).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity, json!({"n": 45}));
}

/// Waits up to 10 s for every process in `pids` to end. Processes still
/// running then are killed, so that a failing test leaves nothing behind,
/// and the test fails.
fn assert_all_end(pids: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = |pid: &u64| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = status.rsplit(") ").next().and_then(|rest| rest.chars().next());
        !status.is_empty() && !matches!(state, Some('Z') | Some('X'))
    };
    loop {
        let left: Vec<u64> = pids.iter().copied().filter(running).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for pid in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
            panic!("processes {left:?} still ran after the step");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A script that starts, each in a process group of its own: a child with
/// its standard streams closed, a grandchild whose parent ended at once,
/// and a child without flowrun's environment. It writes their ids to the
/// file named by the input `pids`, then sleeps `inputs.sleep` seconds.
const SPAWNING_SCRIPT: &str = "import os, subprocess, time
from subprocess import DEVNULL
quiet = dict(process_group=0, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
child = subprocess.Popen([\"/bin/sleep\", \"301\"], **quiet)
shell = subprocess.Popen([\"/bin/sh\", \"-c\", \"/bin/sleep 302 >/dev/null 2>&1 & echo $!\"], process_group=0, stdin=DEVNULL, stdout=subprocess.PIPE, stderr=DEVNULL)
grandchild = int(shell.stdout.read())
shell.wait()
bare = subprocess.Popen([\"/bin/sleep\", \"303\"], env={}, **quiet)
with open(inputs.pids, \"w\") as file:
    file.write(\"%d %d %d\" % (child.pid, grandchild, bare.pid))
time.sleep(inputs.sleep)
outputs.done = True";

fn spawned_pids(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn processes_in_new_groups_end_with_the_step() {
    let workspace = Workspace::new();
    let pids = workspace.dir.path().join("pids.txt");
    let source = code_step(
        SPAWNING_SCRIPT,
        &format!(
            "  inputs {{\n    pids: \"{}\"\n    sleep: 0.2\n  }}\n  outputs {{ done -> entity.done }}\n",
            path_str(&pids)
        ),
    );
    let report = run(&source, json!({})).await;
    assert!(pids.exists(), "{:#?}", report.failure());
    let spawned = spawned_pids(&pids);
    assert_eq!(spawned.len(), 3);
    assert_all_end(&spawned);
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity, json!({"done": true}));
}

#[tokio::test]
async fn processes_in_new_groups_end_when_the_step_times_out() {
    let workspace = Workspace::new();
    let pids = workspace.dir.path().join("pids.txt");
    let source = code_step(
        SPAWNING_SCRIPT,
        &format!(
            "  inputs {{\n    pids: \"{}\"\n    sleep: 60\n  }}\n  timeout 2s\n",
            path_str(&pids)
        ),
    );
    let report = run(&source, json!({})).await;
    assert!(pids.exists(), "{:#?}", report.failure());
    let spawned = spawned_pids(&pids);
    assert_eq!(spawned.len(), 3);
    assert_all_end(&spawned);
    assert_eq!(report.failure().unwrap().code, Code::CodeTimeout);
}

#[tokio::test]
async fn outputs_convert_to_the_type_of_their_variable() {
    let source = "let n: number = 0\nlet d: datetime = \"2024-01-01T00:00:00Z\"\n\
step \"Script\" {\n  code python \"\"\"\n    outputs.a = \"12.50\"\n    outputs.b = \"2024-01-01T23:00:00-05:00\"\n  \"\"\"\n  outputs {\n    a -> vars.n\n    b -> vars.d\n  }\n}\n\
set entity.n = <<vars.n>>\nset entity.d = <<vars.d>>\n";
    let report = run(source, json!({})).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity["n"].to_string(), "12.50");
    assert_eq!(report.entity["d"], json!("2024-01-01T23:00:00-05:00"));

    let source = "let n: number = 0\n\
step \"Script\" {\n  code python \"\"\"\n    outputs.a = \"abc\"\n    outputs.b = 1\n  \"\"\"\n  outputs {\n    b -> entity.b\n    a -> vars.n\n  }\n}\n";
    let report = run(source, json!({})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::InvalidValue);
    assert_eq!(failure.message, "output `a` to `vars.n`: `abc` is not a number");
    // No output is written when one does not convert.
    assert_eq!(report.entity, json!({}));
}

#[test]
fn check_reports_code_steps_that_always_fail() {
    let source = "step \"Script\" {\n  code python \"\"\"\n    outputs.a = inputs.x\n  \"\"\"\n  inputs {\n    x: 1\n    x: 2\n  }\n  outputs {\n    a -> entity.a\n    log -> entity.l\n  }\n  retry on 5xx\n  timeout 5s\n}\nset entity.k = \"x\" * 2\nset entity.d = \"2024-01-01\" + 1 days\nset entity.n = \"5\" * true\nset entity.m = \"5\" * 2\n";
    let found: Vec<(Code, String, String)> = check_source(source, Path::new("test.flow"))
        .diagnostics
        .into_iter()
        .map(|diagnostic| {
            let span = diagnostic.span.expect("a span");
            (
                diagnostic.code,
                diagnostic.message,
                source[span.start..span.end].to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                Code::InvalidCode,
                "input `x` is given twice".to_string(),
                "x".to_string()
            ),
            (
                Code::InvalidCode,
                "an output cannot be named `log`".to_string(),
                "log".to_string()
            ),
            (
                Code::InvalidOption,
                "`retry` has no effect on a code step".to_string(),
                "retry on 5xx".to_string()
            ),
            (
                Code::TypeMismatch,
                "`*` works on numbers, and on a date with a duration, but the text \"x\" is neither"
                    .to_string(),
                "\"x\"".to_string()
            ),
            (
                Code::TypeMismatch,
                "`*` works on numbers, and on a date with a duration, but the boolean `true` is neither"
                    .to_string(),
                "true".to_string()
            ),
        ]
    );
}

#[test]
fn concurrent_code_steps_do_not_kill_each_other() {
    // Each step that ends looks for processes holding its pipes. Another
    // step's interpreter, between its fork and its exec, holds them too and
    // must not be taken for one of this step's processes. Each step runs on
    // a thread and runtime of its own, so that forks and searches overlap.
    let source = code_step(
        "outputs.n = inputs.n * 2",
        "  inputs { n: <<entity.n>> }\n  outputs { n -> entity.n }\n",
    );
    for round in 0..4 {
        let threads: Vec<_> = (0..12)
            .map(|n| {
                let source = source.clone();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(run(&source, json!({ "n": n })))
                })
            })
            .collect();
        for (n, thread) in threads.into_iter().enumerate() {
            let report = thread.join().unwrap();
            assert_eq!(
                report.outcome,
                Outcome::Succeeded,
                "round {round}, step {n}: {:#?}",
                report.failure()
            );
            assert_eq!(report.entity, json!({ "n": n * 2 }));
        }
    }
}
