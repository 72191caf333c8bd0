//! Runs `code python` actions in a `python3` subprocess.
//!
//! The script and its inputs go to the interpreter's standard input as one
//! JSON document. A small driver program, passed with `-c`, sets the memory
//! limit with `setrlimit`, runs the script, and writes the outputs, the log
//! and any exception as JSON to a copy of its standard output.
//!
//! No shell runs in between. The interpreter starts in isolated mode, in a
//! process group of its own, with an environment of three variables. When
//! the interpreter ends or the step's timeout passes, flowrun kills the
//! group and every other process of the step it can find: the descendants
//! seen through `/proc` parent links, the processes whose environment
//! contains the step's marker, and any process with the step's pipes open.

use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::check::statement::find_on_path;
use crate::diagnostic::{Code, Diagnostic};
use crate::program::statement::CodeCall;
use crate::program::SaveTarget;
use crate::run::save::set_path;
use crate::run::statement::{evaluate_value, value_of};
use crate::run::Execution;
use crate::value::{convert, is_blank};

/// The maximum length of one `outputs.log` message, in bytes of UTF-8.
pub const LOG_MESSAGE_LIMIT: usize = 8 * 1024;
/// The maximum length of all `outputs.log` messages of one run, in bytes of
/// UTF-8.
pub const LOG_RUN_LIMIT: usize = 100 * 1024;
/// The maximum size of the result a script writes back, in bytes.
const RESULT_LIMIT: usize = 16 * 1024 * 1024;
/// How long reading the pipes after the interpreter ended waits for more.
const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// The end of standard error kept for a script that failed without a
/// result.
const STDERR_LIMIT: usize = 8 * 1024;
/// How often the descendants of a running interpreter are looked up, so
/// that a process stays known after its parent ended.
const DESCENDANT_POLL: Duration = Duration::from_millis(50);
/// The environment variable that marks the processes of one code step. Its
/// value is a new UUID per step.
const MARKER_VARIABLE: &str = "FLOWRUN_CODE_STEP";

/// The driver: reads the request, limits memory, runs the script, and
/// writes the result. User code that prints writes to standard error.
const DRIVER: &str = r#"
import json, os, resource, sys, traceback
result = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
request = json.loads(sys.stdin.read())
limit = request["memory"]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

class Inputs:
    def __init__(self, values):
        object.__setattr__(self, "_values", values)
    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError("no input named %r" % name) from None
    def __getitem__(self, name):
        return self._values[name]

class Outputs:
    def __init__(self):
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_log", [])
        object.__setattr__(self, "_log_bytes", 0)
    def __setattr__(self, name, value):
        self._values[name] = value
    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError("no output named %r" % name) from None
    def log(self, message):
        room = request["log_run"] - self._log_bytes
        if room <= 0:
            return
        data = str(message).encode("utf-8")[: min(request["log_message"], room)]
        text = data.decode("utf-8", "ignore")
        self._log.append(text)
        object.__setattr__(self, "_log_bytes", self._log_bytes + len(text.encode("utf-8")))

inputs = Inputs(request["inputs"])
outputs = Outputs()
answer = {"log": outputs._log}
text = None
try:
    code = compile(request["script"], "<script>", "exec")
    try:
        exec(code, {"inputs": inputs, "outputs": outputs, "__name__": "__script__"})
    except SystemExit as stop:
        if stop.code not in (None, 0):
            answer["exit"] = stop.code if isinstance(stop.code, int) else str(stop.code)
    if "exit" not in answer:
        kept = {}
        for name in request["outputs"]:
            if name not in outputs._values:
                continue
            try:
                json.dumps(outputs._values[name], allow_nan=False)
            except (TypeError, ValueError) as error:
                answer["invalid"] = {"name": name, "reason": str(error)}
                break
            kept[name] = outputs._values[name]
        else:
            answer["outputs"] = kept
            text = json.dumps(answer, allow_nan=False)
except BaseException as error:
    lines = traceback.format_exception(type(error), error, error.__traceback__.tb_next)
    answer.pop("outputs", None)
    answer["error"] = "".join(traceback.format_exception_only(type(error), error)).strip()
    answer["traceback"] = "".join(lines)
if text is None:
    text = json.dumps(answer, default=str)
result.write(text)
result.flush()
"#;

/// The result of a code action: the kept log, and the diagnostic if it
/// failed.
pub(crate) struct CodeRun {
    pub log: Vec<String>,
    pub result: Result<(), Diagnostic>,
}

/// Runs a code action with `timeout` of wall time and writes its outputs.
pub(crate) async fn run(call: &CodeCall, execution: &mut Execution, timeout: Duration) -> CodeRun {
    let fail = |code: Code, message: String, help: &str| CodeRun {
        log: Vec::new(),
        result: Err(Diagnostic::error(code, message)
            .with_label(call.span, "this code action")
            .with_help(help.to_string())),
    };
    let mut inputs = Map::new();
    for (name, expr) in &call.inputs {
        match evaluate_value(expr, execution) {
            Ok(value) => {
                inputs.insert(name.clone(), value_of(value).unwrap_or(Value::Null));
            }
            Err(diagnostic) => {
                return CodeRun {
                    log: Vec::new(),
                    result: Err(diagnostic),
                }
            }
        }
    }
    let Some(interpreter) = interpreter(call) else {
        let wanted = call.interpreter.as_deref().unwrap_or("python3");
        return fail(
            Code::InterpreterMissing,
            format!("cannot run the code step: `{wanted}` is not installed or not on PATH"),
            "install Python 3, or name the interpreter with a step line such as `interpreter \"/usr/bin/python3\"`",
        );
    };
    let request = json!({
        "script": call.script,
        "inputs": inputs,
        "memory": call.memory,
        "log_message": LOG_MESSAGE_LIMIT,
        "log_run": LOG_RUN_LIMIT,
        "outputs": call.outputs.iter().map(|output| output.name.as_str()).collect::<Vec<_>>(),
    });

    let marker = uuid::Uuid::new_v4().to_string();
    let mut command = tokio::process::Command::new(&interpreter);
    command
        .args(["-I", "-c", DRIVER])
        .env_clear()
        .env(MARKER_VARIABLE, &marker)
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return fail(
                Code::InterpreterMissing,
                format!("cannot start `{}`: {error}", interpreter.display()),
                "check that the interpreter is Python 3 and may be run",
            )
        }
    };
    let pid = child.id();
    let mut processes = StepProcesses::new(pid, marker);
    let mut stdin = child.stdin.take().expect("run: stdin is piped");
    let mut stdout = child.stdout.take().expect("run: stdout is piped");
    let mut stderr = child.stderr.take().expect("run: stderr is piped");
    let body = request.to_string();
    let pipes = [pipe_inode(stdout.as_raw_fd()), pipe_inode(stderr.as_raw_fd())];
    let exchange = async {
        // A script that fails before reading its input closes the pipe, and
        // its result then gives the reason.
        let _ = stdin.write_all(body.as_bytes()).await;
        drop(stdin);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut out_chunk = vec![0u8; 64 * 1024];
        let mut err_chunk = [0u8; 8192];
        let (mut out_open, mut err_open) = (true, true);
        let mut poll = tokio::time::interval(DESCENDANT_POLL);
        let status = loop {
            tokio::select! {
                _ = poll.tick() => processes.refresh(),
                read = stdout.read(&mut out_chunk), if out_open => match read {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(count) => {
                        out.extend_from_slice(&out_chunk[..count]);
                        if out.len() > RESULT_LIMIT {
                            return Exchange::TooLarge;
                        }
                    }
                },
                read = stderr.read(&mut err_chunk), if err_open => match read {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(count) => keep_tail(&mut err, &err_chunk[..count]),
                },
                status = child.wait() => break status,
            }
        };
        // The interpreter has ended: what it wrote is in the pipes. Its
        // group and any process still holding the pipes are killed first,
        // so that reading to the end cannot wait on them.
        processes.stop_all(&pipes);
        while out_open {
            match tokio::time::timeout(DRAIN_IDLE, stdout.read(&mut out_chunk)).await {
                Ok(Ok(count)) if count > 0 => {
                    out.extend_from_slice(&out_chunk[..count]);
                    if out.len() > RESULT_LIMIT {
                        return Exchange::TooLarge;
                    }
                }
                _ => out_open = false,
            }
        }
        while err_open {
            match tokio::time::timeout(DRAIN_IDLE, stderr.read(&mut err_chunk)).await {
                Ok(Ok(count)) if count > 0 => keep_tail(&mut err, &err_chunk[..count]),
                _ => err_open = false,
            }
        }
        Exchange::Ended { status, out, err }
    };
    let (status, out, err) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Exchange::Ended { status, out, err }) => (status, out, err),
        Ok(Exchange::TooLarge) => {
            processes.stop_all(&pipes);
            return fail(
                Code::CodeFailed,
                "the Python script wrote more than 16 MB of outputs".to_string(),
                "return smaller outputs",
            );
        }
        Err(_) => {
            processes.stop_all(&pipes);
            return fail(
                Code::CodeTimeout,
                format!(
                    "the Python script ran longer than {} and was stopped",
                    crate::run::http::format_duration(timeout)
                ),
                "make the script faster, or give the step more time with a line such as `timeout 2m`",
            );
        }
    };
    let stderr_tail = tail(&err);
    let answer: Value = match serde_json::from_slice(&out) {
        Ok(answer) => answer,
        Err(_) => {
            let status = status
                .map(|status| status.to_string())
                .unwrap_or_else(|error| error.to_string());
            return fail(
                Code::CodeFailed,
                format!(
                    "the Python script ended without a result ({status}){}",
                    if stderr_tail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", execution.redactor.redact(&stderr_tail))
                    }
                ),
                "a script that runs out of memory or is killed ends this way; raise the limit with a line such as `memory 2GB`",
            );
        }
    };
    let log = keep_log(answer.get("log"));
    for message in &log {
        tracing::info!(target: "flowrun::code", "{}", execution.redactor.redact(message));
    }
    if let Some(error) = answer.get("error").and_then(Value::as_str) {
        let traceback = answer
            .get("traceback")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let message = format!("the Python script raised {}\n{}", error, traceback.trim_end());
        return CodeRun {
            log,
            result: Err(
                Diagnostic::error(Code::CodeFailed, execution.redactor.redact(&message))
                    .with_label(call.span, "this code action")
                    .with_help("fix the script; the traceback gives the line of the script that failed"),
            ),
        };
    }
    if let Some(code) = answer.get("exit") {
        let how = match code {
            Value::Number(number) => format!("with code {number}"),
            other => format!("with the message `{}`", other.as_str().unwrap_or_default()),
        };
        return CodeRun {
            log,
            result: Err(Diagnostic::error(
                Code::CodeFailed,
                execution
                    .redactor
                    .redact(&format!("the Python script called `sys.exit` {how}")),
            )
            .with_label(call.span, "this code action")
            .with_help("end the script with `sys.exit(0)`, or without `sys.exit`, when it succeeded")),
        };
    }
    if let Some(invalid) = answer.get("invalid") {
        let name = invalid.get("name").and_then(Value::as_str).unwrap_or_default();
        let reason = invalid.get("reason").and_then(Value::as_str).unwrap_or_default();
        return CodeRun {
            log,
            result: Err(Diagnostic::error(
                Code::CodeFailed,
                execution.redactor.redact(&format!(
                    "the Python script set output `{name}` to a value JSON cannot hold: {reason}"
                )),
            )
            .with_label(call.span, "this code action")
            .with_help("outputs may be numbers (not NaN or infinity), text, booleans, None, lists and dicts with text keys")),
        };
    }
    let outputs = answer.get("outputs").cloned().unwrap_or(Value::Null);
    let result = write_outputs(call, &outputs, execution);
    CodeRun { log, result }
}

/// Finds the interpreter to run: the one the step names, as a path or a
/// name on `PATH`, else `python3` on `PATH`.
fn interpreter(call: &CodeCall) -> Option<PathBuf> {
    match &call.interpreter {
        Some(given) if given.contains('/') => {
            let path = PathBuf::from(given);
            path.is_file().then_some(path)
        }
        Some(name) => find_on_path(name),
        None => find_on_path("python3"),
    }
}

/// The end of the exchange with the interpreter.
enum Exchange {
    Ended {
        status: std::io::Result<std::process::ExitStatus>,
        out: Vec<u8>,
        err: Vec<u8>,
    },
    TooLarge,
}

/// Adds `chunk` to the kept end of standard error.
fn keep_tail(err: &mut Vec<u8>, chunk: &[u8]) {
    err.extend_from_slice(chunk);
    if err.len() > 2 * STDERR_LIMIT {
        err.drain(..err.len() - STDERR_LIMIT);
    }
}

/// The processes of one code step: the interpreter and every descendant
/// seen so far, each with its start time, so that a process id used again
/// by another program is not mistaken for one of them.
struct StepProcesses {
    interpreter: Option<i32>,
    marker: String,
    /// Process id and start time (in clock ticks after boot) of each
    /// descendant seen.
    known: Vec<(i32, u64)>,
}

/// The fields of `/proc/PID/stat` that tell a process's family.
struct ProcStat {
    pid: i32,
    parent: i32,
    start_time: u64,
}

impl StepProcesses {
    fn new(interpreter: Option<u32>, marker: String) -> StepProcesses {
        StepProcesses {
            interpreter: interpreter.and_then(|pid| i32::try_from(pid).ok()),
            marker,
            known: Vec::new(),
        }
    }

    /// Adds every process whose parent is the interpreter or a known
    /// descendant. A process whose parent ended is adopted by another
    /// process and loses that link, so this runs while the step runs.
    fn refresh(&mut self) {
        let Some(interpreter) = self.interpreter else {
            return;
        };
        let all = proc_stats();
        // A known process that ended may leave its id to another program.
        self.known.retain(|(pid, start)| {
            all.iter()
                .any(|stat| stat.pid == *pid && stat.start_time == *start)
        });
        loop {
            let before = self.known.len();
            for stat in &all {
                let is_known =
                    |pid: i32| pid == interpreter || self.known.iter().any(|(known, _)| *known == pid);
                if is_known(stat.parent) && !is_known(stat.pid) {
                    self.known.push((stat.pid, stat.start_time));
                }
            }
            if self.known.len() == before {
                break;
            }
        }
    }

    /// Returns the processes other than flowrun whose environment carries
    /// the step's marker.
    fn marked(&self, own: i32) -> Vec<i32> {
        let needle = format!("{MARKER_VARIABLE}={}", self.marker);
        proc_stats()
            .into_iter()
            .map(|stat| stat.pid)
            .filter(|pid| *pid != own)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|environ| {
                        environ
                            .split(|byte| *byte == 0)
                            .any(|entry| entry == needle.as_bytes())
                    })
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Kills the interpreter's process group, every descendant seen, every
    /// process with the step's marker, and every process that still has one
    /// of the step's pipes open. The last finds a process that left the
    /// group with `setsid` but kept its standard output or error.
    fn stop_all(&mut self, pipes: &[Option<String>]) {
        if let Some(pid) = self.interpreter {
            // The group may be gone already; nothing is left to stop then.
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let own = std::process::id() as i32;
        // A process may start another before it is killed; a few rounds
        // find those too.
        for _ in 0..5 {
            self.refresh();
            let mut targets: Vec<i32> = self.known.iter().map(|(pid, _)| *pid).collect();
            targets.extend(self.marked(own));
            targets.extend(pipe_holders(pipes, own as u32));
            targets.retain(|pid| *pid != own);
            targets.sort_unstable();
            targets.dedup();
            if targets.is_empty() {
                return;
            }
            for target in targets {
                // The process may have ended already.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(target),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Reads the process id, parent and start time of every process in
/// `/proc`. A process that ends while it is read is left out.
fn proc_stats() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            parse_stat(pid, &text)
        })
        .collect()
}

/// Parses `/proc/PID/stat`. The command name in parentheses may hold
/// spaces and parentheses, so the fields are counted after the last `)`:
/// the state is field 3, the parent field 4 and the start time field 22.
fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        parent: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Returns the name `/proc` gives the pipe behind `fd`, such as
/// `pipe:[1234]`.
fn pipe_inode(fd: RawFd) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let name = link.to_string_lossy().into_owned();
    name.starts_with("pipe:").then_some(name)
}

/// Lists the processes other than `own` with a descriptor on one of
/// `pipes`.
fn pipe_holders(pipes: &[Option<String>], own: u32) -> Vec<i32> {
    let pipes: Vec<&str> = pipes.iter().flatten().map(String::as_str).collect();
    let mut holders = Vec::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == own {
            continue;
        }
        // Between its fork and its exec, a child of flowrun has a copy of
        // every pipe flowrun has open, so another step's interpreter that
        // is starting would match. This step's interpreter dies with its
        // group instead.
        let parent = std::fs::read_to_string(process.path().join("stat"))
            .ok()
            .and_then(|text| parse_stat(pid, &text))
            .map(|stat| stat.parent);
        if parent == Some(own as i32) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .map(|link| pipes.iter().any(|pipe| link.as_os_str() == *pipe))
                .unwrap_or(false)
        });
        if holds {
            holders.push(pid);
        }
    }
    holders
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_LIMIT);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// Applies the log limits again to what the script returned, so that a
/// script that writes its result itself cannot pass them.
pub fn keep_log(log: Option<&Value>) -> Vec<String> {
    let mut kept = Vec::new();
    let mut total = 0;
    for message in log.and_then(Value::as_array).into_iter().flatten() {
        let Some(text) = message.as_str() else { continue };
        let room = LOG_RUN_LIMIT - total;
        if room == 0 {
            break;
        }
        let text = truncate(text, LOG_MESSAGE_LIMIT.min(room));
        total += text.len();
        kept.push(text.to_string());
    }
    kept
}

/// Cuts `text` to at most `limit` bytes, at a character boundary.
fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes the declared outputs. Every output is read and converted to the
/// type of the variable it goes to before the first is written, so an
/// output that does not convert leaves the entity and variables unchanged.
fn write_outputs(call: &CodeCall, outputs: &Value, execution: &mut Execution) -> Result<(), Diagnostic> {
    let mut values = Vec::with_capacity(call.outputs.len());
    for output in &call.outputs {
        let name = &output.name;
        let Some(value) = outputs.get(name) else {
            return Err(Diagnostic::error(
                Code::CodeFailed,
                format!("the Python script set no output `{name}`"),
            )
            .with_label(call.span, "this code action")
            .with_help(format!("set it in the script, such as `outputs.{name} = ...`")));
        };
        let value = match output.ty {
            Some(ty) if !is_blank(Some(value)) => convert(value, ty).map_err(|reason| {
                Diagnostic::error(
                    Code::InvalidValue,
                    execution
                        .redactor
                        .redact(&format!("output `{name}` to `{}`: {reason}", output.written)),
                )
                .with_label(call.span, "this code action")
                .with_help(format!(
                    "set `outputs.{name}` to a {} in the script, or declare the variable with the type of its values",
                    ty.as_str()
                ))
            })?,
            _ => value.clone(),
        };
        let levels = match &output.target {
            SaveTarget::Variable(_) => 1,
            SaveTarget::Entity(path) => path.len(),
        };
        if let Some(reason) = crate::value::too_deep(levels, &value) {
            return Err(Diagnostic::error(
                Code::CodeFailed,
                format!("cannot write output `{name}` to `{}`: {reason}", output.written),
            )
            .with_label(call.span, "this code action")
            .with_help("return a flatter value, or save it as a JSON string with `json.dumps`"));
        }
        values.push(value);
    }
    for (output, value) in call.outputs.iter().zip(values) {
        match &output.target {
            SaveTarget::Variable(variable) => {
                execution.vars.insert(variable.clone(), value);
                execution.secret_vars.remove(variable);
            }
            SaveTarget::Entity(path) => {
                // A script may return a secret it was given as an input. The
                // entity is printed and stored, so the secret is masked.
                let value = execution.redact_value(value);
                let mut entity = execution.entity.clone();
                set_path(&mut entity, path, value).map_err(|message| {
                    Diagnostic::error(
                        Code::CodeFailed,
                        format!(
                            "cannot write output `{}` to `{}`: {message}",
                            output.name, output.written
                        ),
                    )
                    .with_label(call.span, "this code action")
                    .with_help("write the output to a field whose parents are objects")
                })?;
                execution.entity = entity;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limits() {
        let long = "x".repeat(9000);
        let kept = keep_log(Some(&json!([long])));
        assert_eq!(kept[0].len(), LOG_MESSAGE_LIMIT);
        let many: Vec<String> = (0..13).map(|_| "y".repeat(LOG_MESSAGE_LIMIT)).collect();
        let kept = keep_log(Some(&json!(many)));
        assert_eq!(kept.iter().map(String::len).sum::<usize>(), LOG_RUN_LIMIT);
        assert_eq!(kept.len(), 13);
        assert_eq!(kept[12].len(), LOG_RUN_LIMIT - 12 * LOG_MESSAGE_LIMIT);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("ééé", 5), "éé");
    }
}
