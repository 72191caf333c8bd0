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
            let mut forms = vec![secret.to_string()];
            let mut form = String::new();
            encode::percent_encode(&mut form, secret);
            forms.push(std::mem::take(&mut form));
            encode::json_string_content(&mut form, secret);
            forms.push(std::mem::take(&mut form));
            encode::markup_escape(&mut form, secret);
            forms.push(std::mem::take(&mut form));
            encode::javascript_escape(&mut form, secret);
            forms.push(form);
            for form in forms {
                if !needles.contains(&form) {
                    needles.push(form);
                }
            }
        }
        // Longer forms first, so that a form containing another is replaced whole.
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        Redactor { needles }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), MASK);
            }
        }
        text
    }
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
}
