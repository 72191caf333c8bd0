//! The programs and the speech-to-text server of the extraction and
//! transcription tests.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Installs pdftotext, espeak-ng, flac and lame when they are missing,
/// once per test binary.
pub fn media_tools() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root().join("tests/media-tools.sh"))
            .status()
            .expect("bash runs tests/media-tools.sh");
        assert!(status.success(), "tests/media-tools.sh failed: {status}");
    });
}

/// Writes `text`, spoken by espeak-ng in American English at 130 words a
/// minute, to a WAV file at `path`.
pub fn speak(text: &str, path: &Path) {
    media_tools();
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "130", "-w"])
        .arg(path)
        .arg(text)
        .status()
        .expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng failed: {status}");
}

/// Encodes the WAV file at `wav` as FLAC at `path`, with the `flac`
/// program.
pub fn encode_flac(wav: &Path, path: &Path) {
    media_tools();
    let status = Command::new("flac")
        .args(["--silent", "--force", "-o"])
        .arg(path)
        .arg(wav)
        .status()
        .expect("flac runs");
    assert!(status.success(), "flac failed: {status}");
}

/// Encodes the WAV file at `wav` as MP3 at 160 kbit/s at `path`, with the
/// `lame` program.
pub fn encode_mp3(wav: &Path, path: &Path) {
    media_tools();
    let status = Command::new("lame")
        .args(["--quiet", "-b", "160"])
        .arg(wav)
        .arg(path)
        .status()
        .expect("lame runs");
    assert!(status.success(), "lame failed: {status}");
}

/// The base URL (ending in `/v1`) of the local speech-to-text server, from
/// `FLOWRUN_TEST_STT_URL` or from running `tests/stt-server/start.sh`.
pub fn stt_server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("FLOWRUN_TEST_STT_URL") {
            return url;
        }
        let status = Command::new("bash")
            .arg(root().join("tests/stt-server/start.sh"))
            .current_dir(root())
            .status()
            .expect("bash runs tests/stt-server/start.sh");
        assert!(status.success(), "tests/stt-server/start.sh failed: {status}");
        let env = std::fs::read_to_string(root().join("target/stt-cache/server.env"))
            .expect("start.sh writes target/stt-cache/server.env");
        env.lines()
            .find_map(|line| line.strip_prefix("FLOWRUN_TEST_STT_URL="))
            .expect("server.env names FLOWRUN_TEST_STT_URL")
            .trim()
            .to_string()
    })
    .clone()
}

/// The path of a committed document fixture.
pub fn fixture(name: &str) -> String {
    root()
        .join("tests/fixtures/documents")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}
