//! `flowrun.toml`: settings shared by the workflows of a folder.
//!
//! ```toml
//! [providers.local]
//! kind = "openai"
//! base_url = "http://127.0.0.1:8080/v1"
//! api_key = "<<secret.LOCAL_LLM_KEY>>"
//! model = "gemma-3-270m"
//!
//! [tls]
//! cacert = "certs/internal-ca.pem"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diagnostic::{Code, Diagnostic};
use crate::llm::ProviderKind;
use crate::program::{Compiled, Encoding, Piece, ProviderConfig};
use crate::syntax::ast::{Expr, Segment};
use crate::syntax::template::{self, Mode};

pub const FILE_NAME: &str = "flowrun.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    #[serde(default)]
    providers: std::collections::BTreeMap<String, ProviderEntry>,
    #[serde(default)]
    tls: TlsEntry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsEntry {
    /// A PEM file of CA certificates, relative to the folder of
    /// `flowrun.toml`.
    cacert: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    kind: Option<String>,
    base_url: Option<String>,
    api_key: Option<String>,
    model: Option<String>,
    vision: Option<bool>,
}

/// The largest `flowrun.toml` read: 1 MiB, far above any real project file.
const MAX_PROJECT_BYTES: u64 = 1024 * 1024;

/// Reads the providers of `flowrun.toml` in `folder`; none when the file
/// does not exist.
pub fn load_providers(folder: &Path) -> Result<Vec<ProviderConfig>, Diagnostic> {
    let Some((path, file)) = read_project_file(folder)? else {
        return Ok(Vec::new());
    };

    let mut providers = Vec::new();
    for (name, entry) in file.providers {
        let kind = match entry.kind.as_deref() {
            None if name == "anthropic" => ProviderKind::Anthropic,
            None | Some("openai") => ProviderKind::OpenAi,
            Some("anthropic") => ProviderKind::Anthropic,
            Some(other) => {
                return Err(invalid(
                    &path,
                    &format!("provider `{name}` has the unknown kind `{other}`; use `openai` or `anthropic`"),
                ))
            }
        };
        if entry
            .api_key
            .as_deref()
            .is_some_and(|key| !key.is_empty() && !key.contains("<<"))
        {
            return Err(invalid(
                &path,
                &format!(
                    "provider `{name}` has an API key in plain text; write `api_key = \"<<secret.NAME>>\"`"
                ),
            ));
        }
        if entry
            .api_key
            .as_deref()
            .is_some_and(|key| key.contains("<<") && !key.trim_start().starts_with("<<secret."))
        {
            return Err(invalid(
                &path,
                &format!("provider `{name}` has an API key that is not `<<secret.NAME>>`"),
            ));
        }
        let template = |value: Option<String>, what: &str| -> Result<Option<Compiled>, Diagnostic> {
            value
                .map(|text| {
                    compile(&text)
                        .map_err(|reason| invalid(&path, &format!("provider `{name}`, {what}: {reason}")))
                })
                .transpose()
        };
        providers.push(ProviderConfig {
            base_url: template(entry.base_url, "base_url")?,
            api_key: template(entry.api_key, "api_key")?,
            model: entry.model,
            vision: entry.vision.unwrap_or(false),
            kind,
            name,
        });
    }
    Ok(providers)
}

/// Reads the CA file that `cacert` under `[tls]` names in `flowrun.toml`
/// in `folder`. Returns that path, resolved against `folder`, and the path
/// of `flowrun.toml`, or none when the file or the setting does not exist.
pub fn load_cacert(folder: &Path) -> Result<Option<(PathBuf, PathBuf)>, Diagnostic> {
    let Some((path, file)) = read_project_file(folder)? else {
        return Ok(None);
    };
    Ok(file.tls.cacert.map(|cacert| (folder.join(cacert), path)))
}

/// Reads and parses `flowrun.toml` in `folder`, and returns its path too.
/// Returns none when the file does not exist.
fn read_project_file(folder: &Path) -> Result<Option<(PathBuf, ProjectFile)>, Diagnostic> {
    let path = folder.join(FILE_NAME);
    let bytes = match crate::input::read_regular_file(&path, Some(MAX_PROJECT_BYTES)) {
        Ok(bytes) => bytes,
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(invalid(&path, &format!("cannot be read: {error}"))),
    };
    let text = String::from_utf8(bytes).map_err(|_| invalid(&path, "is not valid UTF-8 text"))?;
    let file: ProjectFile = toml::from_str(&text).map_err(|error| invalid(&path, error.message()))?;
    Ok(Some((path, file)))
}

/// Compiles a setting that may use `<<vars.NAME>>` and `<<secret.NAME>>`.
fn compile(text: &str) -> Result<Compiled, String> {
    let mut diagnostics = Vec::new();
    let parsed = template::parse(text, 0, Mode::Raw, &mut diagnostics);
    if let Some(diagnostic) = diagnostics.first() {
        return Err(diagnostic.message.clone());
    }
    let mut pieces = Vec::new();
    for segment in parsed.segments {
        match segment {
            Segment::Text(part) => pieces.push(Piece::Text(part.text)),
            Segment::Field(field) => {
                let allowed = matches!(&field.expr, Expr::Path(path)
                    if (path.root.text == "vars" || path.root.text == "secret") && path.segments.len() == 1);
                if !allowed {
                    return Err("merge fields may only be `<<vars.NAME>>` or `<<secret.NAME>>`".to_string());
                }
                pieces.push(Piece::Field {
                    expr: field.expr,
                    encoding: Encoding::Raw,
                    span: field.span,
                });
            }
        }
    }
    Ok(Compiled { pieces })
}

fn invalid(path: &Path, reason: &str) -> Diagnostic {
    Diagnostic::error(
        Code::InvalidProvider,
        format!("`{}` is invalid: {reason}", path.display()),
    )
    .with_help("see docs/language.md for the format of flowrun.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_cacert_resolves_against_folder() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(
            folder.path().join(FILE_NAME),
            "[tls]\ncacert = \"certs/ca.pem\"\n",
        )
        .unwrap();
        let (cacert, project_file) = load_cacert(folder.path()).unwrap().unwrap();
        assert_eq!(cacert, folder.path().join("certs/ca.pem"));
        assert_eq!(project_file, folder.path().join(FILE_NAME));
        assert_eq!(load_providers(folder.path()).unwrap().len(), 0);
    }

    #[test]
    fn tls_unknown_setting_is_invalid() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join(FILE_NAME);
        std::fs::write(&path, "[tls]\ncafile = \"ca.pem\"\n").unwrap();
        let diagnostic = load_cacert(folder.path()).unwrap_err();
        assert_eq!(diagnostic.code, Code::InvalidProvider);
        assert_eq!(
            diagnostic.message,
            format!(
                "`{}` is invalid: unknown field `cafile`, expected `cacert`",
                path.display()
            )
        );
    }

    #[test]
    fn no_tls_section_means_no_cacert() {
        let folder = tempfile::tempdir().unwrap();
        assert_eq!(load_cacert(folder.path()).unwrap(), None);
        std::fs::write(
            folder.path().join(FILE_NAME),
            "[providers.local]\nmodel = \"m\"\n",
        )
        .unwrap();
        assert_eq!(load_cacert(folder.path()).unwrap(), None);
    }
}
