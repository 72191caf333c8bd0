//! Coercion of extracted values to their declared types: amounts written
//! as on paper become numbers, dates in common written forms become ISO
//! 8601, and yes/no become booleans. The result is then validated by
//! [`crate::llm::schema::validate`], field by field, so that a value that
//! still does not fit is an error naming its field, or null when the field
//! is optional.

use serde_json::{Map, Value};

use crate::llm::schema::{validate, Field, FieldType};

/// Coerces and validates an extracted object against `fields`. The result
/// has the declared fields in order.
pub fn coerce_object(value: &Value, fields: &[Field]) -> Result<Value, String> {
    let empty = Map::new();
    let object = match value {
        Value::Object(object) => object,
        Value::Null => &empty,
        other => return Err(format!("the answer is not an object but {other}")),
    };
    let mut result = Map::new();
    for field in fields {
        let raw = object.get(&field.name).cloned().unwrap_or(Value::Null);
        let coerced = coerce_value(raw, &field.ty);
        if coerced.is_null() && !field.optional {
            return Err(format!("`{}` was not found in the document", field.name));
        }
        let single = Value::Object(Map::from_iter([(field.name.clone(), coerced)]));
        let checked = match validate(&single, std::slice::from_ref(field)) {
            Ok(Value::Object(mut checked)) => checked.remove(&field.name).unwrap_or(Value::Null),
            Ok(_) => Value::Null,
            Err(_) if field.optional => Value::Null,
            Err(problem) => return Err(problem),
        };
        result.insert(field.name.clone(), checked);
    }
    Ok(Value::Object(result))
}

/// Coerces one value towards `ty`; a value that cannot be coerced is
/// returned unchanged, for validation to report.
pub fn coerce_value(value: Value, ty: &FieldType) -> Value {
    if let Value::String(text) = &value {
        if is_no_value(text, ty) {
            return Value::Null;
        }
    }
    match (ty, value) {
        (FieldType::Number | FieldType::Integer, Value::String(text)) => match parse_amount(&text) {
            Some(number) => number,
            None => Value::String(text),
        },
        (FieldType::Boolean, Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "yes" | "y" | "true" | "1" => Value::Bool(true),
            "no" | "n" | "false" | "0" => Value::Bool(false),
            _ => Value::String(text),
        },
        (FieldType::Date, Value::String(text)) => match parse_date(&text) {
            Some(date) => Value::String(date),
            None => Value::String(text),
        },
        (FieldType::Text, Value::Number(number)) => Value::String(number.to_string()),
        (FieldType::Text, Value::Bool(flag)) => Value::String(flag.to_string()),
        (FieldType::List(item), Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|value| coerce_value(value, item))
                .filter(|value| !value.is_null())
                .collect(),
        ),
        (FieldType::List(item), Value::String(text)) => Value::Array(
            list_items(&text)
                .map(|piece| coerce_value(Value::String(piece.to_string()), item))
                .filter(|value| !value.is_null())
                .collect(),
        ),
        (FieldType::List(_), Value::Null) => Value::Null,
        (FieldType::List(item), scalar) => Value::Array(vec![coerce_value(scalar, item)]),
        (FieldType::Object(fields), Value::Object(object)) => {
            let mut result = Map::new();
            for field in fields {
                if let Some(value) = object.get(&field.name) {
                    result.insert(field.name.clone(), coerce_value(value.clone(), &field.ty));
                }
            }
            for (key, value) in object {
                if !result.contains_key(&key) {
                    result.insert(key, value);
                }
            }
            Value::Object(result)
        }
        (_, value) => value,
    }
}

/// Splits a list written as one string, such as `"Ada Lovelace, Grace
/// Hopper"`, at commas and semicolons into its trimmed, non-empty items.
pub fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', ';'])
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
}

/// Whether `text` stands for no value in a field of type `ty`: a
/// placeholder such as `"N/A"` that is not a member of an enumeration.
pub fn is_no_value(text: &str, ty: &FieldType) -> bool {
    is_blank(text) && !is_member(text, ty)
}

/// Whether `text` is a member of the enumeration `ty`, ignoring case, so
/// that a member such as `"none"` is not taken for a missing value.
fn is_member(text: &str, ty: &FieldType) -> bool {
    match ty {
        FieldType::Enum(members) => members
            .iter()
            .any(|member| member.eq_ignore_ascii_case(text.trim())),
        _ => false,
    }
}

/// Whether `text` is a placeholder that stands for no value, such as
/// `"N/A"`, `"null"`, `"none"`, `"unknown"` or `"-"`.
fn is_blank(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "" | "null" | "none" | "n/a" | "na" | "-" | "unknown"
    )
}

/// Parses an amount as written on paper: `$1,234.50`, `USD 1 234.50`,
/// `(250.00)` for a negative amount, `12%`. Returns a JSON number, or
/// `None` when the text is not one amount.
pub fn parse_amount(text: &str) -> Option<Value> {
    let mut text = text.trim();
    let mut negative = false;
    if let Some(inner) = text.strip_prefix('(').and_then(|rest| rest.strip_suffix(')')) {
        negative = true;
        text = inner.trim();
    }
    let mut cleaned = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' | '.' => cleaned.push(c),
            '-' | '−' if cleaned.is_empty() => negative = !negative,
            ',' | ' ' | '\u{a0}' | '\'' | '_' => {}
            '$' | '€' | '£' | '¥' | '%' => {}
            c if c.is_ascii_alphabetic() => {
                // A currency code such as USD before or after the amount.
                if !text.split_whitespace().any(is_currency_code) {
                    return None;
                }
            }
            _ => return None,
        }
    }
    if cleaned.is_empty() || cleaned.matches('.').count() > 1 || cleaned == "." {
        return None;
    }
    let literal = if negative { format!("-{cleaned}") } else { cleaned };
    let number: f64 = literal.parse().ok()?;
    if !number.is_finite() {
        return None;
    }
    if number.fract() == 0.0 && number.abs() < 9.0e15 {
        return Some(Value::from(number as i64));
    }
    serde_json::Number::from_f64(number).map(Value::Number)
}

fn is_currency_code(word: &str) -> bool {
    word.len() == 3 && word.bytes().all(|byte| byte.is_ascii_uppercase())
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Parses a date in a common written form and returns it as `YYYY-MM-DD`:
/// `2026-03-01`, `2026/03/01`, `March 1, 2026`, `1 March 2026`,
/// `Mar. 1 2026`, `03/01/2026` (month first, as in the United States) and
/// `01.03.2026` (day first). A date-time keeps its date. Returns `None` for
/// anything else and for dates that do not exist.
pub fn parse_date(text: &str) -> Option<String> {
    let text = text.trim();
    let head: String = text.chars().take(10).collect();
    let words: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| !word.is_empty())
        .map(|word| word.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let (year, month, day) = if let Some(date) = numeric_date(&head, '-', [0, 1, 2]) {
        date
    } else if let Some(date) = numeric_date(text, '/', [0, 1, 2]) {
        date
    } else if let Some(date) = numeric_date(text, '/', [2, 0, 1]) {
        date
    } else if let Some(date) = numeric_date(text, '.', [2, 1, 0]) {
        date
    } else if words.len() == 3 {
        let month_of = |word: &str| {
            MONTHS
                .iter()
                .position(|month| word.len() >= 3 && month.starts_with(&word[..3]) && word.starts_with(month))
                .map(|index| index as u32 + 1)
        };
        let number = |word: &str| {
            word.trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse::<u32>()
                .ok()
        };
        match (month_of(&words[0]), month_of(&words[1])) {
            (Some(month), _) => (number(&words[2])? as i32, month, number(&words[1])?),
            (None, Some(month)) => (number(&words[2])? as i32, month, number(&words[0])?),
            _ => return None,
        }
    } else {
        return None;
    };
    let month_enum = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year, month_enum, u8::try_from(day).ok()?).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// Reads three numbers separated by `separator`, in the order that
/// `order` gives for year, month and day. The year has four digits.
fn numeric_date(text: &str, separator: char, order: [usize; 3]) -> Option<(i32, u32, u32)> {
    let pieces: Vec<&str> = text.split(separator).map(str::trim).collect();
    if pieces.len() != 3
        || pieces
            .iter()
            .any(|piece| piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if pieces[order[0]].len() != 4 {
        return None;
    }
    Some((
        pieces[order[0]].parse().ok()?,
        pieces[order[1]].parse().ok()?,
        pieces[order[2]].parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(name: &str, ty: FieldType, optional: bool) -> Field {
        Field {
            name: name.to_string(),
            ty,
            description: None,
            optional,
        }
    }

    #[test]
    fn amounts_become_numbers() {
        assert_eq!(parse_amount("$1,234.50"), Some(json!(1234.5)));
        assert_eq!(parse_amount("USD 84,200.00"), Some(json!(84200)));
        assert_eq!(parse_amount("(250.00)"), Some(json!(-250)));
        assert_eq!(parse_amount("-3.25 €"), Some(json!(-3.25)));
        assert_eq!(parse_amount("12%"), Some(json!(12)));
        assert_eq!(parse_amount("about twelve"), None);
        assert_eq!(parse_amount("1.2.3"), None);
    }

    #[test]
    fn dates_are_normalised() {
        assert_eq!(parse_date("March 1, 2026").as_deref(), Some("2026-03-01"));
        assert_eq!(parse_date("1 Mar 2026").as_deref(), Some("2026-03-01"));
        assert_eq!(parse_date("Sept. 30 2026").as_deref(), Some("2026-09-30"));
        assert_eq!(parse_date("2026/03/01").as_deref(), Some("2026-03-01"));
        assert_eq!(parse_date("03/01/2026").as_deref(), Some("2026-03-01"));
        assert_eq!(parse_date("01.03.2026").as_deref(), Some("2026-03-01"));
        assert_eq!(parse_date("2026-03-01T10:00:00Z").as_deref(), Some("2026-03-01"));
        assert_eq!(parse_date("February 30, 2026"), None);
        assert_eq!(parse_date("next Tuesday"), None);
    }

    #[test]
    fn objects_are_coerced_field_by_field() {
        let fields = vec![
            field("premium", FieldType::Number, false),
            field("effective_date", FieldType::Date, false),
            field("drivers", FieldType::List(Box::new(FieldType::Text)), false),
            field("smoker", FieldType::Boolean, true),
            field("count", FieldType::Integer, true),
            field(
                "coverage",
                FieldType::Enum(vec!["basic".to_string(), "premium".to_string()]),
                false,
            ),
        ];
        let answer = json!({
            "premium": "$1,234.50",
            "effective_date": "March 1, 2026",
            "drivers": "Ada Lovelace, Grace Hopper",
            "smoker": "maybe",
            "count": "N/A",
            "coverage": "Premium"
        });
        assert_eq!(
            coerce_object(&answer, &fields).unwrap(),
            json!({
                "premium": 1234.5,
                "effective_date": "2026-03-01",
                "drivers": ["Ada Lovelace", "Grace Hopper"],
                "smoker": null,
                "count": null,
                "coverage": "premium"
            })
        );
    }

    #[test]
    fn a_required_field_that_cannot_be_coerced_is_named() {
        let fields = vec![field("premium", FieldType::Number, false)];
        let error = coerce_object(&json!({"premium": "about twelve"}), &fields).unwrap_err();
        assert!(error.contains("`premium`"), "{error}");
        let error = coerce_object(&json!({}), &fields).unwrap_err();
        assert_eq!(error, "`premium` was not found in the document");
    }
}
