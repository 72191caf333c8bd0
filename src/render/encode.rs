//! Writes a value in place of a merge field, in the encoding of that place.

use std::fmt::Write as _;

use serde_json::Value;

use crate::program::Encoding;

/// Appends `value` to `out` in `encoding`.
pub fn write_value(out: &mut String, value: &Value, encoding: Encoding) {
    match encoding {
        Encoding::JsonValue => write_json_value(out, value),
        Encoding::Raw => write_text(out, value),
        Encoding::Url => with_text(value, |text| percent_encode(out, text)),
        Encoding::JsonString => with_text(value, |text| json_string_content(out, text)),
        Encoding::Markup => with_text(value, |text| markup_escape(out, text)),
        Encoding::JavaScript => with_text(value, |text| javascript_escape(out, text)),
    }
}

/// Calls `f` with the text form of a value without copying strings.
fn with_text(value: &Value, f: impl FnOnce(&str)) {
    match value {
        Value::String(text) => f(text),
        other => {
            let mut text = String::new();
            write_text(&mut text, other);
            f(&text);
        }
    }
}

/// The text form of a value: strings as they are, `null` as empty text,
/// numbers digit for digit, objects and arrays as compact JSON.
pub fn write_text(out: &mut String, value: &Value) {
    match value {
        Value::String(text) => out.push_str(text),
        Value::Null => {}
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => out.push_str(&number.to_string()),
        Value::Array(_) | Value::Object(_) => write_json_value(out, value),
    }
}

pub fn text_of(value: &Value) -> String {
    let mut text = String::new();
    write_text(&mut text, value);
    text
}

fn write_json_value(out: &mut String, value: &Value) {
    match value {
        Value::String(text) => {
            out.push('"');
            json_string_content(out, text);
            out.push('"');
        }
        // serde_json writes into a String without failing; with the
        // arbitrary_precision feature, numbers keep every digit.
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// Percent-encodes every byte outside `A-Z a-z 0-9 - . _ ~`.
pub fn percent_encode(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// Escapes text as the content of a JSON string, without the quotes.
pub fn json_string_content(out: &mut String, text: &str) {
    let mut start = 0;
    for (index, c) in text.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&text[start..index]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        start = index + c.len_utf8();
    }
    out.push_str(&text[start..]);
}

/// Writes `& < > " '` as character references, for XML, XHTML and HTML.
pub fn markup_escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Escapes text as the content of a JavaScript string literal in any quote
/// style. `<` is escaped too, so a value cannot close a `<script>` element.
pub fn javascript_escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            '`' => out.push_str("\\`"),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003C"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encode(value: Value, encoding: Encoding) -> String {
        let mut out = String::new();
        write_value(&mut out, &value, encoding);
        out
    }

    #[test]
    fn url_encoding() {
        assert_eq!(
            encode(json!("a b/c?d#e%f+g&h~i"), Encoding::Url),
            "a%20b%2Fc%3Fd%23e%25f%2Bg%26h~i"
        );
        assert_eq!(encode(json!("é😀"), Encoding::Url), "%C3%A9%F0%9F%98%80");
        assert_eq!(encode(json!(null), Encoding::Url), "");
        assert_eq!(encode(json!(12.5), Encoding::Url), "12.5");
    }

    #[test]
    fn json_encodings() {
        assert_eq!(
            encode(json!("a\"b\\c\nd\u{1}"), Encoding::JsonString),
            r#"a\"b\\c\nd\u0001"#
        );
        assert_eq!(encode(json!("x"), Encoding::JsonValue), r#""x""#);
        assert_eq!(encode(json!(null), Encoding::JsonValue), "null");
        assert_eq!(encode(json!(null), Encoding::JsonString), "");
        assert_eq!(
            encode(json!({"a": [1, true]}), Encoding::JsonValue),
            r#"{"a":[1,true]}"#
        );
        assert_eq!(
            encode(json!({"a": "q\""}), Encoding::JsonString),
            r#"{\"a\":\"q\\\"\"}"#
        );
        let big: Value = serde_json::from_str("12345678901234567890123.4500").unwrap();
        assert_eq!(encode(big, Encoding::JsonValue), "12345678901234567890123.4500");
    }

    #[test]
    fn markup_and_javascript() {
        assert_eq!(
            encode(json!(r#"<a href="x">&'"#), Encoding::Markup),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            encode(
                json!("it's \"q\" \\ `t` ${x}\n</script>\u{2028}"),
                Encoding::JavaScript
            ),
            r#"it\'s \"q\" \\ \`t\` \${x}\n\u003C/script>\u2028"#
        );
    }

    #[test]
    fn raw_text_forms() {
        assert_eq!(encode(json!("a&b"), Encoding::Raw), "a&b");
        assert_eq!(encode(json!(false), Encoding::Raw), "false");
        assert_eq!(encode(json!(null), Encoding::Raw), "");
    }
}
