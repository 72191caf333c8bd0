//! The VS Code extension in `editors/vscode/`: its node test tokenizes every
//! sample with the TextMate grammar, and `vsce package` builds the `.vsix`.
//!
//! The extension is copied to `target/vscode-extension/`, where `npm ci`
//! installs its packages once; later runs reuse them while the lock file is
//! unchanged. `node_modules` never enters the source tree.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the extension's files, skipping installed packages and builds.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("the build folder can be created");
    for entry in std::fs::read_dir(from).expect("the extension folder is readable") {
        let entry = entry.expect("readable entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "node_modules" || name.ends_with(".vsix") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&*name));
        } else {
            std::fs::copy(&path, to.join(&*name)).expect("the file can be copied");
        }
    }
}

fn npm(folder: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new("npm")
        .args(args)
        .current_dir(folder)
        .env("FLOWRUN_SAMPLES", root().join("samples"))
        .output()
        .expect("npm runs (Node 20 and npm are required)");
    assert!(
        output.status.success(),
        "npm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Prepares the copy under `target/` and installs its packages when the
/// lock file changed since the last install.
fn prepared() -> PathBuf {
    let build = root().join("target/vscode-extension");
    copy_tree(&root().join("editors/vscode"), &build);
    let lock = std::fs::read(build.join("package-lock.json")).expect("package-lock.json is committed");
    let stamp = build.join("node_modules/.flowrun-lock");
    if std::fs::read(&stamp).ok().as_deref() != Some(&lock[..]) {
        npm(&build, &["ci", "--no-audit", "--no-fund"]);
        std::fs::write(&stamp, &lock).expect("the stamp can be written");
    }
    build
}

#[test]
fn grammar_tokenizes_samples_and_extension_packages() {
    let build = prepared();

    let output = npm(&build, &["test"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let samples = std::fs::read_dir(root().join("samples"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "flow")
        })
        .count();
    assert!(
        stdout.contains(&format!("grammar: {samples} samples,")),
        "{stdout}"
    );

    let vsix = build.join("flowrun.vsix");
    let _ = std::fs::remove_file(&vsix);
    npm(&build, &["run", "package"]);
    let bytes = std::fs::read(&vsix).expect("vsce package wrote flowrun.vsix");
    assert_eq!(&bytes[..4], b"PK\x03\x04", "a .vsix is a zip archive");
    // A zip archive stores its file names uncompressed.
    for name in [
        "extension/package.json",
        "extension/syntaxes/flow.tmLanguage.json",
        "extension/language-configuration.json",
        "extension/src/extension.js",
        "extension/node_modules/vscode-languageclient/package.json",
    ] {
        assert!(
            bytes.windows(name.len()).any(|window| window == name.as_bytes()),
            "{name} is missing from the package"
        );
    }
    assert!(
        !bytes.windows(13).any(|window| window == b"extension/tes"),
        "the tests are packaged"
    );
}
