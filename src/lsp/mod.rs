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
use transport::ReadError;

/// How long a document must stay unchanged before its diagnostics are
/// published again.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_REQUEST: i64 = -32600;
const SERVER_NOT_INITIALIZED: i64 = -32002;

/// Serves the language server protocol over standard input and output
/// and returns the exit code: 0 after `shutdown` and `exit`, 1 otherwise.
pub fn serve(entity_schema: Option<&Path>) -> u8 {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(io::stdin().lock());
        loop {
            match transport::read_message(&mut reader) {
                Ok(Some(message)) => {
                    if sender.send(Some(message)).is_err() {
                        return;
                    }
                }
                Ok(None) | Err(ReadError::Closed(_)) => {
                    let _ = sender.send(None);
                    return;
                }
                Err(ReadError::NotJson(error)) => {
                    crate::cli::output::eprint_line(&format!("flowrun lsp: message is not JSON: {error}"));
                }
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
        let method = message["method"].as_str().unwrap_or("");
        let id = message.get("id").cloned();
        let params = &message["params"];
        let Some(id) = id else {
            return self.notification(method, params, out);
        };
        if method.is_empty() {
            // A response to a request of ours; the server sends none.
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
            Err((code, message)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            }
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
                        document.apply_change(change, encoding);
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
        let uri = params["textDocument"]["uri"].as_str().unwrap_or("");
        let encoding = self.encoding;
        let Some(document) = self.documents.get_mut(uri) else {
            return match method {
                "textDocument/completion"
                | "textDocument/hover"
                | "textDocument/definition"
                | "textDocument/documentSymbol"
                | "textDocument/formatting"
                | "textDocument/codeAction" => Ok(Value::Null),
                _ => Err((METHOD_NOT_FOUND, format!("unsupported method `{method}`"))),
            };
        };
        let position = &params["position"];
        Ok(match method {
            "textDocument/completion" => completion::complete(document, position, encoding),
            "textDocument/hover" => hover::hover(document, position, encoding),
            "textDocument/definition" => navigate::definition(document, uri, position, encoding),
            "textDocument/documentSymbol" => navigate::symbols(document, encoding),
            "textDocument/formatting" => navigate::formatting(document, encoding),
            "textDocument/codeAction" => actions::code_actions(document, uri, params, encoding),
            _ => return Err((METHOD_NOT_FOUND, format!("unsupported method `{method}`"))),
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
