//! The base protocol: JSON-RPC messages framed by a `Content-Length`
//! header, over standard input and output.
//!
//! A message that cannot be read is skipped: bytes before a header, a
//! header whose length is not a number or is over [`MAX_BODY`], and a body
//! that is not JSON. After a bad header the reader looks for the next
//! `Content-Length:` header, anywhere in a line, and goes on from there.

use std::io::{self, BufRead, Read, Write};

use serde_json::Value;

/// The largest message body read, 64 MiB, so that a wrong header cannot
/// make the server allocate without limit.
pub const MAX_BODY: u64 = 64 * 1024 * 1024;

/// The longest line kept while looking for a header. Longer lines keep
/// their last bytes, where a header that follows stray bytes ends.
const MAX_LINE: usize = 1024;

/// How many skipped bytes a log line quotes.
const QUOTED_BYTES: usize = 40;

const HEADER: &[u8] = b"content-length:";

/// Errors of reading one message.
#[derive(Debug)]
pub enum ReadError {
    /// The stream failed: the server stops.
    Closed(io::Error),
    /// A message or stray bytes were skipped, for the reason given; the
    /// next message can still be read.
    Skipped(String),
}

/// Reads framed messages from a stream.
pub struct MessageReader<R> {
    inner: R,
    /// The start of a header found after stray bytes, read before `inner`.
    pending: Option<Vec<u8>>,
    /// Set after a skipped message: the bytes up to the next header belong
    /// to it and are not reported again.
    resyncing: bool,
}

impl<R: BufRead> MessageReader<R> {
    pub fn new(inner: R) -> MessageReader<R> {
        MessageReader {
            inner,
            pending: None,
            resyncing: false,
        }
    }

    /// Reads one message. Returns `Ok(None)` at the end of the stream.
    pub fn read_message(&mut self) -> Result<Option<Value>, ReadError> {
        let Some(first) = self.find_header()? else {
            return Ok(None);
        };
        let mut length = header_value(&first);
        loop {
            let Some((line, dropped)) = self.read_line()? else {
                return Ok(None);
            };
            if dropped == 0 && line.trim_ascii().is_empty() {
                break;
            }
            match find_header(&line) {
                Some(0) => length = header_value(&line),
                Some(index) => {
                    // A header started before this one ended: the earlier
                    // message has no body.
                    self.pending = Some(line[index..].to_vec());
                    return Err(ReadError::Skipped(
                        "skipped a message header that has no blank line after it".to_string(),
                    ));
                }
                None if dropped == 0 && is_header_field(&line) => {}
                None => {
                    self.resyncing = true;
                    return Err(ReadError::Skipped(format!(
                        "skipped a message whose header has the line `{}`, which is not `Name: value`",
                        quote(&line)
                    )));
                }
            }
        }
        let length = match length {
            Length::Bytes(length) if length <= MAX_BODY => length,
            Length::Bytes(_) | Length::Huge => {
                self.resyncing = true;
                return Err(ReadError::Skipped(format!(
                    "skipped a message of {} bytes, over the limit of {MAX_BODY} bytes (64 MiB)",
                    quote(first_value(&first))
                )));
            }
            Length::Invalid => {
                self.resyncing = true;
                return Err(ReadError::Skipped(format!(
                    "skipped a message whose Content-Length `{}` is not a number of bytes",
                    quote(first_value(&first))
                )));
            }
        };
        let mut body = Vec::new();
        (&mut self.inner)
            .take(length)
            .read_to_end(&mut body)
            .map_err(ReadError::Closed)?;
        if (body.len() as u64) < length {
            return Ok(None);
        }
        serde_json::from_slice(&body).map(Some).map_err(|error| {
            // A length shorter than the body leaves its rest before the
            // next header.
            self.resyncing = true;
            ReadError::Skipped(format!("skipped a message whose body is not JSON: {error}"))
        })
    }

    /// Reads up to the line that contains a `Content-Length:` header and
    /// returns that line from the header on. Stray bytes before it make an
    /// error, and the header is read by the next call.
    fn find_header(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let mut skipped = 0;
        let mut quoted = Vec::new();
        loop {
            let Some((line, dropped)) = self.read_line()? else {
                if skipped > 0 && !self.resyncing {
                    return Err(ReadError::Skipped(stray_bytes(skipped, &quoted)));
                }
                return Ok(None);
            };
            let start = find_header(&line);
            let stray = &line[..start.unwrap_or(line.len())];
            if dropped > 0 || !stray.trim_ascii().is_empty() {
                skipped += dropped + stray.len();
                let room = QUOTED_BYTES - quoted.len();
                quoted.extend_from_slice(&stray[..stray.len().min(room)]);
            }
            let Some(start) = start else { continue };
            let header = line[start..].to_vec();
            if skipped > 0 && !self.resyncing {
                self.pending = Some(header);
                return Err(ReadError::Skipped(stray_bytes(skipped, &quoted)));
            }
            self.resyncing = false;
            return Ok(Some(header));
        }
    }

    /// Reads one line with its line break, keeping its last [`MAX_LINE`]
    /// bytes, and returns it with the number of bytes dropped before them.
    fn read_line(&mut self) -> Result<Option<(Vec<u8>, usize)>, ReadError> {
        if let Some(line) = self.pending.take() {
            return Ok(Some((line, 0)));
        }
        let mut line = Vec::new();
        let mut dropped = 0;
        loop {
            let buffer = match self.inner.fill_buf() {
                Ok(buffer) => buffer,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(ReadError::Closed(error)),
            };
            if buffer.is_empty() {
                break;
            }
            let (taken, ended) = match buffer.iter().position(|byte| *byte == b'\n') {
                Some(index) => (index + 1, true),
                None => (buffer.len(), false),
            };
            line.extend_from_slice(&buffer[..taken]);
            self.inner.consume(taken);
            if line.len() > MAX_LINE {
                let excess = line.len() - MAX_LINE;
                line.drain(..excess);
                dropped += excess;
            }
            if ended {
                break;
            }
        }
        if line.is_empty() && dropped == 0 {
            return Ok(None);
        }
        Ok(Some((line, dropped)))
    }
}

/// A `Content-Length` value.
enum Length {
    Bytes(u64),
    /// Digits only, but too many for a `u64`.
    Huge,
    Invalid,
}

/// Returns where a `Content-Length:` header starts in a line, in any case.
fn find_header(line: &[u8]) -> Option<usize> {
    line.windows(HEADER.len())
        .position(|window| window.eq_ignore_ascii_case(HEADER))
}

/// Returns the text after the colon of a header line that starts with
/// `Content-Length:`.
fn first_value(line: &[u8]) -> &[u8] {
    line[HEADER.len()..].trim_ascii()
}

fn header_value(line: &[u8]) -> Length {
    let value = first_value(line);
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Length::Invalid;
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .map_or(Length::Huge, Length::Bytes)
}

/// Tells whether a line is a header field other than `Content-Length`,
/// such as `Content-Type: ...`.
fn is_header_field(line: &[u8]) -> bool {
    let line = line.trim_ascii();
    match line.iter().position(|byte| *byte == b':') {
        Some(colon) if colon > 0 => line[..colon]
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-'),
        _ => false,
    }
}

fn stray_bytes(count: usize, quoted: &[u8]) -> String {
    let more = if count > quoted.len() { "..." } else { "" };
    format!(
        "skipped {count} bytes before a Content-Length header: `{}{more}`",
        quote(quoted)
    )
}

/// Returns bytes as text for a log line: at most [`QUOTED_BYTES`], with
/// control characters escaped.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BYTES)]);
    text.trim_end_matches(['\r', '\n']).escape_debug().to_string()
}

/// Writes one message and flushes it.
pub fn write_message(writer: &mut impl Write, message: &Value) -> io::Result<()> {
    let body = serde_json::to_string(message).map_err(io::Error::other)?;
    write!(writer, "Content-Length: {}\r\n\r\n{body}", body.len())?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every message and skip reason of an input.
    fn read_all(input: &[u8]) -> Vec<Result<Value, String>> {
        let mut reader = MessageReader::new(io::BufReader::with_capacity(7, input));
        let mut read = Vec::new();
        loop {
            match reader.read_message() {
                Ok(Some(message)) => read.push(Ok(message)),
                Ok(None) => return read,
                Err(ReadError::Skipped(reason)) => read.push(Err(reason)),
                Err(ReadError::Closed(error)) => panic!("{error}"),
            }
        }
    }

    #[test]
    fn reads_framed_messages_in_turn() {
        let input =
            b"Content-Length: 14\r\n\r\n{\"id\":1,\"a\":2}Content-Length: 2\r\nContent-Type: x\r\n\r\n[]";
        assert_eq!(
            read_all(input),
            [
                Ok(serde_json::json!({"id": 1, "a": 2})),
                Ok(serde_json::json!([]))
            ]
        );
    }

    #[test]
    fn non_json_body_is_skipped() {
        assert_eq!(
            read_all(b"Content-Length: 3\r\n\r\n{x}Content-Length: 2\r\n\r\n{}"),
            [
                Err(
                    "skipped a message whose body is not JSON: key must be a string at line 1 column 2"
                        .to_string()
                ),
                Ok(serde_json::json!({})),
            ]
        );
    }

    #[test]
    fn stray_bytes_before_a_header_are_skipped() {
        assert_eq!(
            read_all(b"{}Content-Length: 2\r\n\r\n[]"),
            [
                Err("skipped 2 bytes before a Content-Length header: `{}`".to_string()),
                Ok(serde_json::json!([])),
            ]
        );
        assert_eq!(
            read_all(b"\r\n\r\nContent-Length: 2\r\n\r\n[]"),
            [Ok(serde_json::json!([]))]
        );
        assert_eq!(
            read_all(b"{}"),
            [Err(
                "skipped 2 bytes before a Content-Length header: `{}`".to_string()
            )]
        );
    }

    #[test]
    fn header_after_long_stray_line_is_found() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"content-length: 2\r\n\r\n[]");
        let read = read_all(&input);
        assert_eq!(
            read[0],
            Err(format!(
                "skipped 5000 bytes before a Content-Length header: `{}...`",
                "x".repeat(QUOTED_BYTES)
            ))
        );
        assert_eq!(read[1], Ok(serde_json::json!([])));
        assert_eq!(read.len(), 2);
    }

    #[test]
    fn bad_lengths_skip_to_the_next_header() {
        let input = b"Content-Length: -1\r\n\r\n{}Content-Length: 4294967296\r\n\r\n{\"a\":Content-Length: 99999999999999999999999\r\n\r\nContent-Length: 1\r\n\r\n7";
        assert_eq!(
            read_all(input),
            [
                Err("skipped a message whose Content-Length `-1` is not a number of bytes".to_string()),
                Err("skipped a message of 4294967296 bytes, over the limit of 67108864 bytes (64 MiB)".to_string()),
                Err("skipped a message of 99999999999999999999999 bytes, over the limit of 67108864 bytes (64 MiB)".to_string()),
                Ok(serde_json::json!(7)),
            ]
        );
    }

    #[test]
    fn malformed_headers_are_skipped() {
        let input = b"Content-Length: 2\r\n{}Content-Length: 1\r\n\r\n1Content-Length: 1\r\nnot a header\r\n\r\n2Content-Length: 1\r\n\r\n3";
        assert_eq!(
            read_all(input),
            [
                Err("skipped a message header that has no blank line after it".to_string()),
                Ok(serde_json::json!(1)),
                Err(
                    "skipped a message whose header has the line `not a header`, which is not `Name: value`"
                        .to_string()
                ),
                Ok(serde_json::json!(3)),
            ]
        );
    }

    #[test]
    fn stream_ending_inside_a_body_ends_reading() {
        assert!(read_all(b"Content-Length: 10\r\n\r\n{}").is_empty());
    }
}
