//! The language server as editors run it: `flowrun lsp` as a child process,
//! spoken to in JSON-RPC over its standard input and output.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// A running `flowrun lsp` and the messages it sent that no request has
/// taken yet.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
    notifications: Vec<Value>,
}

impl Client {
    fn start(args: &[&str]) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun"))
            .arg("lsp")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flowrun lsp starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut client = Client {
            child,
            stdin,
            stdout,
            next_id: 1,
            notifications: Vec::new(),
        };
        let result = client.request(
            "initialize",
            json!({"processId": null, "rootUri": null, "capabilities": {}}),
        );
        assert_eq!(result["capabilities"]["positionEncoding"], "utf-16");
        assert_eq!(result["capabilities"]["documentFormattingProvider"], true);
        client.notify("initialized", json!({}));
        client
    }

    fn send(&mut self, message: &Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("the server reads");
        self.stdin.flush().expect("the server reads");
    }

    fn receive(&mut self) -> Value {
        let mut length = 0;
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).expect("readable") > 0,
                "the server closed its output"
            );
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("Content-Length: ") {
                length = value.parse().expect("a length");
            }
        }
        let mut body = vec![0; length];
        self.stdout.read_exact(&mut body).expect("a body");
        serde_json::from_slice(&body).expect("the body is JSON")
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let message = self.call(method, params);
        assert!(message.get("error").is_none(), "{method} failed: {message}");
        message["result"].clone()
    }

    /// Sends a request and returns the whole response, result or error.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(&json!(id))
    }

    /// Waits for the response with the id `id`.
    fn response(&mut self, id: &Value) -> Value {
        loop {
            let message = self.next_response();
            if message["id"] == *id {
                return message;
            }
        }
    }

    /// Waits for the next response, whatever its id.
    fn next_response(&mut self) -> Value {
        loop {
            let message = self.receive();
            if message.get("method").is_none() {
                return message;
            }
            self.notifications.push(message);
        }
    }

    /// Waits for the next diagnostics published for `uri`.
    fn diagnostics(&mut self, uri: &str) -> Value {
        if let Some(index) = self.notifications.iter().position(|message| {
            message["method"] == "textDocument/publishDiagnostics" && message["params"]["uri"] == uri
        }) {
            return self.notifications.remove(index)["params"].clone();
        }
        loop {
            let message = self.receive();
            if message["method"] == "textDocument/publishDiagnostics" && message["params"]["uri"] == uri {
                return message["params"].clone();
            }
            self.notifications.push(message);
        }
    }

    fn open(&mut self, uri: &str, text: &str) -> Value {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "flow", "version": 1, "text": text}}),
        );
        self.diagnostics(uri)
    }

    fn stop(mut self) {
        assert_eq!(self.request("shutdown", Value::Null), Value::Null);
        self.notify("exit", Value::Null);
        let status = self.child.wait().expect("the server exits");
        assert_eq!(status.code(), Some(0));
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lsp").join(name)
}

fn uri_of(path: &Path) -> String {
    format!("file://{}", path.display()).replace(' ', "%20")
}

fn position(text: &str, needle: &str, delta: usize) -> Value {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in the text"))
        + delta;
    let line = text[..offset].matches('\n').count();
    let line_start = text[..offset].rfind('\n').map_or(0, |index| index + 1);
    json!({"line": line, "character": text[line_start..offset].encode_utf16().count()})
}

fn labels(completion: &Value) -> Vec<String> {
    completion["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["label"].as_str().expect("a label").to_string())
        .collect()
}

#[test]
fn published_diagnostics_match_the_fixture() {
    let path = fixture("problems.flow");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let uri = uri_of(&path);
    let mut client = Client::start(&[]);
    let published = client.open(&uri, &text);
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("problems.diagnostics.json")).expect("fixture"),
    )
    .expect("fixture is JSON");
    let expected = serde_json::to_string_pretty(&expected)
        .unwrap()
        .replace("FILE_URI", &uri);
    assert_eq!(
        serde_json::to_string_pretty(&published["diagnostics"]).unwrap(),
        expected
    );
    assert_eq!(published["version"], 1);

    // The same codes and places as `flowrun check --format json`, whose
    // lines and columns count from 1.
    let output = Command::new(env!("CARGO_BIN_EXE_flowrun"))
        .args(["check", "--format", "json"])
        .arg(&path)
        .output()
        .expect("flowrun check runs");
    let checked: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let from_check: Vec<(String, u64, u64, u64, u64)> = checked
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let range = &entry["range"];
            (
                entry["code"].as_str().unwrap().to_string(),
                range["start"]["line"].as_u64().unwrap() - 1,
                range["start"]["column"].as_u64().unwrap() - 1,
                range["end"]["line"].as_u64().unwrap() - 1,
                range["end"]["column"].as_u64().unwrap() - 1,
            )
        })
        .collect();
    let from_server: Vec<(String, u64, u64, u64, u64)> = published["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|diagnostic| {
            let range = &diagnostic["range"];
            (
                diagnostic["code"].as_str().unwrap().to_string(),
                range["start"]["line"].as_u64().unwrap(),
                range["start"]["character"].as_u64().unwrap(),
                range["end"]["line"].as_u64().unwrap(),
                range["end"]["character"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(from_server, from_check);

    // Fixing the method leaves the other two problems, published again.
    client.notify(
        "textDocument/didChange",
        json!({
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [{"range": {"start": position(&text, "POTS", 0), "end": position(&text, "POTS", 4)}, "text": "POST"}],
        }),
    );
    let published = client.diagnostics(&uri);
    assert_eq!(published["version"], 2);
    let codes: Vec<&str> = published["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|diagnostic| diagnostic["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["flow::check::unknown_variable", "flow::check::payload_on_get"]
    );
    client.stop();
}

#[test]
fn code_actions_fix_a_misspelling_and_a_get_payload() {
    let path = fixture("problems.flow");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let uri = uri_of(&path);
    let mut client = Client::start(&[]);
    client.open(&uri, &text);
    let actions = client.request(
        "textDocument/codeAction",
        json!({
            "textDocument": {"uri": uri},
            "range": {"start": position(&text, "POTS", 1), "end": position(&text, "POTS", 1)},
            "context": {"diagnostics": []},
        }),
    );
    assert_eq!(actions[0]["title"], "Replace with `POST`");
    assert_eq!(actions[0]["kind"], "quickfix");
    assert_eq!(
        actions[0]["edit"]["changes"][&uri],
        json!([{"range": {"start": {"line": 5, "character": 7}, "end": {"line": 5, "character": 11}}, "newText": "POST"}])
    );
    assert_eq!(
        actions[0]["diagnostics"][0]["code"],
        "flow::check::unknown_method"
    );

    let get_line = position(&text, "http GET", 0);
    let actions = client.request(
        "textDocument/codeAction",
        json!({
            "textDocument": {"uri": uri},
            "range": {"start": get_line, "end": position(&text, "{ \"a\": 1 }", 3)},
            "context": {"diagnostics": []},
        }),
    );
    let titles: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|action| action["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["Replace with `api`", "Remove the payload from the GET request"]
    );
    assert_eq!(
        actions[0]["edit"]["changes"][&uri],
        json!([{"range": {"start": {"line": 11, "character": 19}, "end": {"line": 11, "character": 23}}, "newText": "api"}])
    );
    assert_eq!(
        actions[1]["edit"]["changes"][&uri],
        json!([{"range": {"start": {"line": 11, "character": 33}, "end": {"line": 11, "character": 49}}, "newText": ""}])
    );
    client.stop();
}

#[test]
fn completion_offers_what_fits_the_cursor() {
    let text = "let api = \"http://127.0.0.1:9\"\nlet token_name = \"x\"\nstep \"A\" {\n  http POST \"<<vars.>>\" json { \"n\": \"<<secret.KEY>>\" }\n  \n}\n\n";
    let uri = "untitled:completion.flow";
    let mut client = Client::start(&[]);
    client.open(uri, text);
    let at = |client: &mut Client, position: Value| {
        labels(&client.request(
            "textDocument/completion",
            json!({"textDocument": {"uri": uri}, "position": position}),
        ))
    };
    let vars = at(&mut client, position(text, "<<vars.", 7));
    assert_eq!(vars, ["api", "token_name"]);
    let roots = at(&mut client, position(text, "<<vars.", 2));
    assert_eq!(
        roots,
        [
            "entity",
            "vars",
            "execution",
            "secret",
            "default",
            "upper",
            "lower",
            "json",
            "date"
        ]
    );
    let in_step = at(&mut client, json!({"line": 4, "character": 2}));
    assert!(in_step.contains(&"http".to_string()), "{in_step:?}");
    assert!(in_step.contains(&"timeout".to_string()), "{in_step:?}");
    assert!(in_step.contains(&"http json".to_string()), "{in_step:?}");
    let top = at(&mut client, json!({"line": 6, "character": 0}));
    assert!(top.contains(&"step http".to_string()), "{top:?}");
    assert!(top.contains(&"workflow".to_string()), "{top:?}");
    assert!(!top.contains(&"timeout".to_string()), "{top:?}");

    // Typing an action line: methods, then payload kinds.
    let typed = text.replace("  \n}", "  http \n}");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": typed}]}),
    );
    let methods = at(&mut client, json!({"line": 4, "character": 7}));
    assert_eq!(methods, ["GET", "POST", "PUT", "PATCH", "DELETE"]);
    let typed = text.replace("  \n}", "  http PUT \"http://x.test/\" \n}");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 3}, "contentChanges": [{"text": typed}]}),
    );
    let kinds = at(&mut client, json!({"line": 4, "character": 29}));
    assert_eq!(kinds, ["json", "xml", "xhtml", "javascript", "html", "headers"]);
    let typed = text.replace("  \n}", "  http PUT \"http://x.test/\" \"text/\n}");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 4}, "contentChanges": [{"text": typed}]}),
    );
    let types = at(&mut client, json!({"line": 4, "character": 35}));
    assert!(types.contains(&"text/csv".to_string()), "{types:?}");
    client.stop();
}

#[test]
fn hover_definition_symbols_and_formatting() {
    let text =
        "let api = \"http://127.0.0.1:9\"\nstep   \"A\" {\nhttp GET \"<<vars.api>>/<<execution.id>>\"\n}\n";
    let uri = "untitled:nav.flow";
    let mut client = Client::start(&[]);
    client.open(uri, text);
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": position(text, "vars.api", 6)}),
    );
    assert_eq!(
        hover["contents"]["value"],
        "```flow\nlet api = \"http://127.0.0.1:9\"\n```\n\nVariable (string), declared on line 1."
    );
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": position(text, "http GET", 1)}),
    );
    assert_eq!(
        hover["contents"]["value"],
        "`http METHOD \"URL\" [PAYLOAD] [headers { ... }]`: sends one HTTP request."
    );
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": position(text, "execution.id", 11)}),
    );
    assert_eq!(
        hover["contents"]["value"],
        "`execution.id`: the execution id: a new UUID per run, or `--execution-id`"
    );

    let definition = client.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": uri}, "position": position(text, "vars.api", 6)}),
    );
    assert_eq!(
        definition,
        json!({"uri": uri, "range": {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 7}}})
    );

    let symbols = client.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": uri}}),
    );
    assert_eq!(symbols[0]["name"], "api");
    assert_eq!(symbols[0]["kind"], 13);
    assert_eq!(symbols[1]["name"], "A");
    assert_eq!(symbols[1]["kind"], 12);
    assert_eq!(
        symbols[1]["children"][0]["name"],
        "GET \"<<vars.api>>/<<execution.id>>\""
    );

    let edits = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(
        edits,
        json!([{
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 4, "character": 0}},
            "newText": "let api = \"http://127.0.0.1:9\"\nstep \"A\" {\n  http GET \"<<vars.api>>/<<execution.id>>\"\n}\n",
        }])
    );
    client.stop();
}

#[test]
fn a_half_typed_file_never_stops_the_server() {
    let full = "workflow \"W\"\nlet api = \"http://127.0.0.1:9\"\nstep \"A\" {\n  http POST \"<<vars.api>>/<<entity.id>>\" json {\n    \"a\": [<<entity.n>>, \"<<default entity.x \"y\">>\"]\n  } headers { \"A\": \"b\" }\n  save response.json.id -> entity.id\n}\n";
    let uri = "untitled:typing.flow";
    let mut client = Client::start(&[]);
    client.open(uri, "");
    let mut typed = String::new();
    for (version, c) in full.chars().enumerate() {
        typed.push(c);
        client.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version + 2}, "contentChanges": [{"text": typed}]}),
        );
        if version % 7 == 0 {
            let end = position(&typed, &typed[typed.len() - c.len_utf8()..], c.len_utf8());
            let end = json!({"line": typed.matches('\n').count(), "character": end["character"]});
            for method in [
                "textDocument/completion",
                "textDocument/hover",
                "textDocument/definition",
            ] {
                client.request(method, json!({"textDocument": {"uri": uri}, "position": end}));
            }
            client.request(
                "textDocument/documentSymbol",
                json!({"textDocument": {"uri": uri}}),
            );
            client.request(
                "textDocument/formatting",
                json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
            );
        }
    }
    let published = loop {
        let published = client.diagnostics(uri);
        if published["version"] == json!(full.chars().count() + 1) {
            break published;
        }
    };
    assert_eq!(published["diagnostics"], json!([]));
    client.stop();
}

#[test]
fn the_entity_schema_drives_checks_completion_and_hover() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    std::fs::copy(
        fixture("claim.schema.json"),
        folder.path().join("claim.schema.json"),
    )
    .expect("copied");
    let path = folder.path().join("claim.flow");
    let text = "entity schema \"claim.schema.json\"\nstep \"A\" {\n  http GET \"http://127.0.0.1:9/<<entity.policy.idd>>/<<entity.policy>>\" headers { \"T\": \"<<entity.tags>>\" }\n  save response.status -> entity.status_code\n}\n";
    std::fs::write(&path, text).expect("written");
    let uri = uri_of(&path);
    let mut client = Client::start(&[]);
    let published = client.open(&uri, text);
    let found: Vec<(String, String)> = published["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|diagnostic| {
            (
                diagnostic["code"].as_str().unwrap().to_string(),
                diagnostic["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("flow::check::unknown_entity_field".to_string(), "`idd` is not a field of `entity.policy` in the entity schema\nhelp: did you mean `id`?".to_string()),
            ("flow::check::entity_type_mismatch".to_string(), "`entity.policy` is an object, which cannot go into a URL\nhelp: use one of its fields, such as `entity.policy.FIELD`, or `json entity.policy` to send it as JSON text".to_string()),
            ("flow::check::entity_type_mismatch".to_string(), "`entity.tags` is an array, which cannot go into a header value\nhelp: use one of its elements, such as `entity.tags[0]`, or `json entity.tags` to send it as JSON text".to_string()),
            ("flow::check::entity_write_type".to_string(), "this writes an integer to `entity.status_code`, which is a string in the entity schema\nhelp: write to a field of the same type, or change the field's type in the entity schema".to_string()),
        ]
    );
    let completion = client.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": position(text, "entity.policy.idd", 14)}),
    );
    let fields = labels(&completion);
    assert_eq!(&fields[..2], ["holder", "id"]);
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": position(text, "entity.policy>>", 9)}),
    );
    assert!(
        hover["contents"]["value"]
            .as_str()
            .unwrap()
            .starts_with("`entity.policy`: `object`"),
        "{hover}"
    );

    // A fix in the file replaces the schema's findings.
    let fixed = text.replace("entity.policy.idd", "entity.policy.id");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": fixed}]}),
    );
    let published = client.diagnostics(&uri);
    assert_eq!(published["diagnostics"].as_array().unwrap().len(), 3);
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": position(&fixed, "entity.policy.id", 15)}),
    );
    assert_eq!(
        hover["contents"]["value"],
        format!(
            "`entity.policy.id`: `string`\n\nExample: `\"P-77\"`\n\nFrom `{}`.",
            folder.path().join("claim.schema.json").display()
        )
    );
    client.stop();
}

#[test]
fn code_action_removes_a_second_content_type() {
    let text = "step \"A\" {\n  http POST \"http://127.0.0.1:9/a\" json { \"a\": 1 } headers {\n    \"Content-Type\": \"text/plain\",\n    \"X-Id\": \"1\"\n  }\n}\n";
    let uri = "untitled:content-type.flow";
    let mut client = Client::start(&[]);
    let published = client.open(uri, text);
    assert_eq!(
        published["diagnostics"][0]["code"],
        "flow::check::duplicate_content_type"
    );
    assert_eq!(published["diagnostics"][0]["severity"], 2);
    let actions = client.request(
        "textDocument/codeAction",
        json!({
            "textDocument": {"uri": uri},
            "range": {"start": {"line": 2, "character": 6}, "end": {"line": 2, "character": 6}},
            "context": {"diagnostics": []},
        }),
    );
    assert_eq!(actions[0]["title"], "Remove the Content-Type header");
    assert_eq!(
        actions[0]["edit"]["changes"][uri],
        json!([{"range": {"start": {"line": 2, "character": 0}, "end": {"line": 3, "character": 0}}, "newText": ""}])
    );
    client.stop();
}

#[test]
fn symbols_include_steps_inside_conditions() {
    let text = "if <<entity.amount>> > 5000 {\n  step \"Review\" {\n    http POST \"http://127.0.0.1:9/r\" json { \"a\": 1 }\n  }\n} else {\n  step \"Send\" {\n    http GET \"http://127.0.0.1:9/s\"\n  }\n}\n";
    let uri = "untitled:branches.flow";
    let mut client = Client::start(&[]);
    client.open(uri, text);
    let symbols = client.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": uri}}),
    );
    assert_eq!(symbols[0]["name"], "if <<entity.amount>> > 5000");
    assert_eq!(symbols[0]["kind"], 3);
    let children: Vec<&str> = symbols[0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|child| child["name"].as_str().unwrap())
        .collect();
    assert_eq!(children, ["Review", "Send"]);
    client.stop();
}

#[test]
fn byte_order_mark_counts_as_one_character() {
    let mut client = Client::start(&[]);

    let uri = "untitled:bom-problem.flow";
    let published = client.open(uri, "\u{FEFF}step \"A\" { http POTS \"http://127.0.0.1:9/\" }\n");
    let diagnostics = published["diagnostics"].as_array().expect("diagnostics");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0]["code"], "flow::check::unknown_method");
    assert_eq!(
        diagnostics[0]["range"],
        json!({"start": {"line": 0, "character": 17}, "end": {"line": 0, "character": 21}})
    );

    let text = "\u{FEFF}let api = \"http://127.0.0.1:9\"\nstep   \"A\" {\nhttp GET \"<<vars.api>>/\"\n}\n";
    let uri = "untitled:bom.flow";
    let published = client.open(uri, text);
    assert_eq!(published["diagnostics"], json!([]));
    let definition = client.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": uri}, "position": position(text, "vars.api", 6)}),
    );
    assert_eq!(
        definition,
        json!({"uri": uri, "range": {"start": {"line": 0, "character": 5}, "end": {"line": 0, "character": 8}}})
    );
    let edits = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(
        edits,
        json!([{
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 4, "character": 0}},
            "newText": "\u{FEFF}let api = \"http://127.0.0.1:9\"\nstep \"A\" {\n  http GET \"<<vars.api>>/\"\n}\n",
        }])
    );
    client.stop();
}

/// Kills the server when the test has not finished within `limit`, so that
/// a server that blocks fails the test instead of hanging it. Dropping the
/// returned sender ends the watch.
fn watchdog(client: &Client, limit: std::time::Duration) -> std::sync::mpsc::Sender<()> {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let pid = client.child.id().to_string();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    done
}

#[test]
fn server_survives_fifo_schema_and_deep_nesting() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let status = Command::new("mkfifo")
        .arg(folder.path().join("fifo.json"))
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let mut client = Client::start(&[]);
    let _watch = watchdog(&client, std::time::Duration::from_secs(60));

    let path = folder.path().join("pipe.flow");
    let text = "entity schema \"fifo.json\"\nstep \"A\" {\n  http GET \"http://127.0.0.1:9/\"\n}\n";
    let published = client.open(&uri_of(&path), text);
    let diagnostics = published["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 1, "{published}");
    assert_eq!(diagnostics[0]["code"], "flow::check::invalid_entity_schema");
    assert_eq!(
        diagnostics[0]["range"],
        json!({"start": {"line": 0, "character": 14}, "end": {"line": 0, "character": 25}})
    );
    assert!(
        diagnostics[0]["message"].as_str().unwrap().starts_with(&format!(
            "invalid entity schema: cannot read `{}`: it is a named pipe (FIFO), not a regular file",
            folder.path().join("fifo.json").display()
        )),
        "{published}"
    );

    let deep = folder.path().join("deep.flow");
    let text = format!(
        "{}set entity.x = 1\n{}",
        "if <<entity.amount>> > 1 {\n".repeat(5000),
        "}\n".repeat(5000)
    );
    let uri = uri_of(&deep);
    let published = client.open(&uri, &text);
    let diagnostics = published["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 1, "{published}");
    assert_eq!(diagnostics[0]["code"], "flow::syntax::unexpected");
    assert_eq!(
        diagnostics[0]["range"],
        json!({"start": {"line": 64, "character": 0}, "end": {"line": 64, "character": 2}})
    );
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": {"line": 4000, "character": 5}}),
    );
    assert_eq!(
        hover,
        json!({
            "contents": {"kind": "markdown", "value": "`entity.amount`: a field of the entity"},
            "range": {"start": {"line": 4000, "character": 5}, "end": {"line": 4000, "character": 18}},
        })
    );
    let formatting = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(formatting, Value::Null);
    client.stop();
}

/// The output of a `flowrun lsp` that read a whole input and then the end
/// of its standard input.
struct Session {
    /// Responses by their `id`, in the order sent.
    responses: Vec<Value>,
    stderr: String,
    code: Option<i32>,
}

/// Runs `flowrun lsp` on raw input bytes, closes its standard input and
/// collects everything it wrote. A server that stops early still ends the
/// session, so a test gets what it answered instead of hanging.
fn session(input: Vec<u8>) -> Session {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun"))
        .arg("lsp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowrun lsp starts");

    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        // A server that stopped reading makes this fail; the output shows why.
        let _ = stdin.write_all(&input);
    });

    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout)
        .expect("readable");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("readable");
    writer.join().expect("the writer ends");
    let code = child.wait().expect("the server exits").code();

    let mut responses = Vec::new();
    let mut rest = &stdout[..];
    while !rest.is_empty() {
        let header_end = rest
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("a header");
        let header = std::str::from_utf8(&rest[..header_end]).expect("text");
        let length: usize = header
            .strip_prefix("Content-Length: ")
            .expect("a length")
            .parse()
            .expect("a number");
        let body = &rest[header_end + 4..header_end + 4 + length];
        let message: Value = serde_json::from_slice(body).expect("the body is JSON");
        if message.get("method").is_none() {
            responses.push(message);
        }
        rest = &rest[header_end + 4 + length..];
    }
    Session {
        responses,
        stderr,
        code,
    }
}

fn framed(message: &Value) -> Vec<u8> {
    let body = message.to_string();
    format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn symbols_request(id: i64, uri: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "textDocument/documentSymbol", "params": {"textDocument": {"uri": uri}}})
}

#[test]
fn unreadable_messages_are_skipped_and_logged() {
    let uri = "untitled:framing.flow";
    let mut input = Vec::new();
    input.extend(framed(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}),
    ));
    input.extend(framed(
        &json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}),
    ));
    input.extend(framed(
        &json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": uri, "languageId": "flow", "version": 1, "text": "let api = \"x\"\n"},
        }}),
    ));
    input.extend(b"{}");
    input.extend(framed(&symbols_request(2, uri)));
    input.extend(b"Content-Length: -1\r\n\r\n{}");
    input.extend(framed(&symbols_request(3, uri)));
    input.extend(b"Content-Length: 4294967296\r\n\r\n");
    input.extend(framed(&symbols_request(4, uri)));
    input.extend(b"Content-Length: 99999999999999\r\n\r\n{\"jsonrpc\":");
    input.extend(framed(&symbols_request(5, uri)));
    input.extend(framed(&json!({"jsonrpc": "2.0", "id": 6, "method": "shutdown"})));
    input.extend(framed(&json!({"jsonrpc": "2.0", "method": "exit"})));

    let session = session(input);
    let symbols = json!([{
        "name": "api",
        "kind": 13,
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 13}},
        "selectionRange": {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 7}},
    }]);
    let ids: Vec<&Value> = session.responses.iter().map(|response| &response["id"]).collect();
    assert_eq!(
        ids,
        [&json!(1), &json!(2), &json!(3), &json!(4), &json!(5), &json!(6)]
    );
    for response in &session.responses[1..5] {
        assert_eq!(response["result"], symbols, "{response}");
    }
    assert_eq!(session.responses[5]["result"], Value::Null);
    assert_eq!(
        session.stderr,
        "flowrun lsp: skipped 2 bytes before a Content-Length header: `{}`\n\
         flowrun lsp: skipped a message whose Content-Length `-1` is not a number of bytes\n\
         flowrun lsp: skipped a message of 4294967296 bytes, over the limit of 67108864 bytes (64 MiB)\n\
         flowrun lsp: skipped a message of 99999999999999 bytes, over the limit of 67108864 bytes (64 MiB)\n"
    );
    assert_eq!(session.code, Some(0));
}

#[test]
fn change_with_invalid_range_is_skipped_and_logged() {
    let uri = "untitled:bad-change.flow";
    let mut input = Vec::new();
    input.extend(framed(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}),
    ));
    input.extend(framed(
        &json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": uri, "languageId": "flow", "version": 1, "text": "let api = \"x\"\n"},
        }}),
    ));
    input.extend(framed(&json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
        "textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"range": {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 0}}, "text": "let b = 1\n"}],
    }})));
    input.extend(framed(&symbols_request(2, uri)));
    input.extend(framed(&json!({"jsonrpc": "2.0", "id": 3, "method": "shutdown"})));
    input.extend(framed(&json!({"jsonrpc": "2.0", "method": "exit"})));

    let session = session(input);
    let names: Vec<&Value> = session.responses[1]["result"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|symbol| &symbol["name"])
        .collect();
    assert_eq!(names, [&json!("api")]);
    assert_eq!(
        session.stderr,
        "flowrun lsp: skipped a change to untitled:bad-change.flow with an invalid range: \
         `range.start.line` is `-1`; give a whole number from 0 to 2147483647\n"
    );
    assert_eq!(session.code, Some(0));
}

#[test]
fn position_past_crlf_line_end_clamps_before_cr() {
    let text = "step   \"a\" {\r\nhttp GET \"http://127.0.0.1:9/\"\r\n}\r\n";
    let uri = "untitled:crlf.flow";
    let mut client = Client::start(&[]);
    client.open(uri, text);
    client.notify(
        "textDocument/didChange",
        json!({
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [{"range": {"start": {"line": 0, "character": 50}, "end": {"line": 0, "character": 50}}, "text": "# X"}],
        }),
    );
    let published = client.diagnostics(uri);
    assert_eq!(published["version"], 2);
    assert_eq!(published["diagnostics"], json!([]));
    let edits = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(
        edits,
        json!([{
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 3, "character": 0}},
            "newText": "step \"a\" { # X\r\n  http GET \"http://127.0.0.1:9/\"\r\n}\r\n",
        }])
    );

    // A range that ends past the line end replaces up to the CR, not the CRLF.
    client.notify(
        "textDocument/didChange",
        json!({
            "textDocument": {"uri": uri, "version": 3},
            "contentChanges": [{"range": {"start": {"line": 0, "character": 12}, "end": {"line": 0, "character": 99}}, "text": ""}],
        }),
    );
    let edits = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(
        edits[0]["newText"],
        "step \"a\" {\r\n  http GET \"http://127.0.0.1:9/\"\r\n}\r\n"
    );
    client.stop();
}

#[test]
fn lone_cr_ends_a_line() {
    let mut client = Client::start(&[]);

    // The grammar ends the comment at the CR, so `x` is a setting on line 2.
    let uri = "untitled:cr-comment.flow";
    let published = client.open(
        uri,
        "let a = \"x\"\r# c\r  x\nstep \"a\" {\n  http GET \"http://127.0.0.1:9/\"\n}\n",
    );
    let diagnostics = published["diagnostics"].as_array().expect("diagnostics");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0]["code"], "flow::check::unknown_setting");
    assert_eq!(
        diagnostics[0]["range"],
        json!({"start": {"line": 2, "character": 2}, "end": {"line": 2, "character": 3}})
    );

    let text = "# c\rlet b = \"y\"\rstep \"a\" {\r  http GET \"http://127.0.0.1:9/<<vars.b>>\"\r}\r";
    let uri = "untitled:cr-lines.flow";
    let published = client.open(uri, text);
    assert_eq!(published["diagnostics"], json!([]));
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": uri}, "position": {"line": 3, "character": 39}}),
    );
    assert_eq!(
        hover,
        json!({
            "contents": {"kind": "markdown", "value": "```flow\nlet b = \"y\"\n```\n\nVariable (string), declared on line 2."},
            "range": {"start": {"line": 3, "character": 33}, "end": {"line": 3, "character": 39}},
        })
    );
    let definition = client.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": uri}, "position": {"line": 3, "character": 39}}),
    );
    assert_eq!(
        definition,
        json!({"uri": uri, "range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 5}}})
    );
    let completion = client.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 3, "character": 39}}),
    );
    assert_eq!(labels(&completion), ["b"]);
    client.stop();
}

#[test]
fn second_initialize_is_rejected() {
    let mut client = Client::start(&[]);
    let response = client.call(
        "initialize",
        json!({"processId": null, "capabilities": {"general": {"positionEncodings": ["utf-8"]}}}),
    );
    assert_eq!(
        response["error"],
        json!({"code": -32600, "message": "the server is already initialized; send `initialize` once per session"})
    );
    assert!(response.get("result").is_none(), "{response}");

    // Positions still count UTF-16 code units: the emoji is two.
    let published = client.open(
        "untitled:encoding.flow",
        "step \"😀\" { http POTS \"http://127.0.0.1:9/\" }\n",
    );
    assert_eq!(published["diagnostics"][0]["code"], "flow::check::unknown_method");
    assert_eq!(
        published["diagnostics"][0]["range"],
        json!({"start": {"line": 0, "character": 17}, "end": {"line": 0, "character": 21}})
    );
    client.stop();
}

#[test]
fn invalid_params_get_an_error() {
    let uri = "untitled:params.flow";
    let mut client = Client::start(&[]);
    client.open(uri, "let a = \"x\"\n");
    let limit = "give a whole number from 0 to 2147483647";
    let cases = [
        (
            "textDocument/completion",
            json!({"textDocument": {"uri": uri}, "position": {"line": -1, "character": 0}}),
            format!("`position.line` is `-1`; {limit}"),
        ),
        (
            "textDocument/completion",
            json!({"textDocument": {"uri": uri}, "position": {"line": "a", "character": 0}}),
            format!("`position.line` is `\"a\"`; {limit}"),
        ),
        (
            "textDocument/completion",
            json!({"textDocument": {"uri": uri}, "position": {"line": 9007199254740992_u64, "character": 0}}),
            format!("`position.line` is `9007199254740992`; {limit}"),
        ),
        (
            "textDocument/definition",
            json!({"textDocument": {"uri": uri}, "position": {"line": 0}}),
            format!("`position.character` is missing; {limit}"),
        ),
        (
            "textDocument/completion",
            json!({"textDocument": {"uri": uri}}),
            "`position` is missing; give an object such as {\"line\": 0, \"character\": 0}".to_string(),
        ),
        (
            "textDocument/hover",
            Value::Null,
            "`params` is missing; `textDocument/hover` needs an object with `textDocument` and `position`"
                .to_string(),
        ),
        (
            "textDocument/formatting",
            json!({"options": {}}),
            "`textDocument.uri` is missing; give the URI of an open document".to_string(),
        ),
        (
            "textDocument/codeAction",
            json!({"textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": -3}}}),
            format!("`range.end.character` is `-3`; {limit}"),
        ),
    ];
    for (method, params, message) in cases {
        let response = client.call(method, params);
        assert_eq!(
            response["error"],
            json!({"code": -32602, "message": message}),
            "{method}"
        );
    }

    // A line past the last one means the end of the text.
    let completion = client.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 9999, "character": 0}}),
    );
    assert!(labels(&completion).contains(&"step http".to_string()));
    client.stop();
}

#[test]
fn invalid_ids_get_null_id_error() {
    let mut client = Client::start(&[]);
    for (id, written) in [
        (json!(1.5), "`1.5`"),
        (json!({"x": 1}), "`{\"x\":1}`"),
        (Value::Null, "missing"),
    ] {
        client.send(&json!({"jsonrpc": "2.0", "id": id, "method": "shutdown"}));
        let response = client.next_response();
        assert_eq!(
            response,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": format!(
                "the request id {written} is not an integer or a string; give the request an integer or string id"
            )}})
        );
    }
    client.send(&json!([1, 2]));
    let response = client.next_response();
    assert_eq!(
        response["error"],
        json!({"code": -32600, "message": "the message `[1,2]` is not a JSON-RPC object; send an object with `jsonrpc`, `method` and, for a request, `id`"})
    );
    client.send(&json!({"jsonrpc": "2.0", "id": 70, "method": 5}));
    let response = client.next_response();
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "id": 70, "error": {"code": -32600, "message": "the method `5` is not a string; name the method, such as \"textDocument/hover\""}})
    );

    // None of them shut the server down.
    let hover = client.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": "untitled:none.flow"}, "position": {"line": 0, "character": 0}}),
    );
    assert_eq!(hover, Value::Null);
    client.stop();
}
