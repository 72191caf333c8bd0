//! The local model server of the tests, started once per test run.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The base URL (ending in `/v1`) of the local model server. It comes from
/// `FLOWRUN_TEST_LLM_URL` when the test command started the server, or from
/// running `tests/llm-server/start.sh`, which installs the model and the
/// server on first use and reuses a running server after that.
pub fn model_server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("FLOWRUN_TEST_LLM_URL") {
            return url;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new("bash")
            .arg(root.join("tests/llm-server/start.sh"))
            .current_dir(root)
            .status()
            .expect("bash runs tests/llm-server/start.sh");
        assert!(status.success(), "tests/llm-server/start.sh failed: {status}");
        let env = std::fs::read_to_string(root.join("target/llm-cache/server.env"))
            .expect("start.sh writes target/llm-cache/server.env");
        env.lines()
            .find_map(|line| line.strip_prefix("FLOWRUN_TEST_LLM_URL="))
            .expect("server.env names FLOWRUN_TEST_LLM_URL")
            .trim()
            .to_string()
    })
    .clone()
}
