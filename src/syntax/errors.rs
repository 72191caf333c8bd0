//! Turns pest errors into diagnostics that name what was expected in words.

use pest::error::{Error, ErrorVariant, InputLocation};

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::syntax::Rule;

/// Describes a grammar rule as a reader would name it.
fn phrase(rule: Rule) -> &'static str {
    match rule {
        Rule::file | Rule::chunk | Rule::EOI => "end of file",
        Rule::header | Rule::kw_workflow => "`workflow`",
        Rule::let_decl | Rule::kw_let => "`let`",
        Rule::step | Rule::kw_step => "a step",
        Rule::http_action | Rule::kw_http => "an `http` action",
        Rule::method => "an HTTP method",
        Rule::payload | Rule::payload_kind | Rule::payload_kind_known | Rule::known_kind => "a payload",
        Rule::headers | Rule::kw_headers => "`headers`",
        Rule::header_pair => "a header (`\"Name\": \"value\"`)",
        Rule::option => "a step option",
        Rule::setting => "a workflow setting",
        Rule::llm_action | Rule::kw_llm => "an `llm` action",
        Rule::llm_text
        | Rule::llm_keyword
        | Rule::llm_list
        | Rule::llm_list_keyword
        | Rule::llm_schema
        | Rule::llm_output => "an `llm` clause",
        Rule::target_path => "a target such as `entity.field`",
        Rule::provider | Rule::kw_provider => "a `provider` block",
        Rule::provider_entry => "a provider setting",
        Rule::schema_object | Rule::schema_field => "a schema field (`name: type`)",
        Rule::schema_enum | Rule::schema_list => "a field type",
        Rule::option_arg | Rule::bare_arg => "an option value",
        Rule::json_object => "a JSON object",
        Rule::json_array => "a JSON array",
        Rule::string | Rule::string_inner => "a quoted string",
        Rule::triple_string | Rule::triple_inner => "a `\"\"\"` string",
        Rule::number => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::ident => "a name",
        _ => "valid syntax",
    }
}

/// Builds the diagnostic for a pest error in a chunk that starts at `base`.
pub(crate) fn syntax_error(error: &Error<Rule>, source: &str, base: usize) -> Diagnostic {
    let offset = base
        + match error.location {
            InputLocation::Pos(pos) => pos,
            InputLocation::Span((start, _)) => start,
        };
    let found = found_at(source, offset);
    // The span covers the source text found there, which for a line break
    // or a control character is shorter than the words that describe it.
    let rest = &source[offset.min(source.len())..];
    let word_len: usize = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .take(40)
        .map(char::len_utf8)
        .sum();
    let length = if word_len > 0 {
        word_len
    } else {
        rest.chars().next().map_or(0, char::len_utf8)
    };
    let span = Span::new(offset, (offset + length).min(source.len()));

    let expected = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut phrases: Vec<&str> = Vec::new();
            for rule in positives {
                let text = phrase(*rule);
                if !phrases.contains(&text) {
                    phrases.push(text);
                }
            }
            // Inside a step body pest lists every rule that may come next;
            // a reader thinks of them as actions, options and the closing brace.
            if phrases.contains(&"an `http` action") && phrases.contains(&"`headers`") {
                phrases = vec!["an action", "a step option", "`}`"];
            }
            phrases.retain(|text| *text != "valid syntax");
            join_alternatives(&phrases)
        }
        ErrorVariant::CustomError { message } => {
            // pest stops at its recursion limit with a custom error.
            let message = if message.contains("stack limit") {
                "brackets nest too deeply to parse".to_string()
            } else {
                message.clone()
            };
            return Diagnostic::error(Code::SyntaxError, message)
                .with_label(span, "nesting limit reached here")
                .with_help("flatten the payload; JSON payloads may nest at most 128 levels");
        }
    };

    let line_rest = source[offset..].split('\n').next().unwrap_or("");
    if source[offset..].starts_with("\"\"\"") {
        return Diagnostic::error(Code::SyntaxError, "unterminated `\"\"\"` string")
            .with_label(Span::new(offset, offset + 3), "this string is never closed")
            .with_help("close the string with `\"\"\"` on a line of its own");
    }
    if found == "\"" && !line_rest[1..].contains('"') {
        return Diagnostic::error(Code::SyntaxError, "unterminated string")
            .with_label(span, "this string is not closed on its line")
            .with_help(
                "close the string with `\"` on the same line, or use `\"\"\"` for text over several lines",
            );
    }

    let found_text = match found.as_str() {
        "" => "end of file".to_string(),
        "end of line" => found.clone(),
        _ => format!("`{found}`"),
    };
    let message = if expected.is_empty() {
        format!("unexpected {found_text}")
    } else {
        format!("expected {expected}, found {found_text}")
    };
    let label = if expected.is_empty() {
        "unexpected here".to_string()
    } else {
        format!("expected {expected}")
    };
    let mut diagnostic = Diagnostic::error(Code::SyntaxError, message).with_label(span, label);
    if let Some(help) = help_for(&found, source, offset) {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic
}

fn help_for(found: &str, source: &str, offset: usize) -> Option<&'static str> {
    if found.starts_with('\'') {
        return Some("strings are written in double quotes");
    }
    let at_line_start = offset == 0 || source[..offset].ends_with('\n');
    if at_line_start && matches!(found, "step" | "let" | "workflow" | "http") {
        return Some("a block above this line may be missing its closing `}`");
    }
    None
}

/// The word or character at `offset`, for the "found" part of a message.
fn found_at(source: &str, offset: usize) -> String {
    let rest = &source[offset.min(source.len())..];
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .take(40)
        .collect();
    if !word.is_empty() {
        return word;
    }
    match rest.chars().next() {
        Some('\n') => "end of line".to_string(),
        Some(c) if c.is_control() || c == '\u{FEFF}' => format!("U+{:04X}", c as u32),
        Some(c) => c.to_string(),
        None => String::new(),
    }
}

fn join_alternatives(phrases: &[&str]) -> String {
    match phrases {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
