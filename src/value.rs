//! Typed values of statements: blank tests, conversions to a variable
//! type, exact decimal numbers and dates.
//!
//! Values stay JSON. A number is converted to a [`Decimal`] for arithmetic
//! and comparison, and written back as a JSON number with the same digits,
//! so that `0.1 + 0.2` is `0.3` and money never rounds.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time, UtcOffset};

use crate::program::statement::VarType;
use crate::render::encode::text_of;

/// The deepest nesting of arrays and objects that an entity or a variable
/// may have. serde_json reads JSON nested up to 127 levels, and the store
/// puts an entity or a variable inside up to two more, in a journal line.
pub const MAX_NESTING: usize = 100;

/// Returns how many levels of arrays and objects `value` nests: 0 for a
/// string, number, boolean or null.
pub fn nesting(value: &Value) -> usize {
    // A stack rather than recursion, so any depth is measured. A scalar
    // leaves the stack empty, which allocates nothing.
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    let mut next = Some((value, 0));
    while let Some((value, depth)) = next.take().or_else(|| stack.pop()) {
        match value {
            Value::Array(items) => {
                deepest = deepest.max(depth + 1);
                stack.extend(items.iter().map(|child| (child, depth + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(depth + 1);
                stack.extend(map.values().map(|child| (child, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Returns why a value written `levels` deep into an entity or variable
/// is refused, when with its own nesting it would pass [`MAX_NESTING`].
pub fn too_deep(levels: usize, value: &Value) -> Option<String> {
    (levels + nesting(value) > MAX_NESTING).then(|| {
        format!(
            "it would be nested more than {MAX_NESTING} levels deep, which flowrun cannot store and read back"
        )
    })
}

/// Whether a value is blank: missing, null, text of only white space, or
/// an empty list or object.
pub fn is_blank(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.trim().is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(members)) => members.is_empty(),
        Some(Value::Bool(_) | Value::Number(_)) => false,
    }
}

/// A date, or a date and time with an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    Date(Date),
    DateTime(OffsetDateTime),
}

impl Moment {
    /// The moment as a date and time; a date is its midnight in UTC.
    pub fn at(self) -> OffsetDateTime {
        match self {
            Moment::Date(date) => date.midnight().assume_utc(),
            Moment::DateTime(moment) => moment,
        }
    }

    /// The moment as text, or `None` when its year, in its own offset, lies
    /// outside 0000 to 9999, which `YYYY-MM-DD` and RFC 3339 cannot write.
    pub fn to_value(self) -> Option<Value> {
        let year = match self {
            Moment::Date(date) => date.year(),
            Moment::DateTime(moment) => moment.year(),
        };
        if !(0..=9999).contains(&year) {
            return None;
        }
        match self {
            Moment::Date(date) => Some(Value::String(format_date(date))),
            Moment::DateTime(moment) => moment.format(&Rfc3339).ok().map(Value::String),
        }
    }
}

fn format_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Parses `YYYY-MM-DD` or an RFC 3339 date-time.
pub fn parse_moment(text: &str) -> Option<Moment> {
    let text = text.trim();
    if let Ok(moment) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(Moment::DateTime(moment));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format).ok().map(Moment::Date)
}

/// Reads a number: a JSON number, or text holding one. Text with `_` is
/// not a number, although Rust's decimal parser skips underscores.
pub fn to_decimal(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) if !text.contains('_') => text.trim().to_string(),
        _ => return None,
    };
    Decimal::from_str_exact(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

/// Whether `value` is written as a number but is beyond what an exact
/// decimal holds: see [`out_of_range_reason`].
pub fn out_of_range(value: &Value) -> bool {
    let numeric = match value {
        Value::Number(_) => true,
        Value::String(text) => {
            let text = text.trim();
            text.bytes().any(|byte| byte.is_ascii_digit())
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || b"+-.eE".contains(&byte))
                && text.parse::<f64>().is_ok()
        }
        _ => false,
    };
    numeric && to_decimal(value).is_none()
}

/// The largest magnitude of an exact decimal, 2^96 - 1, as a float.
const DECIMAL_MAX: f64 = 79_228_162_514_264_337_593_543_950_335.0;

/// Explains, in brackets for a message, why a number that [`out_of_range`]
/// found cannot be an exact decimal. It is too large, or it has more than
/// 28 digits after the decimal point (trailing zeros count), or else it has
/// at least 29 significant digits.
pub fn out_of_range_reason(value: &Value) -> &'static str {
    let text = text_of(value);
    let text = text.trim();
    if text
        .parse::<f64>()
        .map_or(true, |number| number.abs() > DECIMAL_MAX)
    {
        return "(larger than an exact decimal holds, about 7.9e28)";
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => {
            let saturated = if exponent.starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            };
            (mantissa, exponent.parse::<i64>().unwrap_or(saturated))
        }
        None => (text, 0),
    };
    let fraction_digits = mantissa
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as i64);
    if fraction_digits.saturating_sub(exponent) > 28 {
        "(more than 28 digits after the decimal point)"
    } else {
        "(more than 28 significant digits)"
    }
}

/// Writes a decimal as a JSON number with the same digits.
pub fn decimal_value(decimal: Decimal) -> Value {
    serde_json::Number::from_str(&decimal.to_string())
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(decimal.to_string()))
}

/// Reads a boolean: `true` or `false`, also as text in any case.
pub fn to_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Converts text to a value of type `ty`, or says why it cannot.
pub fn convert_text(text: &str, ty: VarType) -> Result<Value, String> {
    convert(&Value::String(text.to_string()), ty)
}

/// Converts a value to type `ty`: the reason it cannot names the value.
pub fn convert(value: &Value, ty: VarType) -> Result<Value, String> {
    let shown = || shorten(&text_of(value));
    match ty {
        // A list or object becomes its compact JSON, as in a string.
        VarType::Text => Ok(match value {
            Value::String(_) | Value::Null => value.clone(),
            other => Value::String(text_of(other)),
        }),
        VarType::Number => to_decimal(value)
            .map(|decimal| match value {
                Value::Number(_) => value.clone(),
                _ => decimal_value(decimal),
            })
            .ok_or_else(|| {
                if out_of_range(value) {
                    format!("`{}` is out of range {}", shown(), out_of_range_reason(value))
                } else {
                    format!("`{}` is not a number", shown())
                }
            }),
        VarType::Boolean => to_bool(value)
            .map(Value::Bool)
            .ok_or_else(|| format!("`{}` is not a boolean (true or false)", shown())),
        VarType::Date => match value {
            // A date stands for its midnight in UTC, so only a date-time at
            // that instant converts without losing its time.
            Value::String(text) => match parse_moment(text) {
                Some(Moment::Date(date)) => Ok(Value::String(format_date(date))),
                Some(Moment::DateTime(moment)) => {
                    let utc = moment.to_offset(UtcOffset::UTC);
                    if utc.time() == Time::MIDNIGHT && (0..=9999).contains(&utc.year()) {
                        Ok(Value::String(format_date(utc.date())))
                    } else {
                        Err(format!(
                            "`{}` is a date-time that is not midnight UTC, so it is not a date (YYYY-MM-DD)",
                            shown()
                        ))
                    }
                }
                None => Err(format!("`{}` is not a date (YYYY-MM-DD)", shown())),
            },
            _ => Err(format!("`{}` is not a date (YYYY-MM-DD)", shown())),
        },
        VarType::Datetime => match value {
            Value::String(text) => parse_moment(text)
                .and_then(|moment| Moment::DateTime(moment.at()).to_value())
                .ok_or_else(|| format!("`{}` is not a date-time (RFC 3339)", shown())),
            _ => Err(format!("`{}` is not a date-time (RFC 3339)", shown())),
        },
        VarType::Uuid => match value {
            Value::String(text) => uuid::Uuid::parse_str(text.trim())
                .map(|uuid| Value::String(uuid.hyphenated().to_string()))
                .map_err(|_| format!("`{}` is not a UUID", shown())),
            _ => Err(format!("`{}` is not a UUID", shown())),
        },
    }
}

/// Whether text written in a workflow compares with a value of type `ty`:
/// it converts to it, and for a date or date-time it is either of them,
/// since dates and date-times compare with each other.
pub fn compares_with(text: &str, ty: VarType) -> bool {
    match ty {
        VarType::Date | VarType::Datetime => parse_moment(text).is_some(),
        _ => convert_text(text, ty).is_ok(),
    }
}

/// Shortens text for a message to at most 80 characters.
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= 80 {
        return text.to_string();
    }
    let mut short: String = text.chars().take(77).collect();
    short.push_str("...");
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> Value {
        let text = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn nesting_counts_arrays_and_objects() {
        assert_eq!(nesting(&json!(1)), 0);
        assert_eq!(nesting(&json!({})), 1);
        assert_eq!(nesting(&json!({"a": [1, {"b": []}], "c": 2})), 4);
        assert_eq!(nesting(&nested(120)), 120);
    }

    #[test]
    fn too_deep_past_the_limit_only() {
        assert_eq!(too_deep(1, &nested(99)), None);
        assert_eq!(
            too_deep(1, &nested(100)).as_deref(),
            Some("it would be nested more than 100 levels deep, which flowrun cannot store and read back")
        );
        assert_eq!(too_deep(100, &json!("x")), None);
        assert!(too_deep(101, &json!("x")).is_some());
    }
    use serde_json::json;

    #[test]
    fn blank_values() {
        assert!(is_blank(None));
        assert!(is_blank(Some(&json!(null))));
        assert!(is_blank(Some(&json!("  "))));
        assert!(is_blank(Some(&json!([]))));
        assert!(!is_blank(Some(&json!(0))));
        assert!(!is_blank(Some(&json!(false))));
        assert!(!is_blank(Some(&json!("x"))));
    }

    #[test]
    fn conversions() {
        assert_eq!(
            convert(&json!("12.50"), VarType::Number).unwrap().to_string(),
            "12.50"
        );
        assert_eq!(convert(&json!(7), VarType::Text), Ok(json!("7")));
        assert_eq!(convert(&json!(["a", 1]), VarType::Text), Ok(json!(r#"["a",1]"#)));
        assert_eq!(
            convert(&json!({"k": true}), VarType::Text),
            Ok(json!(r#"{"k":true}"#))
        );
        assert_eq!(convert(&json!("TRUE"), VarType::Boolean), Ok(json!(true)));
        assert_eq!(
            convert(&json!("2024-02-30"), VarType::Date),
            Err("`2024-02-30` is not a date (YYYY-MM-DD)".to_string())
        );
        assert_eq!(
            convert(&json!("2024-02-03T10:00:00+02:00"), VarType::Date),
            Err("`2024-02-03T10:00:00+02:00` is a date-time that is not midnight UTC, so it is not a date (YYYY-MM-DD)".to_string())
        );
        assert_eq!(
            convert(&json!("2024-02-03T00:00:00Z"), VarType::Date),
            Ok(json!("2024-02-03"))
        );
        assert_eq!(
            convert(&json!("2024-02-03T22:00:00-02:00"), VarType::Date),
            Ok(json!("2024-02-04"))
        );
        assert_eq!(
            convert(&json!("1_000"), VarType::Number),
            Err("`1_000` is not a number".to_string())
        );
        assert_eq!(
            convert(&json!("2024-02-03"), VarType::Datetime),
            Ok(json!("2024-02-03T00:00:00Z"))
        );
        assert_eq!(
            convert(&json!("6F9619FF-8B86-D011-B42D-00C04FC964FF"), VarType::Uuid),
            Ok(json!("6f9619ff-8b86-d011-b42d-00c04fc964ff"))
        );
        assert_eq!(
            convert(&json!("abc"), VarType::Number),
            Err("`abc` is not a number".to_string())
        );
    }

    #[test]
    fn out_of_range_reasons() {
        let reason = |text: &str| out_of_range_reason(&serde_json::from_str(text).unwrap());
        assert_eq!(
            reason("1e400"),
            "(larger than an exact decimal holds, about 7.9e28)"
        );
        assert_eq!(
            reason("-8e28"),
            "(larger than an exact decimal holds, about 7.9e28)"
        );
        assert_eq!(reason("1.0e-30"), "(more than 28 digits after the decimal point)");
        assert_eq!(
            reason("1e-99999999999999999999"),
            "(more than 28 digits after the decimal point)"
        );
        assert_eq!(
            reason("1234567890.1234567890123456789012"),
            "(more than 28 significant digits)"
        );
        assert!(out_of_range(&serde_json::from_str("1.0e-30").unwrap()));
        assert!(!out_of_range(&json!("1_000")));
    }

    #[test]
    fn moments_outside_years_0000_to_9999_have_no_text() {
        let date = |text: &str| parse_moment(text).unwrap();
        assert_eq!(date("0000-01-01").to_value(), Some(json!("0000-01-01")));
        let before = date("0000-01-01T00:30:00Z").at() - time::Duration::hours(1);
        assert_eq!(Moment::DateTime(before).to_value(), None);
        let Moment::Date(first) = date("0000-01-01") else {
            unreachable!()
        };
        assert_eq!(Moment::Date(first.previous_day().unwrap()).to_value(), None);
    }

    #[test]
    fn decimals_keep_their_digits() {
        let sum = to_decimal(&json!(0.1)).unwrap() + to_decimal(&json!(0.2)).unwrap();
        assert_eq!(decimal_value(sum).to_string(), "0.3");
    }
}
