//! The language server: `flowrun lsp`, over standard input and output.
//!
//! One thread reads messages into a channel. The main thread replies to
//! requests in order and publishes diagnostics once a document has not
//! changed for [`DEBOUNCE`]. Every feature works on the text as it is, so a
//! half-typed file gets what its tree and its lines allow.

mod actions;
mod completion;
mod diagnostics;
mod document;
mod hover;
mod navigate;
pub mod position;
pub mod transport;

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use document::Document;
use position::Encoding;
use position::{described, Position};
use transport::{MessageReader, ReadError};

/// How long a document must stay unchanged before its diagnostics are
/// published again.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;
const SERVER_NOT_INITIALIZED: i64 = -32002;

/// Serves the language server protocol over standard input and output
/// and returns the exit code: 0 after `shutdown` and `exit`, 1 otherwise.
pub fn serve(entity_schema: Option<&Path>) -> u8 {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = MessageReader::new(BufReader::new(io::stdin().lock()));
        loop {
            match reader.read_message() {
                Ok(Some(message)) => {
                    if sender.send(Some(message)).is_err() {
                        return;
                    }
                }
                Ok(None) | Err(ReadError::Closed(_)) => {
                    let _ = sender.send(None);
                    return;
                }
                Err(ReadError::Skipped(reason)) => log(&reason),
            }
        }
    });
    let mut server = Server::new(entity_schema.map(Path::to_path_buf));
    let mut stdout = io::stdout().lock();
    loop {
        let timeout = server
            .next_deadline()
            .map_or(Duration::from_secs(3600), |deadline| {
                deadline.saturating_duration_since(Instant::now())
            });
        let received = receiver.recv_timeout(timeout);
        let mut outgoing = Vec::new();
        match received {
            Ok(Some(message)) => {
                if let Some(code) = server.handle(&message, &mut outgoing) {
                    flush(&mut stdout, &outgoing);
                    return code;
                }
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => return 1,
            Err(RecvTimeoutError::Timeout) => {}
        }
        server.publish_due(&mut outgoing, Instant::now());
        if !flush(&mut stdout, &outgoing) {
            return 1;
        }
    }
}

/// Writes one line to standard error, which the client shows as the
/// server's log.
fn log(message: &str) {
    crate::cli::output::eprint_line(&format!("flowrun lsp: {message}"));
}

fn flush(stdout: &mut impl io::Write, messages: &[Value]) -> bool {
    messages
        .iter()
        .all(|message| transport::write_message(stdout, message).is_ok())
}

/// The state of one session.
pub struct Server {
    encoding: Encoding,
    documents: HashMap<String, Document>,
    /// When each changed document's diagnostics are due.
    due: HashMap<String, Instant>,
    entity_schema: Option<PathBuf>,
    initialized: bool,
    shut_down: bool,
}

impl Server {
    pub fn new(entity_schema: Option<PathBuf>) -> Server {
        Server {
            encoding: Encoding::Utf16,
            documents: HashMap::new(),
            due: HashMap::new(),
            entity_schema,
            initialized: false,
            shut_down: false,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Handles one message, pushing responses and notifications to `out`.
    /// Returns the exit code when the message is `exit`.
    pub fn handle(&mut self, message: &Value, out: &mut Vec<Value>) -> Option<u8> {
        if !message.is_object() {
            out.push(error_response(
                Value::Null,
                INVALID_REQUEST,
                format!("the message `{}` is not a JSON-RPC object; send an object with `jsonrpc`, `method` and, for a request, `id`", abridged(message)),
            ));
            return None;
        }
        let params = &message["params"];
        let Some(id) = message.get("id").cloned() else {
            let method = message["method"].as_str().unwrap_or("");
            return self.notification(method, params, out);
        };
        let method = match message.get("method") {
            // A response to a request of ours; the server sends none.
            None => return None,
            Some(Value::String(method)) => method.as_str(),
            Some(other) => {
                let text = format!(
                    "the method {} is not a string; name the method, such as \"textDocument/hover\"",
                    described(other)
                );
                out.push(error_response(id, INVALID_REQUEST, text));
                return None;
            }
        };
        if !(id.is_i64() || id.is_u64() || id.is_string()) {
            // JSON-RPC 2.0 requires a null id in the error for an unreadable id.
            let text = format!(
                "the request id {} is not an integer or a string; give the request an integer or string id",
                described(&id)
            );
            out.push(error_response(Value::Null, INVALID_REQUEST, text));
            return None;
        }
        let result = if !self.initialized && method != "initialize" {
            Err((
                SERVER_NOT_INITIALIZED,
                "the server is not initialized".to_string(),
            ))
        } else if self.shut_down {
            Err((INVALID_REQUEST, "the server is shutting down".to_string()))
        } else {
            self.request(method, params)
        };
        out.push(match result {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, message)) => error_response(id, code, message),
        });
        None
    }

    fn notification(&mut self, method: &str, params: &Value, out: &mut Vec<Value>) -> Option<u8> {
        match method {
            "exit" => return Some(if self.shut_down { 0 } else { 1 }),
            "textDocument/didOpen" => {
                let item = &params["textDocument"];
                let uri = item["uri"].as_str().unwrap_or("").to_string();
                let text = item["text"].as_str().unwrap_or("").to_string();
                let version = item["version"].as_i64().unwrap_or(0);
                self.documents.insert(
                    uri.clone(),
                    Document::new(&uri, text, version, self.entity_schema.clone()),
                );
                self.due.remove(&uri);
                self.publish(&uri, out);
            }
            "textDocument/didChange" => {
                let uri = params["textDocument"]["uri"].as_str().unwrap_or("").to_string();
                let version = params["textDocument"]["version"].as_i64().unwrap_or(0);
                let encoding = self.encoding;
                if let Some(document) = self.documents.get_mut(&uri) {
                    for change in params["contentChanges"].as_array().into_iter().flatten() {
                        if let Err(problem) = document.apply_change(change, encoding) {
                            log(&format!(
                                "skipped a change to {uri} with an invalid range: {problem}"
                            ));
                        }
                    }
                    document.version = version;
                    self.due.insert(uri, Instant::now() + DEBOUNCE);
                }
            }
            "textDocument/didSave" => {
                let uri = params["textDocument"]["uri"].as_str().unwrap_or("").to_string();
                if let Some(document) = self.documents.get_mut(&uri) {
                    // A schema or flowrun.toml beside the file may have changed.
                    document.invalidate();
                    self.due.insert(uri, Instant::now());
                }
            }
            "textDocument/didClose" => {
                let uri = params["textDocument"]["uri"].as_str().unwrap_or("").to_string();
                self.documents.remove(&uri);
                self.due.remove(&uri);
                out.push(notification(
                    "textDocument/publishDiagnostics",
                    json!({"uri": uri, "diagnostics": []}),
                ));
            }
            _ => {}
        }
        None
    }

    fn request(&mut self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        if method == "initialize" {
            if self.initialized {
                return Err((
                    INVALID_REQUEST,
                    "the server is already initialized; send `initialize` once per session".to_string(),
                ));
            }
            self.initialized = true;
            let offered = &params["capabilities"]["general"]["positionEncodings"];
            let utf8 = offered
                .as_array()
                .is_some_and(|list| list.iter().any(|encoding| encoding == "utf-8"));
            self.encoding = if utf8 { Encoding::Utf8 } else { Encoding::Utf16 };
            return Ok(capabilities(self.encoding));
        }
        if method == "shutdown" {
            self.shut_down = true;
            return Ok(Value::Null);
        }
        let (uri, query) = Query::read(method, params)?;
        let encoding = self.encoding;
        let Some(document) = self.documents.get_mut(uri) else {
            return Ok(Value::Null);
        };
        Ok(match query {
            Query::Completion(position) => completion::complete(document, position, encoding),
            Query::Hover(position) => hover::hover(document, position, encoding),
            Query::Definition(position) => navigate::definition(document, uri, position, encoding),
            Query::Symbols => navigate::symbols(document, encoding),
            Query::Formatting => navigate::formatting(document, encoding),
            Query::CodeAction(start, end) => actions::code_actions(document, uri, (start, end), encoding),
        })
    }

    /// Publishes the diagnostics of every document whose quiet time is over.
    pub fn publish_due(&mut self, out: &mut Vec<Value>, now: Instant) {
        let ready: Vec<String> = self
            .due
            .iter()
            .filter(|(_, due)| **due <= now)
            .map(|(uri, _)| uri.clone())
            .collect();
        for uri in ready {
            self.due.remove(&uri);
            self.publish(&uri, out);
        }
    }

    fn publish(&mut self, uri: &str, out: &mut Vec<Value>) {
        let encoding = self.encoding;
        if let Some(document) = self.documents.get_mut(uri) {
            let diagnostics = diagnostics::to_lsp(document, uri, encoding);
            out.push(notification(
                "textDocument/publishDiagnostics",
                json!({"uri": uri, "version": document.version, "diagnostics": diagnostics}),
            ));
        }
    }
}

/// A request about one document, with its params read.
enum Query {
    Completion(Position),
    Hover(Position),
    Definition(Position),
    Symbols,
    Formatting,
    CodeAction(Position, Position),
}

impl Query {
    /// Reads the params of a document request and returns the document's
    /// URI with the query. Unknown methods and invalid params are errors.
    fn read<'a>(method: &str, params: &'a Value) -> Result<(&'a str, Query), (i64, String)> {
        let needs = match method {
            "textDocument/completion" | "textDocument/hover" | "textDocument/definition" => {
                "`textDocument` and `position`"
            }
            "textDocument/codeAction" => "`textDocument` and `range`",
            "textDocument/documentSymbol" | "textDocument/formatting" => "`textDocument`",
            _ => return Err((METHOD_NOT_FOUND, format!("unsupported method `{method}`"))),
        };
        let invalid = |message: String| (INVALID_PARAMS, message);
        if !params.is_object() {
            return Err(invalid(format!(
                "`params` is {}; `{method}` needs an object with {needs}",
                described(params)
            )));
        }
        let uri_value = &params["textDocument"]["uri"];
        let uri = uri_value.as_str().ok_or_else(|| {
            invalid(format!(
                "`textDocument.uri` is {}; give the URI of an open document",
                described(uri_value)
            ))
        })?;
        let position = || Position::from_json(&params["position"], "position").map_err(invalid);
        let query = match method {
            "textDocument/completion" => Query::Completion(position()?),
            "textDocument/hover" => Query::Hover(position()?),
            "textDocument/definition" => Query::Definition(position()?),
            "textDocument/documentSymbol" => Query::Symbols,
            "textDocument/formatting" => Query::Formatting,
            _ => Query::CodeAction(
                Position::from_json(&params["range"]["start"], "range.start").map_err(invalid)?,
                Position::from_json(&params["range"]["end"], "range.end").map_err(invalid)?,
            ),
        };
        Ok((uri, query))
    }
}

fn error_response(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Returns a JSON value as text for a message, cut after 40 characters.
fn abridged(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

fn capabilities(encoding: Encoding) -> Value {
    json!({
        "capabilities": {
            "positionEncoding": if encoding == Encoding::Utf8 { "utf-8" } else { "utf-16" },
            "textDocumentSync": {"openClose": true, "change": 2, "save": {"includeText": false}},
            "completionProvider": {"triggerCharacters": [".", "<", " ", "\"", ">"]},
            "hoverProvider": true,
            "definitionProvider": true,
            "documentSymbolProvider": true,
            "documentFormattingProvider": true,
            "codeActionProvider": {"codeActionKinds": ["quickfix"]},
        },
        "serverInfo": {"name": "flowrun", "version": env!("CARGO_PKG_VERSION")},
    })
}
