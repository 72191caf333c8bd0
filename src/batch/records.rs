//! Reads the records of a batch one at a time: JSON Lines, a JSON array, or
//! CSV with a header row. A thread reads and parses ahead of the executions
//! into a bounded channel, so memory stays flat however long the input is.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::diagnostic::{Code, Diagnostic};
use crate::value::{nesting, MAX_NESTING};

/// About how many parsed records wait for an execution at most.
const READ_AHEAD: usize = 256;

/// How many records go to the batch in one message at most. A message per
/// record would wake the reading thread after every record taken.
const CHUNK: usize = 64;

/// The layout of the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line; blank lines are skipped.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
    /// A header row, then one record per row.
    Csv,
}

/// One record of the input, numbered from 1 in input order.
#[derive(Debug)]
pub struct Record {
    pub number: u64,
    /// The line of the input the record starts on, when it is known.
    pub line: Option<u64>,
    /// The entity, or why this record cannot be read.
    pub entity: Result<Value, Diagnostic>,
}

/// Where the records come from and how to read them.
pub struct Source {
    pub reader: Box<dyn Read + Send>,
    /// How messages name the input: `records.jsonl` or `standard input`.
    pub shown: String,
    pub format: Format,
    /// With CSV, turn cells that are JSON numbers or `true`/`false` into
    /// numbers and booleans; otherwise every cell is a string.
    pub csv_types: bool,
    /// Leave out this many records at the start.
    pub skip: u64,
}

/// Opens `path` (or standard input for `-`) and works out its format: the
/// one given, else CSV for a `.csv` file, else a JSON array when the first
/// character is `[`, else JSON Lines.
pub fn open(path: &str, format: Option<Format>, csv_types: bool, skip: u64) -> Result<Source, Diagnostic> {
    let (reader, shown): (Box<dyn Read + Send>, String) = if path == "-" {
        (Box::new(std::io::stdin()), "standard input".to_string())
    } else {
        let file = std::fs::File::open(path).map_err(|error| {
            Diagnostic::error(
                Code::InvalidRecord,
                format!("cannot read the records `{path}`: {error}"),
            )
            .with_help("check the path given to --entities, or pass `-` to read standard input")
        })?;
        (Box::new(file), format!("`{path}`"))
    };
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let format = match format {
        Some(format) => format,
        None if Path::new(path)
            .extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("csv")) =>
        {
            Format::Csv
        }
        None => {
            let first = reader
                .fill_buf()
                .map_err(|error| read_error(&shown, &error))?
                .iter()
                .copied()
                .find(|byte| !byte.is_ascii_whitespace() && !matches!(byte, 0xEF | 0xBB | 0xBF));
            if first == Some(b'[') {
                Format::JsonArray
            } else {
                Format::JsonLines
            }
        }
    };
    if format == Format::Csv {
        let peeked = reader.fill_buf().map_err(|error| read_error(&shown, &error))?;
        check_csv_header(peeked, &shown)?;
    }
    Ok(Source {
        reader: Box::new(reader),
        shown,
        format,
        csv_types,
        skip,
    })
}

/// Reports an error that ends the reading at record `number`.
fn read_stopped(shown: &str, number: u64, error: &std::io::Error) -> Diagnostic {
    Diagnostic::error(
        Code::InvalidRecord,
        format!(
            "cannot read the records from {shown}: {error}; reading stopped at record {number}, and the rest of {shown} was not read"
        ),
    )
    .with_help("check that the input is readable, then run the rest with --skip")
}

fn read_error(shown: &str, error: &std::io::Error) -> Diagnostic {
    Diagnostic::error(
        Code::InvalidRecord,
        format!("cannot read the records from {shown}: {error}"),
    )
    .with_help("check that the input is readable and UTF-8")
}

/// Reads `source` on its own thread and returns the records in order, in
/// chunks. A chunk goes out when it is full, and before each read of the
/// input, which may block: a record never waits for input after it. The
/// thread stops at the end of the input, at an error that ends it, or when
/// the receiver is dropped.
pub fn spawn(source: Source) -> mpsc::Receiver<Vec<Record>> {
    let (sender, receiver) = mpsc::channel(READ_AHEAD / CHUNK - 1);
    std::thread::spawn(move || {
        let skip = source.skip;
        let chunk = Arc::new(Mutex::new(Chunk {
            records: Vec::with_capacity(CHUNK),
            sender,
            open: true,
        }));
        let reader = Box::new(SendBeforeRead {
            inner: source.reader,
            chunk: chunk.clone(),
        });
        let mut send = |record: Record| {
            if record.number <= skip {
                return true;
            }
            let mut chunk = chunk.lock().unwrap_or_else(|poison| poison.into_inner());
            chunk.records.push(record);
            if chunk.records.len() >= CHUNK {
                chunk.send()
            } else {
                chunk.open
            }
        };
        match source.format {
            Format::JsonLines => read_lines(reader, &source.shown, &mut send),
            Format::JsonArray => read_array(reader, &source.shown, &mut send),
            Format::Csv => read_csv(reader, &source.shown, source.csv_types, &mut send),
        }
        chunk.lock().unwrap_or_else(|poison| poison.into_inner()).send();
    });
    receiver
}

/// The records read but not yet sent.
struct Chunk {
    records: Vec<Record>,
    sender: mpsc::Sender<Vec<Record>>,
    /// Cleared once the receiver is gone.
    open: bool,
}

impl Chunk {
    /// Sends the records held, if any, and returns whether the receiver
    /// still takes records.
    fn send(&mut self) -> bool {
        if self.open && !self.records.is_empty() {
            let records = std::mem::replace(&mut self.records, Vec::with_capacity(CHUNK));
            self.open = self.sender.blocking_send(records).is_ok();
        }
        self.open
    }
}

/// The input of the reading thread, which sends the records parsed so far
/// before each read.
struct SendBeforeRead {
    inner: Box<dyn Read + Send>,
    chunk: Arc<Mutex<Chunk>>,
}

impl Read for SendBeforeRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.chunk
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .send();
        self.inner.read(buf)
    }
}

fn too_deep(shown: &str, place: &str) -> Diagnostic {
    Diagnostic::error(
        Code::InvalidRecord,
        format!("{place} of {shown} is nested more than {MAX_NESTING} levels deep"),
    )
    .with_help(format!(
        "flatten the record; flowrun stores entities nested up to {MAX_NESTING} levels"
    ))
}

fn not_object(shown: &str, place: &str, value: &Value) -> Diagnostic {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Diagnostic::error(
        Code::InvalidRecord,
        format!("{place} of {shown} is {kind}, not a JSON object"),
    )
    .with_help("each record is one JSON object, such as {\"id\": \"C-1\"}")
}

fn read_lines(reader: Box<dyn Read + Send>, shown: &str, send: &mut dyn FnMut(Record) -> bool) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut bytes = Vec::new();
    let mut line_number = 0u64;
    let mut number = 0u64;
    loop {
        bytes.clear();
        line_number += 1;
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                number += 1;
                send(Record {
                    number,
                    line: Some(line_number),
                    entity: Err(read_stopped(shown, number, &error)),
                });
                return;
            }
        }
        // A line that is not UTF-8 fails alone, like one that is not JSON.
        let text = match std::str::from_utf8(&bytes) {
            Ok(line) => record_text(line),
            Err(error) => {
                number += 1;
                let entity = Err(Diagnostic::error(
                    Code::InvalidRecord,
                    format!(
                        "line {line_number} of {shown} is not UTF-8: its byte {} is not part of a UTF-8 character",
                        error.valid_up_to() + 1
                    ),
                )
                .with_help("save the records as UTF-8; JSON Lines holds one JSON object per line"));
                let line = Some(line_number);
                if !send(Record { number, line, entity }) {
                    return;
                }
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        number += 1;
        let entity = match serde_json::from_str::<Value>(text) {
            Ok(value) if nesting(&value) > MAX_NESTING => {
                Err(too_deep(shown, &format!("line {line_number}")))
            }
            Ok(value) if value.is_object() => Ok(value),
            Ok(value) => Err(not_object(shown, &format!("line {line_number}"), &value)),
            Err(error) if error.to_string().starts_with("recursion limit exceeded") => {
                Err(too_deep(shown, &format!("line {line_number}")))
            }
            Err(error) => Err(Diagnostic::error(
                Code::InvalidRecord,
                format!(
                    "line {line_number} of {shown} is not valid JSON: {} at column {}",
                    strip_position(&error.to_string()),
                    error.column()
                ),
            )
            .with_help("JSON Lines holds one JSON object per line")),
        };
        let line = Some(line_number);
        if !send(Record { number, line, entity }) {
            return;
        }
    }
}

/// Returns a JSON Lines line without a byte order mark and the white space
/// around it. The result is empty for a blank line, which is not a record.
fn record_text(line: &str) -> &str {
    line.strip_prefix('\u{FEFF}').unwrap_or(line).trim()
}

/// Counts the records of a JSON Lines or CSV input as [`spawn`] reads them,
/// skipped ones included: blank lines are not records, whether they end with
/// LF or CRLF, and a CSV record may span lines. An error that ends the
/// reading counts as one last record, as the reader sends it as one. Returns
/// `None` for a JSON array, whose elements are not counted ahead.
pub fn count(reader: impl Read, format: Format) -> Option<u64> {
    match format {
        Format::JsonLines => Some(count_lines(reader)),
        Format::Csv => Some(count_csv_rows(reader)),
        Format::JsonArray => None,
    }
}

fn count_lines(reader: impl Read) -> u64 {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut bytes = Vec::new();
    let mut records = 0;
    loop {
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) => return records,
            // A line that is not UTF-8 is a record that fails.
            Ok(_) if std::str::from_utf8(&bytes).is_ok_and(|line| record_text(line).is_empty()) => {}
            Ok(_) => records += 1,
            Err(_) => return records + 1,
        }
    }
}

fn count_csv_rows(reader: impl Read) -> u64 {
    // Rows of the wrong length are records too, so the count accepts them.
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let bad_header = match csv.headers() {
        Ok(headers) => {
            let names: Vec<&str> = headers
                .iter()
                .enumerate()
                .map(|(index, name)| match index {
                    0 => name.strip_prefix('\u{FEFF}').unwrap_or(name),
                    _ => name,
                })
                .collect();
            names
                .iter()
                .enumerate()
                .any(|(index, name)| names[..index].contains(name))
        }
        Err(_) => true,
    };
    // A header row that is not UTF-8 or names a column twice is sent as one
    // record that names the problem, and the reading stops.
    if bad_header {
        return 1;
    }
    let mut row = csv::ByteRecord::new();
    let mut records = 0;
    loop {
        match csv.read_byte_record(&mut row) {
            Ok(true) => records += 1,
            Ok(false) => return records,
            Err(_) => return records + 1,
        }
    }
}

fn strip_position(message: &str) -> &str {
    message
        .find(" at line ")
        .map_or(message, |index| &message[..index])
}

/// Reads `[ {...}, {...} ]` one element at a time. The bytes of each
/// element are found by their brackets and quotes and then parsed alone.
/// An element that is not an object, or is nested too deeply, fails as its
/// own record, and the elements after it are still read. Broken JSON syntax
/// stops the reading, and the message names the record where it stopped.
fn read_array(reader: Box<dyn Read + Send>, shown: &str, send: &mut dyn FnMut(Record) -> bool) {
    let mut reader = BufReader::with_capacity(64 * 1024, LineCounter::new(reader));
    let mut number = 0u64;
    // A problem that ends the reading: the record and all after it are lost.
    let stop = |number: u64, line: Option<u64>, message: String, send: &mut dyn FnMut(Record) -> bool| {
        send(Record {
            number,
            line,
            entity: Err(Diagnostic::error(
                Code::InvalidRecord,
                format!("{message}; reading stopped at record {number}, and the rest of {shown} was not read"),
            )
            .with_help("a JSON array of records looks like [{\"id\": \"C-1\"}, {\"id\": \"C-2\"}]; fix the input and run the rest with --skip")),
        });
    };
    let read_failed = |number: u64, error: &std::io::Error, send: &mut dyn FnMut(Record) -> bool| {
        send(Record {
            number,
            line: None,
            entity: Err(read_stopped(shown, number, error)),
        });
    };
    // The opening bracket, after an optional byte order mark.
    match next_token(&mut reader) {
        Ok(Some(b'[')) => {}
        Ok(other) => {
            stop(
                1,
                None,
                format!("{shown} does not start with `[`, found {}", describe(other)),
                send,
            );
            return;
        }
        Err(error) => {
            read_failed(1, &error, send);
            return;
        }
    }
    let mut first = true;
    loop {
        let token = match peek_token(&mut reader) {
            Ok(token) => token,
            Err(error) => {
                read_failed(number + 1, &error, send);
                return;
            }
        };
        match token {
            Some(b']') => return,
            Some(b',') if !first => {
                reader.consume(1);
            }
            _ if first => {}
            other => {
                stop(
                    number + 1,
                    None,
                    format!(
                        "after record {number} of {shown}, expected `,` or `]`, found {}",
                        describe(other)
                    ),
                    send,
                );
                return;
            }
        }
        first = false;
        number += 1;
        match peek_token(&mut reader) {
            Ok(token @ (Some(b',' | b']' | b'}') | None)) => {
                stop(
                    number,
                    None,
                    format!("expected record {number} of {shown}, found {}", describe(token)),
                    send,
                );
                return;
            }
            Ok(_) => {}
            Err(error) => {
                read_failed(number, &error, send);
                return;
            }
        }
        // The record's first byte is the first one not yet consumed.
        let line = {
            let unread = reader.buffer().len() as u64;
            let counter = reader.get_mut();
            Some(counter.line_of(counter.offset - unread))
        };
        let bytes = match element(&mut reader) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                stop(
                    number,
                    line,
                    format!("record {number} of {shown} is not valid JSON: the input ends inside it"),
                    send,
                );
                return;
            }
            Err(error) => {
                read_failed(number, &error, send);
                return;
            }
        };
        let entity = match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) if nesting(&value) > MAX_NESTING => Err(too_deep(shown, &format!("record {number}"))),
            Ok(value) if value.is_object() => Ok(value),
            Ok(value) => Err(not_object(shown, &format!("record {number}"), &value)),
            Err(error) if error.to_string().starts_with("recursion limit exceeded") => {
                Err(too_deep(shown, &format!("record {number}")))
            }
            Err(error) => {
                stop(
                    number,
                    line,
                    format!(
                        "record {number} of {shown} is not valid JSON: {}",
                        strip_position(&error.to_string())
                    ),
                    send,
                );
                return;
            }
        };
        if !send(Record { number, line, entity }) {
            return;
        }
    }
}

/// Takes the bytes of one array element: a string, an object or array up to
/// its matching bracket, or anything else up to the next `,`, `]` or
/// whitespace. Returns `None` when the input ends inside the element.
fn element(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            let scalar = depth == 0 && !in_string && !bytes.is_empty();
            return Ok(scalar.then_some(bytes));
        }
        let mut used = 0;
        let mut done = false;
        for &byte in buffer {
            if in_string {
                used += 1;
                bytes.push(byte);
                if escaped {
                    escaped = false;
                } else if byte == b'\\' {
                    escaped = true;
                } else if byte == b'"' {
                    in_string = false;
                    done = depth == 0;
                }
            } else {
                let ends_before =
                    depth == 0 && (matches!(byte, b',' | b']' | b'}') || byte.is_ascii_whitespace());
                if ends_before {
                    done = true;
                    break;
                }
                used += 1;
                bytes.push(byte);
                match byte {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        done = depth == 0;
                    }
                    _ => {}
                }
            }
            if done {
                break;
            }
        }
        reader.consume(used);
        if done {
            return Ok(Some(bytes));
        }
    }
}

fn describe(token: Option<u8>) -> String {
    match token {
        Some(byte) if byte.is_ascii_graphic() => format!("`{}`", byte as char),
        Some(byte) => format!("byte 0x{byte:02x}"),
        None => "the end of the input".to_string(),
    }
}

/// Skips whitespace and a byte order mark, and returns the next byte
/// without consuming it.
fn peek_token(reader: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(None);
        }
        let skipped = buffer
            .iter()
            .take_while(|byte| byte.is_ascii_whitespace() || matches!(byte, 0xEF | 0xBB | 0xBF))
            .count();
        if skipped < buffer.len() {
            let byte = buffer[skipped];
            reader.consume(skipped);
            return Ok(Some(byte));
        }
        let length = buffer.len();
        reader.consume(length);
    }
}

fn next_token(reader: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    let token = peek_token(reader)?;
    if token.is_some() {
        reader.consume(1);
    }
    Ok(token)
}

/// Reads the header row of `csv`: the column names, with a byte order mark
/// left out. Fails when the row is not UTF-8 or names a column twice.
fn csv_headers<R: Read>(csv: &mut csv::Reader<R>, shown: &str) -> Result<Vec<String>, Diagnostic> {
    let headers: Vec<String> = csv
        .headers()
        .map_err(|error| csv_error(shown, &error))?
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let name = if index == 0 {
                name.strip_prefix('\u{FEFF}').unwrap_or(name)
            } else {
                name
            };
            name.to_string()
        })
        .collect();
    if let Some(duplicate) = headers
        .iter()
        .enumerate()
        .find(|(index, name)| headers[..*index].contains(name))
    {
        return Err(Diagnostic::error(
            Code::InvalidRecord,
            format!(
                "the header row of {shown} names the column `{}` twice",
                duplicate.1
            ),
        )
        .with_help("give every column its own name; columns become the fields of each entity"));
    }
    Ok(headers)
}

/// Checks the header row of CSV input whose first bytes are `peeked`, so
/// that a header no record can be read with stops the batch before it
/// starts. A header row that does not end within `peeked` is left to the
/// reader thread, which reports it as record 1.
fn check_csv_header(peeked: &[u8], shown: &str) -> Result<(), Diagnostic> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(peeked);
    match csv_headers(&mut csv, shown) {
        Err(diagnostic) if csv.position().byte() < peeked.len() as u64 => Err(diagnostic),
        _ => Ok(()),
    }
}

fn read_csv(reader: Box<dyn Read + Send>, shown: &str, typed: bool, send: &mut dyn FnMut(Record) -> bool) {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(LineCounter::new(reader));
    let headers = match csv_headers(&mut csv, shown) {
        Ok(headers) => headers,
        Err(diagnostic) => {
            send(Record {
                number: 1,
                line: None,
                entity: Err(diagnostic),
            });
            return;
        }
    };
    let mut row = csv::ByteRecord::new();
    let mut number = 0u64;
    loop {
        number += 1;
        let result = csv.read_byte_record(&mut row);
        // The reader stops right after the row's terminator, or at the end
        // of the input, so the row's last byte lies on its last line.
        // Asking on every row also lets the counter drop the breaks before it.
        let end = csv.position().byte();
        let last_line = csv.get_mut().line_of(end.saturating_sub(1));
        let breaks: u64 = row.iter().map(count_line_breaks).sum();
        let place = Place {
            number,
            first_line: last_line.saturating_sub(breaks),
            last_line,
        };
        let entity = match result {
            Ok(false) => return,
            Ok(true) => csv_entity(&headers, &row, typed).map_err(|column| {
                Diagnostic::error(
                    Code::InvalidRecord,
                    format!("{place} of {shown} is not valid UTF-8 in the column `{column}`"),
                )
                .with_help("save the file as UTF-8")
            }),
            // A row with the wrong number of cells is that record's problem;
            // the rows after it are still read.
            Err(error) => match error.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => {
                    let cells = if *len == 1 { "cell" } else { "cells" };
                    Err(Diagnostic::error(
                        Code::InvalidRecord,
                        format!(
                            "{place} of {shown} has {len} {cells}, but the header row has {expected_len} columns"
                        ),
                    )
                    .with_help("every row needs as many cells as the header row has columns; quote a cell that contains a comma"))
                }
                _ => {
                    send(Record {
                        number,
                        line: None,
                        entity: Err(csv_error(shown, &error)),
                    });
                    return;
                }
            },
        };
        let line = Some(place.first_line);
        if !send(Record { number, line, entity }) {
            return;
        }
    }
}

/// Turns a CSV row into an entity, or returns the name of the first column
/// whose cell is not UTF-8.
fn csv_entity(headers: &[String], row: &csv::ByteRecord, typed: bool) -> Result<Value, String> {
    let mut entity = Map::new();
    for (name, cell) in headers.iter().zip(row.iter()) {
        let cell = std::str::from_utf8(cell).map_err(|_| name.clone())?;
        let value = if typed {
            typed_cell(cell)
        } else {
            Value::String(cell.to_string())
        };
        entity.insert(name.clone(), value);
    }
    Ok(Value::Object(entity))
}

/// The location of a CSV record: its number and the lines of the file it spans.
struct Place {
    number: u64,
    first_line: u64,
    last_line: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Place {
            number,
            first_line,
            last_line,
        } = self;
        if first_line == last_line {
            write!(formatter, "record {number} (line {first_line})")
        } else {
            write!(formatter, "record {number} (lines {first_line} to {last_line})")
        }
    }
}

/// Counts line breaks as text editors do: `\r\n`, a lone `\r` and a lone
/// `\n` each end one line.
fn count_line_breaks(bytes: &[u8]) -> u64 {
    let mut breaks = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let ends_line = byte == b'\n' || (byte == b'\r' && bytes.get(index + 1) != Some(&b'\n'));
        breaks += u64::from(ends_line);
    }
    breaks
}

/// A reader that notes where each line break of the input lies, so that a
/// byte offset can be turned into a line number after the CSV parser has
/// read past it. Only the breaks not yet asked about are kept, which are
/// those in the parser's read-ahead buffer.
struct LineCounter {
    inner: Box<dyn Read + Send>,
    /// Bytes read so far.
    offset: u64,
    /// The offsets of the last byte of each line break not yet counted in
    /// `lines_before`, in order.
    breaks: std::collections::VecDeque<u64>,
    /// The offset of a `\r` that ended the last read, which ends a line
    /// unless the next read starts with `\n`.
    pending_return: Option<u64>,
    /// Line breaks that end before the offsets asked about so far.
    lines_before: u64,
}

impl LineCounter {
    fn new(inner: Box<dyn Read + Send>) -> LineCounter {
        LineCounter {
            inner,
            offset: 0,
            breaks: std::collections::VecDeque::new(),
            pending_return: None,
            lines_before: 0,
        }
    }

    /// Returns the 1-based line of the byte at `offset`. Offsets must not
    /// decrease from one call to the next, and must lie in the bytes read.
    fn line_of(&mut self, offset: u64) -> u64 {
        while self.breaks.front().is_some_and(|&end| end < offset) {
            self.breaks.pop_front();
            self.lines_before += 1;
        }
        self.lines_before + 1
    }
}

impl Read for LineCounter {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        for (index, &byte) in buffer[..read].iter().enumerate() {
            let at = self.offset + index as u64;
            if let Some(previous) = self.pending_return.take() {
                // A lone `\r` ends its line at itself; `\r\n` at the `\n`.
                if byte != b'\n' {
                    self.breaks.push_back(previous);
                }
            }
            match byte {
                b'\n' => self.breaks.push_back(at),
                b'\r' => self.pending_return = Some(at),
                _ => {}
            }
        }
        if read == 0 {
            if let Some(previous) = self.pending_return.take() {
                self.breaks.push_back(previous);
            }
        }
        self.offset += read as u64;
        Ok(read)
    }
}

/// A CSV error that ends the reading: in the header row, or in reading the
/// input itself.
fn csv_error(shown: &str, error: &csv::Error) -> Diagnostic {
    match error.kind() {
        csv::ErrorKind::Io(io) => read_error(shown, io),
        csv::ErrorKind::Utf8 { .. } => Diagnostic::error(
            Code::InvalidRecord,
            format!("the header row of {shown} is not valid UTF-8"),
        )
        .with_help("save the file as UTF-8"),
        _ => Diagnostic::error(
            Code::InvalidRecord,
            format!("{shown} cannot be read as CSV: {error}"),
        )
        .with_help("check that the input is CSV with a header row"),
    }
}

/// A CSV cell under `--csv-types`: a JSON number (so `42`, `-1.5`, `2e3`,
/// but not `007` or `+1`, which stay text), `true` or `false`; anything
/// else, the empty cell included, stays a string. A number keeps every digit
/// as written, because `serde_json` stores numbers as text here
/// (`arbitrary_precision`), and one with an exponent is written out in
/// plain decimal notation by [`without_exponent`].
pub fn typed_cell(cell: &str) -> Value {
    match cell {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if is_json_number(cell) {
        if let Some(plain) = without_exponent(cell) {
            if let Ok(number) = serde_json::from_str::<serde_json::Number>(&plain) {
                return Value::Number(number);
            }
        }
    }
    Value::String(cell.to_string())
}

/// The largest exponent, up or down, that [`without_exponent`] writes out,
/// so that a short cell such as `1e999999999` cannot become a string of a
/// billion digits.
const MAX_EXPONENT: u64 = 1000;

/// Rewrites a JSON number with an exponent in plain decimal notation,
/// keeping every written digit: `2e3` is `2000`, `1.50E1` is `15.0` and
/// `-25e-3` is `-0.025`. `serde_json` 1.0.154 would store `2e3` as `2e+3`, so a
/// number is never handed to it with an exponent. Returns the text
/// unchanged when it has no exponent, and `None` when the exponent is
/// beyond [`MAX_EXPONENT`] either way.
fn without_exponent(number: &str) -> Option<String> {
    let Some(e) = number.find(['e', 'E']) else {
        return Some(number.to_string());
    };
    let (mantissa, exponent) = (&number[..e], &number[e + 1..]);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let (down, exponent_digits) = match exponent.as_bytes().first() {
        Some(b'-') => (true, &exponent[1..]),
        Some(b'+') => (false, &exponent[1..]),
        _ => (false, exponent),
    };
    let exponent_digits = exponent_digits.trim_start_matches('0');
    if exponent_digits.len() > 4 {
        return None;
    }
    let shift: u64 = if exponent_digits.is_empty() {
        0
    } else {
        exponent_digits.parse().ok()?
    };
    if shift > MAX_EXPONENT {
        return None;
    }

    let digits = format!("{whole}{fraction}");
    // The position of the decimal point in `digits`, counted from the left.
    // It may lie before the first digit or after the last.
    let point = if down {
        whole.len() as i64 - shift as i64
    } else {
        whole.len() as i64 + shift as i64
    };
    let (whole, fraction) = if point <= 0 {
        (
            "0".to_string(),
            format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        (whole.to_string(), fraction.to_string())
    };
    // JSON allows no leading zero before other digits: `0.5e1` is `5`.
    let whole = match whole.trim_start_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    if fraction.is_empty() {
        Some(format!("{sign}{whole}"))
    } else {
        Some(format!("{sign}{whole}.{fraction}"))
    }
}

/// Follows the number grammar of RFC 8259.
fn is_json_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut index = 0;
    if bytes.first() == Some(&b'-') {
        index += 1;
    }
    match bytes.get(index) {
        Some(b'0') => index += 1,
        Some(b'1'..=b'9') => {
            while bytes.get(index).is_some_and(u8::is_ascii_digit) {
                index += 1;
            }
        }
        _ => return false,
    }
    if bytes.get(index) == Some(&b'.') {
        index += 1;
        let start = index;
        while bytes.get(index).is_some_and(u8::is_ascii_digit) {
            index += 1;
        }
        if index == start {
            return false;
        }
    }
    if matches!(bytes.get(index), Some(b'e' | b'E')) {
        index += 1;
        if matches!(bytes.get(index), Some(b'+' | b'-')) {
            index += 1;
        }
        let start = index;
        while bytes.get(index).is_some_and(u8::is_ascii_digit) {
            index += 1;
        }
        if index == start {
            return false;
        }
    }
    index == bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_read_at_once_arrive_in_full_chunks() {
        let input: String = (0..200).map(|index| format!("{{\"n\":{index}}}\n")).collect();
        let source = Source {
            reader: Box::new(std::io::Cursor::new(input.into_bytes())),
            shown: "`in`".to_string(),
            format: Format::JsonLines,
            csv_types: false,
            skip: 0,
        };
        let mut receiver = spawn(source);
        let sizes: Vec<usize> = std::iter::from_fn(|| receiver.blocking_recv())
            .map(|chunk| chunk.len())
            .collect();
        assert_eq!(sizes, [64, 64, 64, 8]);
    }

    /// Returns every record the reading thread sends, in order.
    fn received(mut receiver: mpsc::Receiver<Vec<Record>>) -> Vec<Record> {
        std::iter::from_fn(|| receiver.blocking_recv())
            .flatten()
            .collect()
    }

    fn read(text: &'static str, format: Format, csv_types: bool, skip: u64) -> Vec<Result<Value, String>> {
        read_from(Box::new(text.as_bytes()), format, csv_types, skip)
    }

    /// A reader that returns one byte per call, so that every line break
    /// straddles two reads.
    struct ByteByByte(&'static [u8]);

    impl Read for ByteByByte {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buffer.first_mut()) {
                (Some((&byte, rest)), Some(slot)) => {
                    *slot = byte;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn read_from(
        reader: Box<dyn Read + Send>,
        format: Format,
        csv_types: bool,
        skip: u64,
    ) -> Vec<Result<Value, String>> {
        let source = Source {
            reader,
            shown: "`in`".to_string(),
            format,
            csv_types,
            skip,
        };
        let receiver = spawn(source);
        let mut records = Vec::new();
        let mut expected = skip;
        for record in received(receiver) {
            expected += 1;
            assert_eq!(record.number, expected);
            records.push(record.entity.map_err(|diagnostic| diagnostic.message));
        }
        records
    }

    #[test]
    fn json_lines_skip_blank_lines_and_report_bad_ones() {
        let records = read(
            "{\"a\":1}\n\n  {\"a\":2}\n[1]\n{\"a\":\n{\"a\":3}",
            Format::JsonLines,
            false,
            0,
        );
        assert_eq!(
            records,
            [
                Ok(json!({"a": 1})),
                Ok(json!({"a": 2})),
                Err("line 4 of `in` is an array, not a JSON object".to_string()),
                Err("line 5 of `in` is not valid JSON: EOF while parsing a value at column 5".to_string()),
                Ok(json!({"a": 3})),
            ]
        );
    }

    #[test]
    fn json_arrays_stream_object_by_object() {
        let records = read(
            " [ {\"a\": [1, {\"b\": \"]\"}]} ,\n{\"a\":2}]",
            Format::JsonArray,
            false,
            0,
        );
        assert_eq!(records, [Ok(json!({"a": [1, {"b": "]"}]})), Ok(json!({"a": 2}))]);
        assert_eq!(read("[]", Format::JsonArray, false, 0), []);
        assert_eq!(
            read("[{\"a\":1} {\"a\":2}]", Format::JsonArray, false, 0),
            [
                Ok(json!({"a": 1})),
                Err(
                    "after record 1 of `in`, expected `,` or `]`, found `{`; reading stopped at record 2, \
                     and the rest of `in` was not read"
                        .to_string()
                )
            ]
        );
    }

    #[test]
    fn json_lines_past_the_nesting_limit_fail_alone() {
        let deep = format!("{{\"d\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        let limit = format!("{{\"d\":{}1{}}}", "[".repeat(99), "]".repeat(99));
        let text: &'static str = Box::leak(format!("{deep}\n{limit}\n").into_boxed_str());
        let records = read(text, Format::JsonLines, false, 0);
        assert_eq!(
            records[0],
            Err("line 1 of `in` is nested more than 100 levels deep".to_string())
        );
        assert!(records[1].is_ok());
    }

    #[test]
    fn json_line_past_parser_limit_too_deep() {
        let deep = format!("{{\"d\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let text: &'static str = Box::leak(format!("{deep}\n{{}}\n").into_boxed_str());
        assert_eq!(
            read(text, Format::JsonLines, false, 0),
            vec![
                Err("line 1 of `in` is nested more than 100 levels deep".to_string()),
                Ok(json!({})),
            ]
        );
    }

    #[test]
    fn a_json_array_element_that_is_no_object_fails_alone() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let text =
            format!("[{{\"a\":1}}, 5, \"s]\\\"\" ,[1,[2]],null, {{\"d\": {deep}}}, -1.5e3, {{\"a\":2}}]");
        let text: &'static str = Box::leak(text.into_boxed_str());
        assert_eq!(
            read(text, Format::JsonArray, false, 0),
            [
                Ok(json!({"a": 1})),
                Err("record 2 of `in` is a number, not a JSON object".to_string()),
                Err("record 3 of `in` is a string, not a JSON object".to_string()),
                Err("record 4 of `in` is an array, not a JSON object".to_string()),
                Err("record 5 of `in` is null, not a JSON object".to_string()),
                Err("record 6 of `in` is nested more than 100 levels deep".to_string()),
                Err("record 7 of `in` is a number, not a JSON object".to_string()),
                Ok(json!({"a": 2})),
            ]
        );
    }

    #[test]
    fn broken_json_syntax_says_where_the_array_stopped() {
        assert_eq!(
            read("[{\"a\":1}, {\"a\":}, {\"a\":2}]", Format::JsonArray, false, 0),
            [
                Ok(json!({"a": 1})),
                Err(
                    "record 2 of `in` is not valid JSON: expected value; reading stopped at record 2, \
                     and the rest of `in` was not read"
                        .to_string()
                )
            ]
        );
        assert_eq!(
            read("[{\"a\":1}, {\"a\": \"open", Format::JsonArray, false, 0),
            [
                Ok(json!({"a": 1})),
                Err(
                    "record 2 of `in` is not valid JSON: the input ends inside it; reading stopped at \
                     record 2, and the rest of `in` was not read"
                        .to_string()
                )
            ]
        );
        assert_eq!(
            read("[{\"a\":1},, {\"a\":2}]", Format::JsonArray, false, 0),
            [
                Ok(json!({"a": 1})),
                Err(
                    "expected record 2 of `in`, found `,`; reading stopped at record 2, and the rest of \
                     `in` was not read"
                        .to_string()
                )
            ]
        );
    }

    #[test]
    fn csv_cells_are_strings_unless_typed() {
        let text = "id,amount,zip,active,note\nC-1,12.50,00123,true,\nC-2,-3,9,false,x\n";
        assert_eq!(
            read(text, Format::Csv, false, 0)[0],
            Ok(json!({"id": "C-1", "amount": "12.50", "zip": "00123", "active": "true", "note": ""}))
        );
        let typed = read(text, Format::Csv, true, 0);
        // The number keeps its digits exactly as written.
        assert_eq!(
            serde_json::to_string(typed[0].as_ref().unwrap()).unwrap(),
            r#"{"id":"C-1","amount":12.50,"zip":"00123","active":true,"note":""}"#
        );
        assert_eq!(
            typed[1],
            Ok(json!({"id": "C-2", "amount": -3, "zip": 9, "active": false, "note": "x"}))
        );
    }

    #[test]
    fn csv_rows_of_the_wrong_length_fail_alone() {
        let records = read("a,b\n1,2\n3\n4,5\n", Format::Csv, false, 0);
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[1],
            Err("record 2 (line 3) of `in` has 1 cell, but the header row has 2 columns".to_string())
        );
        assert_eq!(records[2], Ok(json!({"a": "4", "b": "5"})));
        assert_eq!(
            read("a,a\n1,2\n", Format::Csv, false, 0),
            [Err(
                "the header row of `in` names the column `a` twice".to_string()
            )]
        );
    }

    /// Reads `text` whole and one byte per read, checks that both give the
    /// same records, and returns them.
    fn read_csv_both_ways(text: &'static str) -> Vec<Result<Value, String>> {
        let whole = read(text, Format::Csv, false, 0);
        let byte_by_byte = read_from(Box::new(ByteByByte(text.as_bytes())), Format::Csv, false, 0);
        assert_eq!(whole, byte_by_byte, "{text:?}");
        whole
    }

    #[test]
    fn csv_messages_name_the_line_with_crlf() {
        assert_eq!(
            read_csv_both_ways("a,b\r\n1,2\r\n3\r\n4,5,6\r\n7,8\r\n"),
            [
                Ok(json!({"a": "1", "b": "2"})),
                Err("record 2 (line 3) of `in` has 1 cell, but the header row has 2 columns".to_string()),
                Err("record 3 (line 4) of `in` has 3 cells, but the header row has 2 columns".to_string()),
                Ok(json!({"a": "7", "b": "8"})),
            ]
        );
    }

    #[test]
    fn csv_blank_lines_are_skipped_but_counted() {
        // Lines: 1 header, 2 blank, 3 row, 4 and 5 blank, 6 bad row, 7 row.
        assert_eq!(
            read_csv_both_ways("a,b\n\n1,2\n\n\n3\n4,5\n"),
            [
                Ok(json!({"a": "1", "b": "2"})),
                Err("record 2 (line 6) of `in` has 1 cell, but the header row has 2 columns".to_string()),
                Ok(json!({"a": "4", "b": "5"})),
            ]
        );
        assert_eq!(
            read_csv_both_ways("a,b\r\n\r\n1,2\r\n\r\n\r\n3\r\n"),
            [
                Ok(json!({"a": "1", "b": "2"})),
                Err("record 2 (line 6) of `in` has 1 cell, but the header row has 2 columns".to_string()),
            ]
        );
    }

    #[test]
    fn csv_quoted_line_breaks_count_as_lines() {
        // Record 1 spans lines 2 and 3, record 2 spans lines 5 to 7 after a
        // blank line, and record 3 is on line 8.
        assert_eq!(
            read_csv_both_ways("a,b\n\"x\ny\",1\n\n\"p\r\nq\r\nr\"\n3\n"),
            [
                Ok(json!({"a": "x\ny", "b": "1"})),
                Err(
                    "record 2 (lines 5 to 7) of `in` has 1 cell, but the header row has 2 columns"
                        .to_string()
                ),
                Err("record 3 (line 8) of `in` has 1 cell, but the header row has 2 columns".to_string()),
            ]
        );
        // A quoted break in the header row moves every line after it.
        assert_eq!(
            read_csv_both_ways("\"a\r\nz\",b\r\n1\r\n"),
            [Err(
                "record 1 (line 3) of `in` has 1 cell, but the header row has 2 columns".to_string()
            )]
        );
    }

    #[test]
    fn csv_lone_cr_and_last_line() {
        assert_eq!(
            read_csv_both_ways("a,b\r1,2\r\r3\r"),
            [
                Ok(json!({"a": "1", "b": "2"})),
                Err("record 2 (line 4) of `in` has 1 cell, but the header row has 2 columns".to_string()),
            ]
        );
        assert_eq!(
            read_csv_both_ways("a,b\n1,2\n3"),
            [
                Ok(json!({"a": "1", "b": "2"})),
                Err("record 2 (line 3) of `in` has 1 cell, but the header row has 2 columns".to_string()),
            ]
        );
    }

    #[test]
    fn csv_line_numbers_hold_past_the_read_buffer() {
        // 20,000 rows of CRLF lines are far more than the parser buffers.
        let mut text = String::from("a,b\r\n");
        for index in 0..20_000 {
            if index == 15_000 {
                text.push_str("\"bad\r\nrow\"\r\n");
            } else {
                text.push_str(&format!("{index},x\r\n"));
            }
        }
        let text: &'static str = Box::leak(text.into_boxed_str());
        let records = read(text, Format::Csv, false, 0);
        assert_eq!(records.len(), 20_000);
        assert_eq!(
            records[15_000],
            Err(
                "record 15001 (lines 15002 to 15003) of `in` has 1 cell, but the header row has 2 columns"
                    .to_string()
            )
        );
        assert_eq!(records[15_001], Ok(json!({"a": "15001", "b": "x"})));
    }

    #[test]
    fn csv_cell_that_is_not_utf8_fails_alone() {
        let text: &'static [u8] = b"a,b\r\n1,2\r\n\r\n3,\xff\r\n4,5\r\n";
        assert_eq!(
            read_from(Box::new(text), Format::Csv, false, 0),
            [
                Ok(json!({"a": "1", "b": "2"})),
                Err("record 2 (line 4) of `in` is not valid UTF-8 in the column `b`".to_string()),
                Ok(json!({"a": "4", "b": "5"})),
            ]
        );
        assert_eq!(
            read_from(Box::new(&b"a,\xff\n1,2\n"[..]), Format::Csv, false, 0),
            [Err("the header row of `in` is not valid UTF-8".to_string())]
        );
    }

    fn lines_of(text: &'static str, format: Format) -> Vec<Option<u64>> {
        let source = Source {
            reader: Box::new(text.as_bytes()),
            shown: "`in`".to_string(),
            format,
            csv_types: false,
            skip: 0,
        };
        received(spawn(source))
            .into_iter()
            .map(|record| record.line)
            .collect()
    }

    #[test]
    fn records_carry_their_first_line() {
        assert_eq!(
            lines_of("{}\r\n\n{}\n[1]\n", Format::JsonLines),
            [Some(1), Some(3), Some(4)]
        );
        assert_eq!(
            lines_of("a\r\n\r\n1\r\n\"x\r\ny\"\r\n2\r\n", Format::Csv),
            [Some(3), Some(4), Some(6)]
        );
        assert_eq!(
            lines_of("[{},\n 1,\r\n\r{\n}, 2 ]", Format::JsonArray),
            [Some(1), Some(2), Some(4), Some(5)]
        );
        assert_eq!(
            lines_of("\n[\n\n{\"a\": \"never ends\n", Format::JsonArray),
            [Some(4)]
        );
        // Past the 64 KiB read buffer: one record a line.
        let long: String = std::iter::once("[".to_string())
            .chain((0..20_000).map(|index| format!("\n{{\"id\": {index}}},")))
            .chain(std::iter::once("\n{}]".to_string()))
            .collect();
        let lines = lines_of(long.leak(), Format::JsonArray);
        assert_eq!(lines.len(), 20_001);
        assert_eq!(lines[0], Some(2));
        assert_eq!(lines[19_999], Some(20_001));
        assert_eq!(lines[20_000], Some(20_002));
    }

    #[test]
    fn non_utf8_json_line_keeps_its_line() {
        let source = Source {
            reader: Box::new(&b"{}\n\n{\"a\":\"\xff\"}\n{}\n"[..]),
            shown: "`in`".to_string(),
            format: Format::JsonLines,
            csv_types: false,
            skip: 0,
        };
        let mut records = Vec::new();
        for record in received(spawn(source)) {
            records.push((
                record.number,
                record.line,
                record.entity.map_err(|diagnostic| diagnostic.message),
            ));
        }
        assert_eq!(
            records,
            [
                (1, Some(1), Ok(json!({}))),
                (
                    2,
                    Some(3),
                    Err(
                        "line 3 of `in` is not UTF-8: its byte 7 is not part of a UTF-8 character"
                            .to_string()
                    )
                ),
                (3, Some(4), Ok(json!({}))),
            ]
        );
    }

    #[test]
    fn counts_match_the_records_read() {
        let cases: [(&'static str, Format, u64); 9] = [
            (
                "{\"a\":1}\r\n\r\n{\"a\":2}\r\n\r\n\r\n{\"a\":3}\r\n",
                Format::JsonLines,
                3,
            ),
            ("\u{FEFF}{}\n \t\r\n\u{FEFF}\n[1]\n{\"a\":", Format::JsonLines, 3),
            // A lone CR does not end a JSON Lines line.
            ("{}\r{}\n", Format::JsonLines, 1),
            ("a,b\r\n\r\n1,2\r\n\r\n\"x\r\n\r\ny\",3\r\n4\r\n", Format::Csv, 3),
            ("a\r1\r\r2\r", Format::Csv, 2),
            ("\u{FEFF}a,a\n1,2\n", Format::Csv, 1),
            ("a\n1\n\"2\n", Format::Csv, 2),
            ("", Format::JsonLines, 0),
            ("", Format::Csv, 0),
        ];
        for (text, format, expected) in cases {
            assert_eq!(count(text.as_bytes(), format), Some(expected), "{text:?}");
            assert_eq!(read(text, format, false, 0).len() as u64, expected, "{text:?}");
        }
        // A line that is not UTF-8 is a record that fails.
        let broken = &b"{}\n\xff\n{}\n"[..];
        assert_eq!(count(broken, Format::JsonLines), Some(3));
        assert_eq!(read_from(Box::new(broken), Format::JsonLines, false, 0).len(), 3);
        assert_eq!(count(&b"[{}, {}]"[..], Format::JsonArray), None);
    }

    #[test]
    fn skipped_records_keep_their_numbers() {
        let records = read("{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n", Format::JsonLines, false, 2);
        assert_eq!(records, [Ok(json!({"a": 3}))]);
    }

    #[test]
    fn typed_numbers_keep_every_digit() {
        let cases = [
            ("42", "42"),
            ("-1.5", "-1.5"),
            ("12.50", "12.50"),
            ("0.10000000000000000001", "0.10000000000000000001"),
            ("12345678901234567890123", "12345678901234567890123"),
            (
                "-98765432109876543210.000000000000000000001",
                "-98765432109876543210.000000000000000000001",
            ),
            ("2e3", "2000"),
            ("2E3", "2000"),
            ("2e+3", "2000"),
            ("2e0", "2"),
            ("2e-0", "2"),
            ("1.50E1", "15.0"),
            ("1.5e3", "1500"),
            ("-25e-3", "-0.025"),
            ("0.5e1", "5"),
            ("0.05e1", "0.5"),
            ("1e-2", "0.01"),
            ("0e5", "0"),
            ("-0e-2", "-0.00"),
            ("123.456e2", "12345.6"),
            ("1.00000000000000000001e20", "100000000000000000001"),
            ("1e007", "10000000"),
        ];
        for (cell, expected) in cases {
            let value = typed_cell(cell);
            let Value::Number(number) = &value else {
                panic!("{cell} became {value:?}");
            };
            assert_eq!(number.as_str(), expected, "{cell}");
            assert_eq!(serde_json::to_string(&value).unwrap(), expected, "{cell}");
        }
        let long = typed_cell("1e1000");
        assert_eq!(long.to_string(), format!("1{}", "0".repeat(1000)));
        assert_eq!(
            typed_cell("1e-1000").to_string(),
            format!("0.{}1", "0".repeat(999))
        );
        for cell in ["1e1001", "1e-1001", "5e99999", "1e0000000000000000000009999"] {
            assert_eq!(typed_cell(cell), Value::String(cell.to_string()), "{cell}");
        }
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        for text in ["0", "-0", "12", "1.5", "-2e10", "3E+2", "0.25e-1"] {
            assert!(is_json_number(text), "{text}");
        }
        for text in ["", "-", "007", "+1", "1.", ".5", "1e", "0x10", "1,5", "NaN", " 1"] {
            assert!(!is_json_number(text), "{text}");
        }
    }
}
