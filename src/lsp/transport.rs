//! The base protocol: JSON-RPC messages framed by a `Content-Length`
//! header, over standard input and output.

use std::io::{self, BufRead, Write};

use serde_json::Value;

/// The largest message body read, so that a wrong header cannot make the
/// server allocate without limit.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// Errors of reading one message.
#[derive(Debug)]
pub enum ReadError {
    /// The stream ended or failed, or its framing is broken: the server stops.
    Closed(io::Error),
    /// The body was read but is not JSON: the next message can still be read.
    NotJson(serde_json::Error),
}

/// Reads one message. Returns `Ok(None)` at the end of the stream.
pub fn read_message(reader: &mut impl BufRead) -> Result<Option<Value>, ReadError> {
    let mut length = None;
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).map_err(ReadError::Closed)?;
        if read == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            if length.is_some() {
                break;
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(ReadError::Closed(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {length} bytes is over the limit of {MAX_BODY}"),
        )));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(ReadError::Closed)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(ReadError::NotJson)
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

    #[test]
    fn reads_framed_messages_in_turn() {
        let input =
            b"Content-Length: 14\r\n\r\n{\"id\":1,\"a\":2}Content-Length: 2\r\nContent-Type: x\r\n\r\n[]";
        let mut reader = io::BufReader::new(&input[..]);
        let first = read_message(&mut reader).expect("readable").expect("a message");
        assert_eq!(first, serde_json::json!({"id": 1, "a": 2}));
        let second = read_message(&mut reader).expect("readable").expect("a message");
        assert_eq!(second, serde_json::json!([]));
        assert!(read_message(&mut reader).expect("readable").is_none());
    }

    #[test]
    fn non_json_body_is_skipped() {
        let mut reader = io::BufReader::new(&b"Content-Length: 3\r\n\r\n{x}Content-Length: 2\r\n\r\n{}"[..]);
        assert!(matches!(read_message(&mut reader), Err(ReadError::NotJson(_))));
        let next = read_message(&mut reader).expect("readable").expect("a message");
        assert_eq!(next, serde_json::json!({}));
    }
}
