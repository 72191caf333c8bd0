//! Runs the `flowrun` binary in tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// A temporary folder for the files of one test.
pub struct Workspace {
    pub dir: TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// The `flowrun` binary with a wide terminal and no secrets from the
/// environment of the test run.
pub fn flowrun(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowrun"));
    command
        .args(args)
        .env_remove("NO_COLOR")
        .env("COLUMNS", "400")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("FLOWRUN_SECRET_") {
            command.env_remove(key);
        }
    }
    command
}

/// Runs the command and returns its exit code, stdout and stderr.
pub fn output(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    (
        status.code().expect("exited with a code"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs the command like [`output`], but kills it and fails the test when
/// it has not exited within `limit`, so that a command that blocks fails
/// instead of hanging the test run.
pub fn output_within(command: &mut Command, limit: std::time::Duration) -> (i32, String, String) {
    use std::io::Read as _;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the command did not exit within {limit:?}: {command:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (
        status.code().expect("exited with a code"),
        out.join().unwrap(),
        err.join().unwrap(),
    )
}

/// Makes a named pipe (FIFO) at `path` with `mkfifo`.
pub fn make_fifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A Python script that runs a command with its standard error on a
/// pseudo-terminal of 40 rows and 200 columns and its standard output on
/// the script's own. The script then writes every byte the terminal
/// received to its standard error and exits with the command's exit code.
const ON_TERMINAL: &str = r#"
import fcntl, os, pty, struct, subprocess, sys, termios
leader, follower = pty.openpty()
fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stderr=follower)
os.close(follower)
received = bytearray()
while True:
    try:
        chunk = os.read(leader, 65536)
    except OSError:
        # EIO: every process holding the terminal has closed it.
        break
    if not chunk:
        break
    received += chunk
code = child.wait()
sys.stderr.buffer.write(received)
sys.exit(code)
"#;

/// Builds the `flowrun` command as [`flowrun`] does, but with standard error
/// on a pseudo-terminal made by Python's `pty` module, so that
/// `IsTerminal` is true for it. Standard output stays a pipe. The stderr of
/// the returned command contains what the terminal received, with each line
/// feed turned into CR LF by the terminal.
pub fn flowrun_on_terminal(args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(ON_TERMINAL)
        .arg(env!("CARGO_BIN_EXE_flowrun"))
        .args(args)
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("FLOWRUN_SECRET_") {
            command.env_remove(key);
        }
    }
    command
}
