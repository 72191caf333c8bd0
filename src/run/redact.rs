//! Replaces secret values with `***` in everything flowrun prints.

use crate::render::encode;

/// The secret values to hide, in every form a template may have written
/// them: as given, percent-encoded, and escaped for JSON, markup and
/// JavaScript.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

pub const MASK: &str = "***";

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut needles = Vec::new();
        for secret in secrets {
            if secret.is_empty() {
                continue;
            }
            // The value as given and as the `upper` and `lower` helpers
            // write it, each in every encoding flowrun writes and in the
            // ones servers commonly echo back.
            for value in [secret.to_string(), secret.to_uppercase(), secret.to_lowercase()] {
                for form in encoded_forms(&value) {
                    if !form.is_empty() && !needles.contains(&form) {
                        needles.push(form);
                    }
                }
            }
        }
        // Longer forms first, so that a form containing another is replaced whole.
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        Redactor { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for needle in &self.needles {
            if !text.contains(needle.as_str()) {
                continue;
            }
            text = if needle.chars().count() < SHORT_SECRET {
                replace_whole_words(&text, needle)
            } else {
                text.replace(needle.as_str(), MASK)
            };
        }
        text
    }
}

fn encoded_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    let mut form = String::new();
    encode::percent_encode(&mut form, value);
    forms.push(lowercase_hex(&form));
    forms.push(form.replace("%20", "+"));
    forms.push(std::mem::take(&mut form));
    encode::json_string_content(&mut form, value);
    let slashed = form.replace('/', "\\/");
    forms.push(ascii_json(&form));
    forms.push(ascii_json(&slashed));
    forms.push(slashed);
    forms.push(std::mem::take(&mut form));
    encode::markup_escape(&mut form, value);
    forms.push(std::mem::take(&mut form));
    encode::javascript_escape(&mut form, value);
    forms.push(form);
    forms
}

/// JSON string content with every character outside ASCII as `\uXXXX`,
/// as Python's `json.dumps` writes it by default.
fn ascii_json(content: &str) -> String {
    let mut out = String::new();
    for c in content.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Secrets shorter than this many characters are hidden only where they
/// stand alone, between characters that are not letters or digits. Hiding
/// every occurrence of a one-letter secret would garble every message,
/// stored history included, while hiding none would print it.
const SHORT_SECRET: usize = 4;

/// Replaces the occurrences of `needle` that no letter or digit touches.
fn replace_whole_words(text: &str, needle: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut before: Option<char> = None;
    while let Some(index) = rest.find(needle) {
        let previous = rest[..index]
            .chars()
            .next_back()
            .or(if index == 0 { before } else { None });
        let next = rest[index + needle.len()..].chars().next();
        let touches = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        out.push_str(&rest[..index]);
        if touches(previous) || touches(next) {
            out.push_str(needle);
        } else {
            out.push_str(MASK);
        }
        before = needle.chars().next_back();
        rest = &rest[index + needle.len()..];
    }
    out.push_str(rest);
    out
}

/// Lowercases the hex digits of percent-escapes: `%2F` becomes `%2f`.
fn lowercase_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|digit| digit.to_ascii_lowercase()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_every_encoded_form() {
        let redactor = Redactor::new(["p@ss w\"rd", ""]);
        assert_eq!(redactor.redact("a p@ss w\"rd b"), "a *** b");
        assert_eq!(redactor.redact("/x/p%40ss%20w%22rd"), "/x/***");
        assert_eq!(redactor.redact(r#"{"t":"p@ss w\"rd"}"#), r#"{"t":"***"}"#);
        assert_eq!(redactor.redact("p@ss w&quot;rd"), "***");
        assert_eq!(redactor.redact("nothing here"), "nothing here");
    }

    #[test]
    fn short_secrets_are_hidden_where_they_stand_alone() {
        let redactor = Redactor::new(["t1"]);
        assert_eq!(
            redactor.redact("http://x.test/?k=t1&t1x=2"),
            "http://x.test/?k=***&t1x=2"
        );
        assert_eq!(redactor.redact("t1"), "***");
        assert_eq!(redactor.redact("start t1 t1"), "start *** ***");
    }

    #[test]
    fn hides_case_changes_and_server_side_encodings() {
        let redactor = Redactor::new(["pässw/rd+1 x"]);
        assert_eq!(redactor.redact("PÄSSW/RD+1 X"), "***");
        assert_eq!(redactor.redact(r"p\u00e4ssw\/rd+1 x"), "***");
        assert_eq!(redactor.redact("p%c3%a4ssw%2frd%2b1%20x"), "***");
        assert_eq!(redactor.redact("p%C3%A4ssw%2Frd%2B1+x"), "***");
    }
}
