//! Structured output: JSON Schemas built from declared fields, tolerant reading of JSON from a model's
//! answer, and validation of that JSON against the fields.
//!
//! The answer is validated even when the provider enforces the schema, because not every provider or
//! model does, and because validation also normalises enum spellings, integers and dates.

use serde_json::{json, Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

/// A declared field of structured output, such as `risk: "low" | "medium" | "high"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub description: Option<String>,
    /// Whether the answer may leave the field null or out.
    pub optional: bool,
}

/// The type of a declared field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    Text,
    Number,
    Integer,
    Boolean,
    /// A calendar date, written `YYYY-MM-DD`.
    Date,
    /// One of these strings, in their declared spelling.
    Enum(Vec<String>),
    List(Box<FieldType>),
    Object(Vec<Field>),
}

/// The description a date gets when its field declares none, which tells the model the expected form.
const DATE_DESCRIPTION: &str = "ISO 8601 date, YYYY-MM-DD";

const DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// The number of characters of a model's text that a validation message quotes before it cuts the rest.
const MAX_QUOTED_CHARS: usize = 80;

/// The number of digits an integer may have when written out in full. A literal such as `1e999999999`
/// is an integer, but writing out its digits would take a gigabyte.
const MAX_INTEGER_DIGITS: i64 = 1000;

/// The nesting depth at which serde_json 1.0 rejects a document, because of its default recursion limit.
/// [`extract_json`] treats a span nested this deep as invalid without parsing it.
const MAX_PARSED_NESTING: usize = 128;

/// The number of times [`extract_json`] rescans the text after a candidate ran to the end of the text
/// without closing. Each rescan costs one pass over the text, so this bounds the work on hostile input.
const MAX_RESCANS: usize = 8;

/// Characters that [`match_choice`] trims from both ends of an answer.
const QUOTE_CHARS: &[char] = &[
    '"', '\'', '`', '\u{201c}', '\u{201d}', '\u{2018}', '\u{2019}', '«', '»',
];

/// Builds the JSON Schema of an object with these fields, in the subset of draft 2020-12 that OpenAI
/// strict structured outputs and Anthropic tool `input_schema` accept:
/// `{"type":"object","properties":{...},"required":[every name, in order],"additionalProperties":false}`.
///
/// Field types map to these schemas:
/// - text: `{"type":"string"}`
/// - number: `{"type":"number"}`
/// - integer: `{"type":"integer"}`
/// - boolean: `{"type":"boolean"}`
/// - date: `{"type":"string","format":"date"}`, with the description "ISO 8601 date, YYYY-MM-DD" unless
///   the field declares one
/// - enum: `{"type":"string","enum":[...]}`
/// - list: `{"type":"array","items":...}`
/// - object: a nested object schema
///
/// A declared description goes in `"description"`.
///
/// Strict mode demands that every property be listed in `"required"`, so an optional field is listed
/// there too, and its schema admits null instead:
/// - a scalar or a list gets a type array, such as `{"type":["string","null"]}`;
/// - an enum gets both `{"type":["string","null"]}` and `null` at the end of its `"enum"` list, because
///   `"enum"` alone would still reject null;
/// - an object becomes `{"anyOf":[object schema, {"type":"null"}]}` with the description beside
///   `"anyOf"`, so the nested object schema stays exactly as it would be for a required field.
pub fn object_schema(fields: &[Field]) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::with_capacity(fields.len());
    for field in fields {
        properties.insert(field.name.clone(), field_schema(field));
        required.push(Value::String(field.name.clone()));
    }

    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Builds the schema that restricts an answer to one of `choices`:
/// `{"type":"object","properties":{"choice":{"type":"string","enum":choices}},"required":["choice"],"additionalProperties":false}`.
pub fn choices_schema(choices: &[String]) -> Value {
    json!({
        "type": "object",
        "properties": {
            "choice": {"type": "string", "enum": choices},
        },
        "required": ["choice"],
        "additionalProperties": false,
    })
}

fn field_schema(field: &Field) -> Value {
    let mut schema = type_schema(&field.ty);
    if field.optional {
        schema = admit_null(schema);
    }
    if let Some(description) = &field.description {
        // Replaces the date hint in place, so the key keeps its position.
        schema.insert("description".to_string(), Value::String(description.clone()));
    }
    Value::Object(schema)
}

fn type_schema(ty: &FieldType) -> Map<String, Value> {
    let schema = match ty {
        FieldType::Text => json!({"type": "string"}),
        FieldType::Number => json!({"type": "number"}),
        FieldType::Integer => json!({"type": "integer"}),
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Date => json!({"type": "string", "format": "date", "description": DATE_DESCRIPTION}),
        FieldType::Enum(members) => json!({"type": "string", "enum": members}),
        FieldType::List(item) => json!({"type": "array", "items": type_schema(item)}),
        FieldType::Object(fields) => object_schema(fields),
    };
    match schema {
        Value::Object(map) => map,
        _ => unreachable!("every schema above is a JSON object"),
    }
}

/// Widens a schema to admit null, in the forms listed on [`object_schema`].
fn admit_null(mut schema: Map<String, Value>) -> Map<String, Value> {
    // A `format` applies to strings only, so a nullable date is a choice of
    // two schemas rather than a list of types.
    if schema.get("type") == Some(&json!("object")) || schema.contains_key("format") {
        let mut wrapper = Map::new();
        wrapper.insert("anyOf".to_string(), json!([schema, {"type": "null"}]));
        return wrapper;
    }

    if let Some(Value::Array(members)) = schema.get_mut("enum") {
        members.push(Value::Null);
    }
    if let Some(ty) = schema.get_mut("type") {
        *ty = json!([ty.take(), "null"]);
    }
    schema
}

/// Reads JSON from a model's answer, tolerantly. It tries the whole text, then the content of the first
/// Markdown code fence (```` ```json ```` or a bare ```` ``` ````), then the first balanced JSON object
/// or array in the text, skipping prose before and after it. Returns `None` when nothing parses.
///
/// Nothing recurses on the text, and the search makes at most nine passes over it, each in linear
/// time, so hostile input such as a megabyte of `{` returns `None` quickly.
pub fn extract_json(text: &str) -> Option<Value> {
    if let Ok(value) = serde_json::from_str(text) {
        return Some(value);
    }
    if let Some(content) = first_code_fence(text) {
        if let Ok(value) = serde_json::from_str(content) {
            return Some(value);
        }
    }
    first_balanced_json(text)
}

/// Returns the content of the first Markdown code fence. A fence that is never closed, as in an answer
/// cut by the token limit, runs to the end of the text.
fn first_code_fence(text: &str) -> Option<&str> {
    let opening = text.find("```")?;
    let after_opening = text[opening..].trim_start_matches('`');

    // An info string such as `json` ends at the line break. A fence written on one line, such as
    // ```{"a": 1}```, has no info string, and its content starts right after the backticks.
    let content = match after_opening.split_once('\n') {
        Some((first_line, rest)) if is_info_string(first_line) => rest,
        _ => after_opening,
    };

    match content.find("```") {
        Some(closing) => Some(&content[..closing]),
        None => Some(content),
    }
}

fn is_info_string(line: &str) -> bool {
    line.trim()
        .chars()
        .all(|character| character.is_alphanumeric() || "-_+.".contains(character))
}

/// Returns the first balanced JSON object or array in the text that parses.
///
/// One pass pairs brackets with a stack. Inside a candidate the scan skips strings, honouring escapes,
/// so brackets inside strings do not count. Outside any candidate, quotes are prose and do not start
/// strings.
///
/// A bracket that prose puts in quotes, as in `the "{" key`, starts a candidate whose strings are then
/// out of step with the JSON that follows. When a candidate runs to the end of the text unclosed after
/// a quote, the scan starts again just after that candidate's opening bracket, at most [`MAX_RESCANS`]
/// times.
fn first_balanced_json(text: &str) -> Option<Value> {
    let bytes = text.as_bytes();
    let mut from = 0;
    for _ in 0..=MAX_RESCANS {
        match find_valid_span(bytes, from) {
            // Both ends are ASCII brackets, so the slice falls on character boundaries.
            SpanSearch::Found(start, end) => return serde_json::from_str(&text[start..=end]).ok(),
            SpanSearch::Rescan(position) => from = position,
            SpanSearch::NotFound => return None,
        }
    }
    None
}

enum SpanSearch {
    /// The byte positions of the opening and closing bracket of the first valid span.
    Found(usize, usize),
    /// No valid span, but a candidate was left unclosed after a quote, so scanning again from this
    /// position may find one.
    Rescan(usize),
    NotFound,
}

/// A balanced span whose closing bracket has not been reached yet.
struct OpenSpan {
    start: usize,
    /// The span's own text with each closed inner span replaced by ` 0 `.
    skeleton: Vec<u8>,
    /// The greatest nesting depth of the spans closed inside this one.
    inner_height: usize,
    inner_spans_valid: bool,
}

/// Finds the earliest-starting balanced span, from `from` on, that is valid JSON.
///
/// Parsing each candidate whole could read a byte once for every span around it. Instead each span is
/// checked bottom-up when it closes. A span is valid JSON exactly when every span inside it is valid
/// and its skeleton, in which each inner span is replaced by ` 0 `, parses. This is true because JSON
/// accepts any value wherever it accepts one. The spaces keep a replacement from merging with a
/// neighbouring token, as `[1[2]]` would become `[10]`. Every byte belongs to one skeleton, so the
/// checks take linear time.
fn find_valid_span(bytes: &[u8], from: usize) -> SpanSearch {
    let mut open: Vec<OpenSpan> = Vec::new();
    let mut valid_spans: Vec<(usize, usize)> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut last_quote = None;

    for (position, &byte) in bytes.iter().enumerate().skip(from) {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            if let Some(innermost) = open.last_mut() {
                innermost.skeleton.push(byte);
            }
            continue;
        }

        match byte {
            b'{' | b'[' => {
                open.push(OpenSpan {
                    start: position,
                    skeleton: vec![byte],
                    inner_height: 0,
                    inner_spans_valid: true,
                });
                continue;
            }
            b'}' | b']' => {
                let Some(innermost) = open.last() else {
                    continue;
                };
                let expected = if bytes[innermost.start] == b'{' {
                    b'}'
                } else {
                    b']'
                };
                if byte == expected {
                    close_span(&mut open, byte, position, &mut valid_spans);
                } else {
                    // A wrong closer means no candidate open here can balance.
                    open.clear();
                }
                // Spans that start later cannot come before the ones found so far.
                if open.is_empty() {
                    if let Some(&(start, end)) = valid_spans.iter().min_by_key(|&&(start, _)| start) {
                        return SpanSearch::Found(start, end);
                    }
                }
                continue;
            }
            b'"' if !open.is_empty() => {
                in_string = true;
                last_quote = Some(position);
            }
            _ => {}
        }
        if let Some(innermost) = open.last_mut() {
            innermost.skeleton.push(byte);
        }
    }

    if let Some(&(start, end)) = valid_spans.iter().min_by_key(|&&(start, _)| start) {
        return SpanSearch::Found(start, end);
    }
    match (open.first(), last_quote) {
        (Some(oldest), Some(quote)) if quote > oldest.start => SpanSearch::Rescan(oldest.start + 1),
        _ => SpanSearch::NotFound,
    }
}

/// Closes the innermost open span at `position`, records it when it is valid JSON, and replaces it in
/// its parent's skeleton.
fn close_span(open: &mut Vec<OpenSpan>, closer: u8, position: usize, valid_spans: &mut Vec<(usize, usize)>) {
    let Some(mut span) = open.pop() else {
        return;
    };
    span.skeleton.push(closer);
    let height = span.inner_height + 1;
    let valid = span.inner_spans_valid
        && height < MAX_PARSED_NESTING
        && serde_json::from_slice::<Value>(&span.skeleton).is_ok();

    if let Some(parent) = open.last_mut() {
        parent.skeleton.extend_from_slice(b" 0 ");
        parent.inner_height = parent.inner_height.max(height);
        parent.inner_spans_valid &= valid;
    }
    if valid {
        valid_spans.push((span.start, position));
    }
}

/// Validates a value against the fields and returns it normalised, or a message that names the path and
/// the problem, such as `` `risk` is "severe", not one of "low", "medium", "high" ``.
///
/// Normalisation:
/// - an enum member matches ignoring ASCII case and surrounding whitespace, and becomes the declared
///   spelling;
/// - an integer may be written with a zero fraction or an exponent (`1.0`, `1e3`), and becomes a plain
///   integer;
/// - a date may be `YYYY-MM-DD` or an RFC 3339 date-time, which is reduced to the date as written in
///   its own offset, and becomes `YYYY-MM-DD`. Invalid dates such as 2026-02-30 are rejected;
/// - an optional field may be null or missing, and a missing one becomes null.
///
/// The output has the fields in declaration order. The first problem found is reported, checking
/// declared fields in order before fields that were not declared.
pub fn validate(value: &Value, fields: &[Field]) -> Result<Value, String> {
    match value {
        Value::Object(object) => validate_object(object, fields, ""),
        other => Err(format!(
            "the answer is {}, expected an object",
            describe_kind(other)
        )),
    }
}

fn validate_object(object: &Map<String, Value>, fields: &[Field], path: &str) -> Result<Value, String> {
    let mut normalised = Map::new();
    for field in fields {
        let field_path = child_path(path, &field.name);
        let value = match object.get(&field.name) {
            None | Some(Value::Null) if field.optional => Value::Null,
            None => return Err(format!("missing field `{field_path}`")),
            Some(value) => validate_value(value, &field.ty, &field_path)?,
        };
        normalised.insert(field.name.clone(), value);
    }

    let undeclared = object
        .keys()
        .find(|key| !fields.iter().any(|field| &field.name == *key));
    if let Some(key) = undeclared {
        let undeclared_path = child_path(path, &shorten(key));
        return Err(format!("unexpected field `{undeclared_path}`"));
    }

    Ok(Value::Object(normalised))
}

fn validate_value(value: &Value, ty: &FieldType, path: &str) -> Result<Value, String> {
    match (ty, value) {
        (FieldType::Text, Value::String(_)) => Ok(value.clone()),
        (FieldType::Number, Value::Number(_)) => Ok(value.clone()),
        (FieldType::Boolean, Value::Bool(_)) => Ok(value.clone()),
        (FieldType::Integer, Value::Number(number)) => validate_integer(number, path),
        (FieldType::Date, Value::String(text)) => match normalise_date(text) {
            Some(date) => Ok(Value::String(date)),
            None => Err(format!(
                "`{path}` is {}, not a valid date in the form YYYY-MM-DD",
                quote(text)
            )),
        },
        (FieldType::Enum(members), Value::String(text)) => match find_member(text, members) {
            Some(member) => Ok(Value::String(member.clone())),
            None => Err(format!(
                "`{path}` is {}, not one of {}",
                quote(text),
                list_members(members)
            )),
        },
        (FieldType::List(item_type), Value::Array(items)) => {
            let mut normalised = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                normalised.push(validate_value(item, item_type, &format!("{path}[{index}]"))?);
            }
            Ok(Value::Array(normalised))
        }
        (FieldType::Object(fields), Value::Object(object)) => validate_object(object, fields, path),
        _ => Err(format!(
            "`{path}` is {}, expected {}",
            describe_kind(value),
            describe_type(ty)
        )),
    }
}

fn validate_integer(number: &Number, path: &str) -> Result<Value, String> {
    if let Some(integer) = number.as_i64() {
        return Ok(Value::Number(integer.into()));
    }
    if let Some(integer) = number.as_u64() {
        return Ok(Value::Number(integer.into()));
    }

    // Beyond 64 bits, or written with a fraction or an exponent. An f64 would round such values, so the
    // check works on the literal, which serde_json keeps because of its `arbitrary_precision` feature.
    let literal = number.to_string();
    let shortened_literal = shorten(&literal);
    match integer_literal(&literal) {
        IntegerLiteral::Integer(digits) => match digits.parse::<Number>() {
            Ok(integer) => Ok(Value::Number(integer)),
            Err(_) => Err(format!("`{path}` is {shortened_literal}, expected an integer")),
        },
        IntegerLiteral::Fraction => Err(format!("`{path}` is {shortened_literal}, expected an integer")),
        IntegerLiteral::TooLarge => Err(format!(
            "`{path}` is {shortened_literal}, expected an integer of at most {MAX_INTEGER_DIGITS} digits"
        )),
    }
}

#[derive(Debug, PartialEq)]
enum IntegerLiteral {
    /// The integer written out in full, with no fraction or exponent.
    Integer(String),
    Fraction,
    TooLarge,
}

/// Rewrites a JSON number literal as an integer literal when its value has no fractional part, exactly,
/// without going through f64.
fn integer_literal(literal: &str) -> IntegerLiteral {
    let (negative, unsigned) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, parse_exponent(exponent)),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));

    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    // The number is 0.significant × 10^point.
    let point = whole.len() as i64 + exponent - (digits.len() - significant.len()) as i64;
    let significant = significant.trim_end_matches('0');

    if significant.is_empty() {
        return IntegerLiteral::Integer("0".to_string());
    }
    if significant.len() as i64 > point {
        return IntegerLiteral::Fraction;
    }
    if point > MAX_INTEGER_DIGITS {
        return IntegerLiteral::TooLarge;
    }

    let zeros = "0".repeat((point - significant.len() as i64) as usize);
    let sign = if negative { "-" } else { "" };
    IntegerLiteral::Integer(format!("{sign}{significant}{zeros}"))
}

/// Parses the exponent of a number literal, saturating far beyond [`MAX_INTEGER_DIGITS`] so that a
/// huge exponent cannot overflow the arithmetic on it.
fn parse_exponent(text: &str) -> i64 {
    const SATURATED: i64 = 1 << 40;
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = digits
        .bytes()
        .try_fold(0i64, |value, digit| {
            let value = value * 10 + i64::from(digit.wrapping_sub(b'0'));
            (value < SATURATED).then_some(value)
        })
        .unwrap_or(SATURATED);
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// Returns the date as `YYYY-MM-DD`, from a `YYYY-MM-DD` date or an RFC 3339 date-time.
fn normalise_date(text: &str) -> Option<String> {
    let text = text.trim();
    // The `time` crate's `[year]` also accepts a leading sign, which YYYY-MM-DD does not have.
    if !text.starts_with(|character: char| character.is_ascii_digit()) {
        return None;
    }
    let date = Date::parse(text, DATE_FORMAT)
        .or_else(|_| OffsetDateTime::parse(text, &Rfc3339).map(|moment| moment.date()))
        .ok()?;
    date.format(DATE_FORMAT).ok()
}

/// Matches a classification answer against the choices. Surrounding whitespace and quotes are trimmed
/// and ASCII case is ignored. Returns the choice in its declared spelling.
pub fn match_choice(answer: &str, choices: &[String]) -> Option<String> {
    let answer = answer.trim();
    // Quotes are trimmed only when the answer does not match as it is, so a choice that ends in an
    // apostrophe, such as `Customers'`, still matches.
    find_member(answer, choices)
        .or_else(|| {
            let unquoted = answer.trim_matches(|character: char| {
                character.is_whitespace() || QUOTE_CHARS.contains(&character)
            });
            find_member(unquoted, choices)
        })
        .cloned()
}

/// Finds the member that `candidate` names, preferring an exact match to one that ignores case,
/// so that members that differ only in case stay distinguishable.
fn find_member<'a>(candidate: &str, members: &'a [String]) -> Option<&'a String> {
    let candidate = candidate.trim();
    members
        .iter()
        .find(|member| member.as_str() == candidate)
        .or_else(|| {
            members
                .iter()
                .find(|member| member.to_lowercase() == candidate.to_lowercase())
        })
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn describe_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn describe_type(ty: &FieldType) -> String {
    match ty {
        FieldType::Text => "text".to_string(),
        FieldType::Number => "a number".to_string(),
        FieldType::Integer => "an integer".to_string(),
        FieldType::Boolean => "a boolean".to_string(),
        FieldType::Date => "a date in the form YYYY-MM-DD".to_string(),
        FieldType::Enum(members) => format!("one of {}", list_members(members)),
        FieldType::List(_) => "a list".to_string(),
        FieldType::Object(_) => "an object".to_string(),
    }
}

fn list_members(members: &[String]) -> String {
    members
        .iter()
        .map(|member| quote(member))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes text as a JSON string literal, so that control characters and quotes show escaped, cut to
/// [`MAX_QUOTED_CHARS`] characters.
fn quote(text: &str) -> String {
    Value::String(shorten(text)).to_string()
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn field(name: &str, ty: FieldType) -> Field {
        Field {
            name: name.to_string(),
            ty,
            description: None,
            optional: false,
        }
    }

    fn optional(name: &str, ty: FieldType) -> Field {
        Field {
            optional: true,
            ..field(name, ty)
        }
    }

    fn described(mut field: Field, description: &str) -> Field {
        field.description = Some(description.to_string());
        field
    }

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn risk_enum() -> FieldType {
        FieldType::Enum(members(&["low", "medium", "high"]))
    }

    fn keys(value: &Value) -> Vec<&str> {
        value.as_object().unwrap().keys().map(String::as_str).collect()
    }

    // Schemas

    #[test]
    fn schema_for_every_type() {
        let fields = vec![
            described(field("summary", FieldType::Text), "One sentence."),
            field("amount", FieldType::Number),
            field("count", FieldType::Integer),
            field("flagged", FieldType::Boolean),
            field("due", FieldType::Date),
            described(field("received", FieldType::Date), "When the claim arrived."),
            field("risk", risk_enum()),
            field("reasons", FieldType::List(Box::new(FieldType::Text))),
            field(
                "address",
                FieldType::Object(vec![
                    field("city", FieldType::Text),
                    field("postcode", FieldType::Text),
                ]),
            ),
        ];

        let expected = json!({
            "type": "object",
            "properties": {
                "summary": {"type": "string", "description": "One sentence."},
                "amount": {"type": "number"},
                "count": {"type": "integer"},
                "flagged": {"type": "boolean"},
                "due": {"type": "string", "format": "date", "description": "ISO 8601 date, YYYY-MM-DD"},
                "received": {"type": "string", "format": "date", "description": "When the claim arrived."},
                "risk": {"type": "string", "enum": ["low", "medium", "high"]},
                "reasons": {"type": "array", "items": {"type": "string"}},
                "address": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "postcode": {"type": "string"},
                    },
                    "required": ["city", "postcode"],
                    "additionalProperties": false,
                },
            },
            "required": ["summary", "amount", "count", "flagged", "due", "received", "risk", "reasons", "address"],
            "additionalProperties": false,
        });
        assert_eq!(object_schema(&fields), expected);
    }

    #[test]
    fn schema_keeps_declaration_order() {
        let fields = vec![
            field("zeta", FieldType::Text),
            field("alpha", FieldType::Text),
            field("mid", FieldType::Text),
        ];
        let schema = object_schema(&fields);

        // Map equality ignores order, so the order is checked on the keys and the serialised text.
        assert_eq!(keys(&schema["properties"]), ["zeta", "alpha", "mid"]);
        assert_eq!(
            keys(&schema),
            ["type", "properties", "required", "additionalProperties"]
        );
        assert_eq!(
            schema.to_string(),
            r#"{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"string"},"mid":{"type":"string"}},"required":["zeta","alpha","mid"],"additionalProperties":false}"#
        );
    }

    #[test]
    fn schema_for_optional_fields_admits_null() {
        let fields = vec![
            optional("note", FieldType::Text),
            optional("amount", FieldType::Number),
            optional("count", FieldType::Integer),
            optional("flagged", FieldType::Boolean),
            optional("due", FieldType::Date),
            described(optional("risk", risk_enum()), "How risky."),
            optional("tags", FieldType::List(Box::new(FieldType::Text))),
            described(
                optional("address", FieldType::Object(vec![field("city", FieldType::Text)])),
                "Where it happened.",
            ),
        ];

        let expected = json!({
            "type": "object",
            "properties": {
                "note": {"type": ["string", "null"]},
                "amount": {"type": ["number", "null"]},
                "count": {"type": ["integer", "null"]},
                "flagged": {"type": ["boolean", "null"]},
                "due": {"anyOf": [{"type": "string", "format": "date", "description": "ISO 8601 date, YYYY-MM-DD"}, {"type": "null"}]},
                "risk": {"type": ["string", "null"], "enum": ["low", "medium", "high", null], "description": "How risky."},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                "address": {
                    "anyOf": [
                        {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                            "additionalProperties": false,
                        },
                        {"type": "null"},
                    ],
                    "description": "Where it happened.",
                },
            },
            "required": ["note", "amount", "count", "flagged", "due", "risk", "tags", "address"],
            "additionalProperties": false,
        });
        assert_eq!(object_schema(&fields), expected);
    }

    #[test]
    fn schema_for_nested_lists() {
        let fields = vec![
            field(
                "items",
                FieldType::List(Box::new(FieldType::Object(vec![
                    field("name", FieldType::Text),
                    optional("when", FieldType::Date),
                ]))),
            ),
            field(
                "grid",
                FieldType::List(Box::new(FieldType::List(Box::new(FieldType::Integer)))),
            ),
            field("levels", FieldType::List(Box::new(risk_enum()))),
        ];

        let expected = json!({
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "when": {"anyOf": [{"type": "string", "format": "date", "description": "ISO 8601 date, YYYY-MM-DD"}, {"type": "null"}]},
                        },
                        "required": ["name", "when"],
                        "additionalProperties": false,
                    },
                },
                "grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                "levels": {"type": "array", "items": {"type": "string", "enum": ["low", "medium", "high"]}},
            },
            "required": ["items", "grid", "levels"],
            "additionalProperties": false,
        });
        assert_eq!(object_schema(&fields), expected);
    }

    #[test]
    fn schema_with_no_fields() {
        let expected = json!({
            "type": "object",
            "properties": {},
            "required": [],
            "additionalProperties": false,
        });
        assert_eq!(object_schema(&[]), expected);
    }

    #[test]
    fn choices_schema_lists_choices() {
        let expected = json!({
            "type": "object",
            "properties": {"choice": {"type": "string", "enum": ["billing", "technical", "other"]}},
            "required": ["choice"],
            "additionalProperties": false,
        });
        assert_eq!(
            choices_schema(&members(&["billing", "technical", "other"])),
            expected
        );
    }

    // Reading JSON from answers

    #[test]
    fn extract_plain_json() {
        assert_eq!(extract_json(r#"{"risk": "low"}"#), Some(json!({"risk": "low"})));
        assert_eq!(extract_json("  \n[1, 2]\n "), Some(json!([1, 2])));
        assert_eq!(extract_json("42"), Some(json!(42)));
    }

    #[test]
    fn extract_json_fence() {
        let text = "Here is the result:\n```json\n{\"risk\": \"high\", \"reasons\": [\"late\"]}\n```\nDone.";
        assert_eq!(
            extract_json(text),
            Some(json!({"risk": "high", "reasons": ["late"]}))
        );
    }

    #[test]
    fn extract_bare_fence() {
        let text = "```\n{\"a\": 1}\n```";
        assert_eq!(extract_json(text), Some(json!({"a": 1})));
    }

    #[test]
    fn extract_fence_variants() {
        assert_eq!(
            extract_json("```JSON\r\n{\"a\": 1}\r\n```"),
            Some(json!({"a": 1}))
        );
        assert_eq!(extract_json("```{\"a\": 1}```"), Some(json!({"a": 1})));
        assert_eq!(extract_json("````json\n{\"a\": 1}\n````"), Some(json!({"a": 1})));
        // An answer cut by the token limit may lose its closing fence.
        assert_eq!(extract_json("```json\n{\"a\": 1}\n"), Some(json!({"a": 1})));
        // A fenced scalar is read from the fence.
        assert_eq!(extract_json("```\n\"low\"\n```"), Some(json!("low")));
    }

    #[test]
    fn extract_fence_containing_backticks_in_string() {
        let text = "```json\n{\"code\": \"use ``` to fence\"}\n```";
        assert_eq!(extract_json(text), Some(json!({"code": "use ``` to fence"})));
    }

    #[test]
    fn extract_skips_prose_around_json() {
        let text = "Sure! The classification is {\"risk\": \"medium\"} as requested. Let me know.";
        assert_eq!(extract_json(text), Some(json!({"risk": "medium"})));

        let text = "Answer:\n[{\"a\": 1}, {\"b\": 2}]\nThat's all.";
        assert_eq!(extract_json(text), Some(json!([{"a": 1}, {"b": 2}])));
    }

    #[test]
    fn extract_respects_braces_in_strings() {
        let text = r#"Result: {"pattern": "}{][", "note": "a \"quoted}\" brace \\"} trailing }"#;
        assert_eq!(
            extract_json(text),
            Some(json!({"pattern": "}{][", "note": "a \"quoted}\" brace \\"}))
        );
    }

    #[test]
    fn extract_nested_objects() {
        let text = r#"Output: {"a": {"b": {"c": [1, {"d": null}]}}, "e": true} -- end"#;
        assert_eq!(
            extract_json(text),
            Some(json!({"a": {"b": {"c": [1, {"d": null}]}}, "e": true}))
        );
    }

    #[test]
    fn extract_skips_candidates_that_do_not_parse() {
        // The first balanced span is not JSON, so the next one is used.
        let text = r#"Use {placeholders} like this: {"a": 1}"#;
        assert_eq!(extract_json(text), Some(json!({"a": 1})));

        // A span that is not JSON may contain one that is.
        let text = r#"{ note: {"a": 1} }"#;
        assert_eq!(extract_json(text), Some(json!({"a": 1})));

        // An unclosed bracket before the JSON does not hide it.
        let text = r#"I think { is odd. {"a": 1}"#;
        assert_eq!(extract_json(text), Some(json!({"a": 1})));

        // A replaced inner span must not merge with its neighbour, as `[1[2]]` would become `[10]`.
        assert_eq!(extract_json("[1[2]]"), Some(json!([2])));
        assert_eq!(extract_json(r#"{"a": 1{"b": 2}}"#), Some(json!({"b": 2})));

        // A wrong closer ends the candidates open before it.
        let text = r#"{ ] then {"a": 1}"#;
        assert_eq!(extract_json(text), Some(json!({"a": 1})));
    }

    #[test]
    fn extract_after_quoted_bracket_in_prose() {
        let text = r#"The "{" character starts objects. Result: {"a": 1}"#;
        assert_eq!(extract_json(text), Some(json!({"a": 1})));
    }

    #[test]
    fn extract_returns_first_candidate() {
        let text = r#"First {"a": 1} then {"b": 2}"#;
        assert_eq!(extract_json(text), Some(json!({"a": 1})));
    }

    #[test]
    fn extract_keeps_key_order_and_big_numbers() {
        let value = extract_json(r#"text {"z": 1, "a": 123456789012345678901234567890} text"#).unwrap();
        assert_eq!(keys(&value), ["z", "a"]);
        assert_eq!(value["a"].to_string(), "123456789012345678901234567890");
    }

    #[test]
    fn extract_garbage_is_none() {
        assert_eq!(extract_json(""), None);
        assert_eq!(extract_json("I cannot help with that."), None);
        assert_eq!(extract_json("{not json}"), None);
        assert_eq!(extract_json("```\nnot json\n```"), None);
        assert_eq!(extract_json("}}}]]] {{{ [[["), None);
        assert_eq!(extract_json(r#"{"a": "unterminated}"#), None);
    }

    #[test]
    fn extract_hostile_input_is_none_quickly() {
        let hostile_inputs = [
            "{".repeat(1 << 20),
            "[".repeat(1 << 20),
            r#"{"{"#.repeat(1 << 18),
            "```".repeat(1 << 18),
            // Parsing each of the nested spans whole would read the long list once per level.
            format!(
                "{}[{}x]{}",
                "[".repeat(126),
                "1,".repeat(1 << 19),
                "]".repeat(126)
            ),
        ];
        for text in &hostile_inputs {
            let started = Instant::now();
            assert_eq!(extract_json(text), None, "input starting {:?}", &text[..8]);
            // A search that restarted at every bracket, or parsed every nested span whole, takes far
            // longer than this in a debug build.
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "input starting {:?}",
                &text[..8]
            );
        }
    }

    #[test]
    fn extract_deep_nesting_quickly() {
        // Half a million balanced spans, each parsed until serde_json's recursion limit stops it.
        let text = format!("{}{}", "[".repeat(1 << 19), "]".repeat(1 << 19));
        let started = Instant::now();
        assert!(extract_json(&text).is_some());
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn extract_deep_but_valid_nesting() {
        // Deeper than serde_json's recursion limit, so only an inner span parses.
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let value = extract_json(&text).unwrap();
        let mut depth = 0;
        let mut current = &value;
        while let Value::Array(items) = current {
            depth += 1;
            current = &items[0];
        }
        assert_eq!(current, &json!(1));
        assert_eq!(depth, MAX_PARSED_NESTING - 1);
    }

    // Validation

    #[test]
    fn validate_every_type() {
        let fields = vec![
            field("summary", FieldType::Text),
            field("amount", FieldType::Number),
            field("count", FieldType::Integer),
            field("flagged", FieldType::Boolean),
            field("due", FieldType::Date),
            field("risk", risk_enum()),
            field("reasons", FieldType::List(Box::new(FieldType::Text))),
            field("address", FieldType::Object(vec![field("city", FieldType::Text)])),
        ];
        let value = json!({
            "summary": "Late filing",
            "amount": 12.5,
            "count": 3,
            "flagged": false,
            "due": "2026-03-01",
            "risk": "high",
            "reasons": ["late", "incomplete"],
            "address": {"city": "Leeds"},
        });
        assert_eq!(validate(&value, &fields), Ok(value.clone()));
    }

    #[test]
    fn validate_orders_output_by_declaration() {
        let fields = vec![
            field("first", FieldType::Text),
            optional("second", FieldType::Text),
            field(
                "third",
                FieldType::Object(vec![
                    field("x", FieldType::Integer),
                    field("y", FieldType::Integer),
                ]),
            ),
        ];
        let value = json!({"third": {"y": 2, "x": 1}, "first": "a"});
        let normalised = validate(&value, &fields).unwrap();
        assert_eq!(keys(&normalised), ["first", "second", "third"]);
        assert_eq!(keys(&normalised["third"]), ["x", "y"]);
    }

    #[test]
    fn validate_normalises_enum_members() {
        let fields = vec![field("risk", risk_enum())];
        for answer in ["high", "HIGH", "  High\n", "hIgH "] {
            assert_eq!(
                validate(&json!({"risk": answer}), &fields),
                Ok(json!({"risk": "high"})),
                "answer {answer:?}"
            );
        }
    }

    #[test]
    fn validate_enum_prefers_exact_spelling() {
        let fields = vec![field("grade", FieldType::Enum(members(&["A", "a"])))];
        assert_eq!(
            validate(&json!({"grade": "a"}), &fields),
            Ok(json!({"grade": "a"}))
        );
        assert_eq!(
            validate(&json!({"grade": "A"}), &fields),
            Ok(json!({"grade": "A"}))
        );
    }

    #[test]
    fn validate_rejects_enum_non_member() {
        let fields = vec![field("risk", risk_enum())];
        assert_eq!(
            validate(&json!({"risk": "severe"}), &fields),
            Err(r#"`risk` is "severe", not one of "low", "medium", "high""#.to_string())
        );
        assert_eq!(
            validate(&json!({"risk": 3}), &fields),
            Err(r#"`risk` is a number, expected one of "low", "medium", "high""#.to_string())
        );
    }

    #[test]
    fn validate_integers() {
        let fields = vec![field("count", FieldType::Integer)];
        let cases = [
            ("1", "1"),
            ("1.0", "1"),
            ("-7.000", "-7"),
            ("1e3", "1000"),
            ("1.5E+1", "15"),
            ("2500e-2", "25"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("0e5", "0"),
            ("18446744073709551615", "18446744073709551615"),
            ("123456789012345678901234567890", "123456789012345678901234567890"),
            (
                "123456789012345678901234567890.000",
                "123456789012345678901234567890",
            ),
            ("-1.2345678901234567890123e22", "-12345678901234567890123"),
        ];
        for (literal, expected) in cases {
            let value: Value = serde_json::from_str(&format!(r#"{{"count": {literal}}}"#)).unwrap();
            let normalised = validate(&value, &fields).unwrap_or_else(|error| panic!("{literal}: {error}"));
            assert_eq!(normalised["count"].to_string(), expected, "literal {literal}");
        }
    }

    #[test]
    fn validate_rejects_fractional_integers() {
        let fields = vec![field("count", FieldType::Integer)];
        for literal in [
            "2.5",
            "1.0000000000000000001",
            "1e-1",
            "123456789012345678901234567890.5",
        ] {
            let value: Value = serde_json::from_str(&format!(r#"{{"count": {literal}}}"#)).unwrap();
            assert_eq!(
                validate(&value, &fields),
                Err(format!("`count` is {literal}, expected an integer")),
                "literal {literal}"
            );
        }
        assert_eq!(
            validate(&json!({"count": "3"}), &fields),
            Err("`count` is text, expected an integer".to_string())
        );
    }

    #[test]
    fn validate_rejects_huge_integer_exponent() {
        let fields = vec![field("count", FieldType::Integer)];
        let value: Value = serde_json::from_str(r#"{"count": 1e999999999999}"#).unwrap();
        assert_eq!(
            validate(&value, &fields),
            Err("`count` is 1e+999999999999, expected an integer of at most 1000 digits".to_string())
        );
    }

    #[test]
    fn integer_literal_edge_cases() {
        assert_eq!(
            integer_literal("1e-999999999999999999999"),
            IntegerLiteral::Fraction
        );
        assert_eq!(
            integer_literal("0.0e999999999999999999999"),
            IntegerLiteral::Integer("0".to_string())
        );
        assert_eq!(
            integer_literal("1e999999999999999999999"),
            IntegerLiteral::TooLarge
        );
        assert_eq!(integer_literal("1e1000"), IntegerLiteral::TooLarge);
        assert_eq!(
            integer_literal("1e999"),
            IntegerLiteral::Integer(format!("1{}", "0".repeat(999)))
        );
    }

    #[test]
    fn validate_numbers_keep_their_literal() {
        let fields = vec![field("amount", FieldType::Number)];
        let value: Value = serde_json::from_str(r#"{"amount": 0.10000000000000000000001}"#).unwrap();
        let normalised = validate(&value, &fields).unwrap();
        assert_eq!(normalised["amount"].to_string(), "0.10000000000000000000001");
        assert_eq!(
            validate(&json!({"amount": "12.5"}), &fields),
            Err("`amount` is text, expected a number".to_string())
        );
    }

    #[test]
    fn validate_booleans() {
        let fields = vec![field("flagged", FieldType::Boolean)];
        assert_eq!(
            validate(&json!({"flagged": true}), &fields),
            Ok(json!({"flagged": true}))
        );
        assert_eq!(
            validate(&json!({"flagged": "true"}), &fields),
            Err("`flagged` is text, expected a boolean".to_string())
        );
        assert_eq!(
            validate(&json!({"flagged": 1}), &fields),
            Err("`flagged` is a number, expected a boolean".to_string())
        );
    }

    #[test]
    fn validate_text_rejects_other_types() {
        let fields = vec![field("summary", FieldType::Text)];
        let cases = [
            (json!(5), "a number"),
            (json!(false), "a boolean"),
            (json!(["a"]), "a list"),
            (json!({"a": 1}), "an object"),
        ];
        for (value, kind) in cases {
            assert_eq!(
                validate(&json!({"summary": value}), &fields),
                Err(format!("`summary` is {kind}, expected text"))
            );
        }
    }

    #[test]
    fn validate_normalises_dates() {
        let fields = vec![field("due", FieldType::Date)];
        let cases = [
            ("2026-03-01", "2026-03-01"),
            (" 2024-02-29 ", "2024-02-29"),
            ("2026-03-01T10:00:00Z", "2026-03-01"),
            ("2026-03-01T10:00:00.123+02:00", "2026-03-01"),
            // The date as written in its own offset, not converted to UTC.
            ("2026-03-01T23:30:00-05:00", "2026-03-01"),
        ];
        for (answer, expected) in cases {
            assert_eq!(
                validate(&json!({"due": answer}), &fields),
                Ok(json!({"due": expected})),
                "answer {answer:?}"
            );
        }
    }

    #[test]
    fn validate_rejects_invalid_dates() {
        let fields = vec![field("due", FieldType::Date)];
        for answer in [
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "2026-3-1",
            "+2026-03-01",
            "-2026-03-01",
            "01/03/2026",
            "March 1, 2026",
            "2026-03-01T10:00:00",
            "2026-02-30T10:00:00Z",
            "",
        ] {
            assert_eq!(
                validate(&json!({"due": answer}), &fields),
                Err(format!(
                    "`due` is \"{answer}\", not a valid date in the form YYYY-MM-DD"
                )),
                "answer {answer:?}"
            );
        }
        assert_eq!(
            validate(&json!({"due": 20260301}), &fields),
            Err("`due` is a number, expected a date in the form YYYY-MM-DD".to_string())
        );
    }

    #[test]
    fn validate_lists() {
        let fields = vec![field("reasons", FieldType::List(Box::new(FieldType::Text)))];
        assert_eq!(
            validate(&json!({"reasons": []}), &fields),
            Ok(json!({"reasons": []}))
        );
        assert_eq!(
            validate(&json!({"reasons": ["a", "b", 3]}), &fields),
            Err("`reasons[2]` is a number, expected text".to_string())
        );
        assert_eq!(
            validate(&json!({"reasons": "a"}), &fields),
            Err("`reasons` is text, expected a list".to_string())
        );
    }

    #[test]
    fn validate_nested_lists_and_objects() {
        let item = FieldType::Object(vec![
            field("name", FieldType::Text),
            field("level", risk_enum()),
            optional("when", FieldType::Date),
            field(
                "scores",
                FieldType::List(Box::new(FieldType::List(Box::new(FieldType::Integer)))),
            ),
        ]);
        let fields = vec![field("items", FieldType::List(Box::new(item)))];

        let value = json!({"items": [
            {"name": "a", "level": "LOW", "when": "2026-01-05T08:00:00Z", "scores": [[1.0, 2], []]},
            {"name": "b", "level": " high", "scores": []},
        ]});
        let expected = json!({"items": [
            {"name": "a", "level": "low", "when": "2026-01-05", "scores": [[1, 2], []]},
            {"name": "b", "level": "high", "when": null, "scores": []},
        ]});
        assert_eq!(validate(&value, &fields), Ok(expected));

        let cases = [
            (
                json!({"items": [{"name": "a", "level": "low", "scores": [[1], [2, 2.5]]}]}),
                "`items[0].scores[1][1]` is 2.5, expected an integer",
            ),
            (
                json!({"items": [{"name": "a", "level": "low", "scores": []}, {"name": "b", "scores": []}]}),
                "missing field `items[1].level`",
            ),
            (
                json!({"items": [{"name": "a", "level": "low", "scores": [], "extra": 1}]}),
                "unexpected field `items[0].extra`",
            ),
            (
                json!({"items": [{"name": "a", "level": "low", "when": "2026-02-30", "scores": []}]}),
                "`items[0].when` is \"2026-02-30\", not a valid date in the form YYYY-MM-DD",
            ),
            (
                json!({"items": [["a"]]}),
                "`items[0]` is a list, expected an object",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(validate(&value, &fields), Err(message.to_string()));
        }
    }

    #[test]
    fn validate_nested_object_paths() {
        let fields = vec![field(
            "claim",
            FieldType::Object(vec![field(
                "address",
                FieldType::Object(vec![field("city", FieldType::Text)]),
            )]),
        )];
        assert_eq!(
            validate(&json!({"claim": {"address": {"city": 1}}}), &fields),
            Err("`claim.address.city` is a number, expected text".to_string())
        );
        assert_eq!(
            validate(&json!({"claim": {"address": {}}}), &fields),
            Err("missing field `claim.address.city`".to_string())
        );
        assert_eq!(
            validate(&json!({"claim": {"address": "Leeds"}}), &fields),
            Err("`claim.address` is text, expected an object".to_string())
        );
    }

    #[test]
    fn validate_optional_null_or_missing() {
        let fields = vec![
            field("risk", risk_enum()),
            optional("note", FieldType::Text),
            optional("due", FieldType::Date),
            optional("address", FieldType::Object(vec![field("city", FieldType::Text)])),
        ];
        assert_eq!(
            validate(&json!({"risk": "low", "note": null}), &fields),
            Ok(json!({"risk": "low", "note": null, "due": null, "address": null}))
        );
        assert_eq!(
            validate(
                &json!({"risk": "low", "note": "n", "due": "2026-01-01", "address": {"city": "York"}}),
                &fields
            ),
            Ok(json!({"risk": "low", "note": "n", "due": "2026-01-01", "address": {"city": "York"}}))
        );
        // An optional field that is present must still have the right type.
        assert_eq!(
            validate(&json!({"risk": "low", "note": 5}), &fields),
            Err("`note` is a number, expected text".to_string())
        );
    }

    #[test]
    fn validate_missing_required_field() {
        let fields = vec![field("risk", risk_enum()), field("flagged", FieldType::Boolean)];
        assert_eq!(
            validate(&json!({"risk": "low"}), &fields),
            Err("missing field `flagged`".to_string())
        );
    }

    #[test]
    fn validate_null_required_field() {
        let fields = vec![field("flagged", FieldType::Boolean)];
        assert_eq!(
            validate(&json!({"flagged": null}), &fields),
            Err("`flagged` is null, expected a boolean".to_string())
        );
    }

    #[test]
    fn validate_unexpected_field() {
        let fields = vec![field("risk", risk_enum())];
        assert_eq!(
            validate(&json!({"risk": "low", "extra": true}), &fields),
            Err("unexpected field `extra`".to_string())
        );
    }

    #[test]
    fn validate_rejects_non_object_answer() {
        let fields = vec![field("risk", risk_enum())];
        assert_eq!(
            validate(&json!(["low"]), &fields),
            Err("the answer is a list, expected an object".to_string())
        );
        assert_eq!(
            validate(&json!("low"), &fields),
            Err("the answer is text, expected an object".to_string())
        );
    }

    #[test]
    fn validate_messages_shorten_long_text() {
        let fields = vec![field("risk", FieldType::Enum(members(&["low"])))];
        let long = "x".repeat(500);
        let message = validate(&json!({"risk": long}), &fields).unwrap_err();
        assert_eq!(
            message,
            format!("`risk` is \"{}…\", not one of \"low\"", "x".repeat(80))
        );

        let long_key = "k".repeat(500);
        let message = validate(&json!({"risk": "low", long_key: 1}), &fields).unwrap_err();
        assert_eq!(message, format!("unexpected field `{}…`", "k".repeat(80)));
    }

    #[test]
    fn validate_messages_escape_quotes() {
        let fields = vec![field("risk", risk_enum())];
        assert_eq!(
            validate(&json!({"risk": "very \"high\""}), &fields),
            Err(r#"`risk` is "very \"high\"", not one of "low", "medium", "high""#.to_string())
        );
    }

    // Matching choices

    #[test]
    fn match_choice_ignores_case_whitespace_and_quotes() {
        let choices = members(&["Billing", "Technical", "Other"]);
        for answer in [
            "Billing",
            "billing",
            "  BILLING\n",
            "\"billing\"",
            "'Billing'",
            "`billing`",
            "\u{201c}Billing\u{201d}",
            " \" billing \" ",
        ] {
            assert_eq!(
                match_choice(answer, &choices),
                Some("Billing".to_string()),
                "answer {answer:?}"
            );
        }
    }

    #[test]
    fn match_choice_rejects_non_member() {
        let choices = members(&["Billing", "Technical", "Other"]);
        assert_eq!(match_choice("Sales", &choices), None);
        assert_eq!(match_choice("Billing issue", &choices), None);
        assert_eq!(match_choice("", &choices), None);
        assert_eq!(match_choice("Billing", &[]), None);
    }

    #[test]
    fn match_choice_keeps_trailing_apostrophe() {
        let choices = members(&["Customers'", "Customers"]);
        assert_eq!(
            match_choice("customers'", &choices),
            Some("Customers'".to_string())
        );
        assert_eq!(
            match_choice("'customers'", &choices),
            Some("Customers".to_string())
        );
    }
}
