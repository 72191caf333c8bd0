//! Reads what a run starts from: the `.flow` file, the entity, secrets and
//! `--var` values. Each problem becomes a diagnostic that names the value
//! and the fix.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic};

/// The prefix of environment variables that hold secrets.
pub const SECRET_ENV_PREFIX: &str = "FLOWRUN_SECRET_";

/// Reads a `.flow` file as UTF-8 text, without a leading byte order mark,
/// so that columns on the first line count from the first character.
pub fn read_flow(path: &Path) -> Result<String, Diagnostic> {
    let text = read_flow_as_written(path)?;
    Ok(match text.strip_prefix(BOM) {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The UTF-8 byte order mark, which some Windows editors write at the start
/// of a file.
pub const BOM: char = '\u{FEFF}';

/// Reads a `.flow` file as UTF-8 text, keeping a leading byte order mark,
/// for `flowrun fmt`, which writes the file back.
pub fn read_flow_as_written(path: &Path) -> Result<String, Diagnostic> {
    let shown = path.display();
    let bytes = read_regular_file(path, None).map_err(|error| {
        let code = if error.is_not_found() {
            Code::FileNotFound
        } else {
            Code::FileUnreadable
        };
        Diagnostic::error(code, format!("cannot read workflow `{shown}`: {error}"))
            .with_help("check the path; workflows are regular files such as `claims.flow`")
    })?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        Diagnostic::error(
            Code::FileNotUtf8,
            format!("workflow `{shown}` is not valid UTF-8 (first invalid byte at offset {offset})"),
        )
        .with_help("save the file as UTF-8")
    })?;
    if text.strip_prefix(BOM).unwrap_or(&text).trim().is_empty() {
        return Err(
            Diagnostic::error(Code::EmptyFile, format!("workflow `{shown}` is empty"))
                .with_help("add at least one step, such as `http GET \"https://api.example.test/health\"`"),
        );
    }
    Ok(text)
}

/// The failure of [`read_regular_file`].
#[derive(Debug)]
pub enum ReadFileError {
    Io(std::io::Error),
    /// The path names a named pipe, a device, a socket or a folder, whose
    /// reading could block for ever or never end. The text names the kind.
    NotRegular(&'static str),
    /// The file is larger than the limit.
    TooLarge {
        size: u64,
        limit: u64,
    },
}

impl ReadFileError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadFileError::Io(error) if error.kind() == std::io::ErrorKind::NotFound)
    }
}

impl std::fmt::Display for ReadFileError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFileError::Io(error) => write!(formatter, "{error}"),
            ReadFileError::NotRegular(kind) => write!(formatter, "it is {kind}, not a regular file"),
            ReadFileError::TooLarge { size, limit } => write!(
                formatter,
                "it holds {size} bytes, more than the limit of {limit} bytes"
            ),
        }
    }
}

/// Reads a file that the user named, which must be a regular file of at
/// most `limit` bytes. The file is opened without blocking, so that a named
/// pipe with no writer fails at once instead of waiting for one, and its
/// type is read from the open file before any byte is.
pub fn read_regular_file(path: &Path, limit: Option<u64>) -> Result<Vec<u8>, ReadFileError> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            // A socket cannot be opened at all.
            Some(nix::libc::ENXIO) => ReadFileError::NotRegular("a socket"),
            _ => ReadFileError::Io(error),
        })?;
    let metadata = file.metadata().map_err(ReadFileError::Io)?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        return Err(ReadFileError::NotRegular(if kind.is_dir() {
            "a folder"
        } else if kind.is_fifo() {
            "a named pipe (FIFO)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "a special file"
        }));
    }
    if let Some(limit) = limit.filter(|limit| metadata.len() > *limit) {
        return Err(ReadFileError::TooLarge {
            size: metadata.len(),
            limit,
        });
    }
    let mut bytes = Vec::new();
    // The file may grow after its size was read.
    let cap = limit.unwrap_or(u64::MAX);
    (&file)
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadFileError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadFileError::TooLarge {
            size: bytes.len() as u64,
            limit: cap,
        });
    }
    Ok(bytes)
}

/// Reads the entity from a file, or from standard input for `-`.
pub fn read_entity(path: &str) -> Result<Value, Diagnostic> {
    let (text, shown) = if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|error| {
            Diagnostic::error(
                Code::InvalidEntity,
                format!("cannot read the entity from standard input: {error}"),
            )
            .with_help("pipe a JSON object into flowrun, or pass --entity FILE")
        })?;
        (text, "read from standard input".to_string())
    } else {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Diagnostic::error(
                Code::InvalidEntity,
                format!("cannot read entity `{path}`: {error}"),
            )
            .with_help("check the path given to --entity; it must be a UTF-8 JSON file")
        })?;
        (text, format!("`{path}`"))
    };
    parse_entity(&text, &shown)
}

/// Parses entity JSON, which must be an object.
pub fn parse_entity(text: &str, shown: &str) -> Result<Value, Diagnostic> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let value: Value = serde_json::from_str(text).map_err(|error| {
        // serde_json reads JSON nested up to 127 levels, so a deeper entity
        // is past flowrun's limit too.
        if error.to_string().starts_with("recursion limit exceeded") {
            return too_deep_entity(shown);
        }
        Diagnostic::error(
            Code::InvalidEntity,
            format!(
                "entity {shown} is not valid JSON: {} at {}:{}",
                strip_position(&error.to_string()),
                error.line(),
                error.column()
            ),
        )
        .with_help("the entity is one JSON object, such as {\"id\": \"C-1\"}")
    })?;
    if !value.is_object() {
        let kind = match value {
            Value::Array(_) => "a list",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
            Value::Object(_) => "an object",
        };
        return Err(Diagnostic::error(
            Code::EntityNotObject,
            format!("entity {shown} is {kind}, not a JSON object"),
        )
        .with_help("wrap the record in an object, such as {\"id\": \"C-1\", ...}"));
    }
    if crate::value::nesting(&value) > crate::value::MAX_NESTING {
        return Err(too_deep_entity(shown));
    }
    Ok(value)
}

/// Reports an entity nested deeper than [`crate::value::MAX_NESTING`] levels.
fn too_deep_entity(shown: &str) -> Diagnostic {
    Diagnostic::error(
        Code::InvalidEntity,
        format!(
            "entity {shown} is nested more than {} levels deep",
            crate::value::MAX_NESTING
        ),
    )
    .with_help(format!(
        "flatten the entity; flowrun stores entities nested up to {} levels",
        crate::value::MAX_NESTING
    ))
}

/// serde_json appends " at line L column C"; the message gives L:C itself.
fn strip_position(message: &str) -> &str {
    message
        .find(" at line ")
        .map_or(message, |index| &message[..index])
}

/// Collects secrets from `FLOWRUN_SECRET_<NAME>` environment variables and
/// then from a dotenv file, whose values win.
pub fn read_secrets(
    environment: impl IntoIterator<Item = (String, String)>,
    file: Option<&Path>,
) -> Result<HashMap<String, String>, Diagnostic> {
    let mut secrets: HashMap<String, String> = environment
        .into_iter()
        .filter_map(|(key, value)| {
            key.strip_prefix(SECRET_ENV_PREFIX)
                .filter(|name| !name.is_empty())
                .map(|name| (name.to_string(), value))
        })
        .collect();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|error| {
            Diagnostic::error(
                Code::InvalidSecretsFile,
                format!("cannot read secrets file `{}`: {error}", file.display()),
            )
            .with_help("check the path given to --secrets")
        })?;
        secrets.extend(parse_dotenv(&text).map_err(|(line, reason)| {
            Diagnostic::error(
                Code::InvalidSecretsFile,
                format!("secrets file `{}`, line {line}: {reason}", file.display()),
            )
            .with_help("write one `NAME=value` per line; lines starting with # are comments")
        })?);
    }
    Ok(secrets)
}

/// Parses `NAME=value` lines. Values may be quoted with `"` or `'`; an
/// `export ` prefix is allowed. Errors name the line, never its value.
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, (usize, &'static str)> {
    let mut pairs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err((number, "expected NAME=value"));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((number, "the name must use letters, digits and _ only"));
        }
        let value = value.trim();
        let value = match value.as_bytes() {
            [b'"', .., b'"'] | [b'\'', .., b'\''] if value.len() >= 2 => &value[1..value.len() - 1],
            [b'"' | b'\'', ..] => return Err((number, "the quoted value has no closing quote")),
            // In an unquoted value, ` #` starts a comment, as in shell.
            _ => value
                .split_once(" #")
                .map_or(value, |(value, _)| value.trim_end()),
        };
        pairs.push((name.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// Checks an `--execution-id`: 1 to 128 letters, digits and `. _ : -`, so
/// that it reads the same in logs, listings and headers.
pub fn check_execution_id(id: &str) -> Result<(), Diagnostic> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if valid {
        return Ok(());
    }
    Err(Diagnostic::error(
        Code::InvalidExecutionId,
        format!("invalid --execution-id `{}`", id.escape_debug()),
    )
    .with_help("use 1 to 128 letters, digits and . _ : -, such as claim-2026-0417"))
}

/// Parses one `--var NAME=VALUE`.
pub fn parse_var(text: &str) -> Result<(String, String), Diagnostic> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(Diagnostic::error(
            Code::InvalidVar,
            format!("invalid --var `{text}`: expected NAME=VALUE"),
        )
        .with_help(format!("write it as --var {text}=VALUE"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_errors_give_line_and_column() {
        let error = parse_entity("{\n  \"a\": 1,\n}", "`e.json`").unwrap_err();
        assert_eq!(error.code, Code::InvalidEntity);
        assert_eq!(
            error.message,
            "entity `e.json` is not valid JSON: trailing comma at 3:1"
        );
        let error = parse_entity("[1]", "`e.json`").unwrap_err();
        assert_eq!(error.code, Code::EntityNotObject);
    }

    #[test]
    fn entity_past_the_nesting_limit_rejected() {
        // 101 levels passes only flowrun's limit; 201 passes serde_json's too.
        for levels in [100, 200] {
            let deep = format!("{{\"d\":{}1{}}}", "[".repeat(levels), "]".repeat(levels));
            let error = parse_entity(&deep, "`e.json`").unwrap_err();
            assert_eq!(error.code, Code::InvalidEntity, "{levels}");
            assert_eq!(
                error.message,
                "entity `e.json` is nested more than 100 levels deep"
            );
        }
        let limit = format!("{{\"d\":{}1{}}}", "[".repeat(99), "]".repeat(99));
        assert!(parse_entity(&limit, "`e.json`").is_ok());
    }

    #[test]
    fn dotenv_lines() {
        let pairs = parse_dotenv("# c\nexport A=1\nB=\"two words\"\nC='x=y'\n\n").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words".to_string()),
                ("C".to_string(), "x=y".to_string())
            ]
        );
        assert_eq!(parse_dotenv("A=1\nnonsense"), Err((2, "expected NAME=value")));
        assert_eq!(
            parse_dotenv("A=\"open"),
            Err((1, "the quoted value has no closing quote"))
        );
    }

    #[test]
    fn secrets_from_environment_and_file_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.env");
        std::fs::write(&file, "TOKEN=from-file\n").unwrap();
        let environment = vec![
            ("FLOWRUN_SECRET_TOKEN".to_string(), "from-env".to_string()),
            ("FLOWRUN_SECRET_OTHER".to_string(), "o".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let secrets = read_secrets(environment, Some(&file)).unwrap();
        assert_eq!(secrets.get("TOKEN").map(String::as_str), Some("from-file"));
        assert_eq!(secrets.get("OTHER").map(String::as_str), Some("o"));
        assert_eq!(secrets.len(), 2);
    }

    #[test]
    fn vars() {
        assert_eq!(parse_var("a=b=c").unwrap(), ("a".to_string(), "b=c".to_string()));
        assert_eq!(parse_var("novalue").unwrap_err().code, Code::InvalidVar);
    }
}
