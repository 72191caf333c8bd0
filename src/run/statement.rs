//! Runs statements: `let` steps, conditions, `set`, `clear` and `stop`.
//!
//! A condition is evaluated left to right and stops as soon as its result
//! is known, so a model is asked only when the rest of the condition needs
//! its answer. Comparisons are typed: numbers compare as exact decimals,
//! dates as dates, text exactly or ignoring case. A blank value in `<`,
//! `<=`, `>` or `>=` is an error, not a "no".

use std::cmp::Ordering;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::check::statement::{ABOUT_MARK, CONDITION_ANSWER};
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::program::statement::{
    Branch, Condition, LetStatement, Operand, SetStatement, Statement, ValueExpr, VarType,
};
use crate::program::SaveTarget;
use crate::render::{self, encode::text_of, RenderError};
use crate::run::errors::render_diagnostic;
use crate::run::llm::{self, CallContext};
use crate::run::report::{Attempt, LlmUsage, RenderedRequest};
use crate::run::save::set_path;
use crate::run::Execution;
use crate::syntax::ast::{ArithOp, CompareOp, Expr, PathKey, SetMode};
use crate::value::{
    convert, decimal_value, is_blank, out_of_range, out_of_range_reason, parse_moment, shorten, to_bool,
    to_decimal, Moment,
};

/// The effect of a statement on the execution besides its changes.
pub(crate) enum Effect {
    None,
    Branch(Branch),
    Stop { failed: bool, message: String },
}

/// The records a statement adds its model calls to.
pub(crate) struct Records<'a> {
    pub attempts: &'a mut Vec<Attempt>,
    pub usage: &'a mut Vec<LlmUsage>,
    pub dry_run: &'a mut Vec<RenderedRequest>,
}

/// Runs one statement.
pub(crate) async fn run(
    statement: &Statement,
    context: &CallContext<'_>,
    execution: &mut Execution,
    records: &mut Records<'_>,
) -> Result<Effect, Diagnostic> {
    match statement {
        Statement::Let(statement) => {
            resolve_let(statement, context.step.span, context.lines, execution).map(|()| Effect::None)
        }
        Statement::Set(statement) => run_set(statement, execution).map(|()| Effect::None),
        Statement::Clear { target } => {
            clear(target, execution);
            Ok(Effect::None)
        }
        Statement::Condition(condition) => {
            let taken = evaluate(condition, context, execution, records).await?;
            Ok(Effect::Branch(if taken { Branch::Then } else { Branch::Else }))
        }
        Statement::Stop { failed, message } => {
            let message = match message {
                Some(template) => render::render(template, &execution.scope())
                    .map_err(|error| render_diagnostic(&error, context.lines, &execution.redactor))?,
                None => String::new(),
            };
            Ok(Effect::Stop {
                failed: *failed,
                message: execution.redactor.redact(&message),
            })
        }
    }
}

/// Computes the value of a `let` step. A variable that reads a secret is
/// left out of the store, like a simple `let` that does, and a resume
/// computes it again.
pub(crate) fn resolve_let(
    statement: &LetStatement,
    span: Span,
    lines: &crate::diagnostic::LineIndex<'_>,
    execution: &mut Execution,
) -> Result<(), Diagnostic> {
    let name = &statement.name;
    let invalid = |message: String| {
        Diagnostic::error(Code::InvalidValue, message)
            .with_label(span, "this variable")
            .with_help("fix the value, or declare the variable with the type its values have")
    };
    let given = execution
        .var_overrides
        .get(name)
        .map(|text| Value::String(text.clone()));
    let mut found = None;
    if let Some(value) = given {
        found = Some(value);
    } else {
        for source in &statement.sources {
            let value = operand_value_with(source, execution, lines)?;
            if !is_blank(value.as_ref()) {
                found = value;
                break;
            }
        }
    }
    let value = match (found, statement.ty) {
        (Some(value), None) => value,
        (Some(value), Some(ty)) => convert(&value, ty)
            .map_err(|reason| invalid(execution.redactor.redact(&format!("variable `{name}`: {reason}"))))?,
        (None, _) if statement.required => {
            let sources: Vec<String> = statement.sources.iter().map(describe_operand).collect();
            return Err(Diagnostic::error(
                Code::RequiredVariable,
                format!(
                    "variable `{name}` is required, but {} {} blank",
                    sources.join(" and "),
                    if sources.len() == 1 { "is" } else { "are all" }
                ),
            )
            .with_label(span, "required variable")
            .with_help("give the entity a value for it, or add a fallback with `or`"));
        }
        (None, _) => Value::Null,
    };
    if let Some(reason) = crate::value::too_deep(1, &value) {
        return Err(invalid(format!("variable `{name}`: {reason}")));
    }
    execution.vars.insert(name.clone(), value);
    if reads_secret(statement) {
        execution.secret_vars.insert(name.clone());
    } else {
        execution.secret_vars.remove(name);
    }
    Ok(())
}

/// Returns whether a source of the `let` reads a secret, directly or in a
/// string.
pub(crate) fn reads_secret(statement: &LetStatement) -> bool {
    let is_secret = |expr: &Expr| matches!(expr, Expr::Path(path) if path.root.text == "secret");
    statement.sources.iter().any(|source| match source {
        Operand::Field { expr, .. } => is_secret(expr),
        Operand::Text(template, _) => template
            .pieces
            .iter()
            .any(|piece| matches!(piece, crate::program::Piece::Field { expr, .. } if is_secret(expr))),
        Operand::Literal(..) | Operand::Duration(..) => false,
    })
}

fn run_set(statement: &SetStatement, execution: &mut Execution) -> Result<(), Diagnostic> {
    let span = statement.value.span();
    let invalid = |message: String| {
        Diagnostic::error(Code::InvalidValue, message)
            .with_label(span, "this value")
            .with_help(
                "check the types of the values: arithmetic works on numbers, and on a date with a duration",
            )
    };
    let current = read_target(&statement.target, execution);
    if statement.mode == SetMode::OnlyIfBlank && !is_blank(current.as_ref()) {
        return Ok(());
    }
    let value = match evaluate_value(&statement.value, execution)? {
        Computed::Value(value) => value,
        Computed::Duration(_) => {
            return Err(invalid(format!(
                "{} cannot hold a duration: a duration is only a value when added to a date",
                target_text(&statement.target)
            )))
        }
    };
    let new = match statement.mode {
        SetMode::Overwrite | SetMode::OnlyIfBlank => {
            let value = value.unwrap_or(Value::Null);
            match statement.ty {
                Some(ty) if !is_blank(Some(&value)) => convert(&value, ty).map_err(|reason| {
                    invalid(
                        execution
                            .redactor
                            .redact(&format!("{}: {reason}", target_text(&statement.target))),
                    )
                })?,
                _ => value,
            }
        }
        SetMode::Add => {
            let mut list = match current {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(invalid(format!(
                        "`add` appends to a list, but {} holds {}",
                        target_text(&statement.target),
                        kind(&other)
                    )))
                }
            };
            let added = match value {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(item) => vec![item],
            };
            for item in added {
                if !list.iter().any(|present| same_value(present, &item)) {
                    list.push(item);
                }
            }
            Value::Array(list)
        }
    };
    write_target(&statement.target, new, execution).map_err(invalid)
}

fn clear(target: &SaveTarget, execution: &mut Execution) {
    if read_target(target, execution).is_some() {
        // The field exists, so its parents are objects or lists.
        let _ = write_target(target, Value::Null, execution);
    }
}

fn target_text(target: &SaveTarget) -> String {
    match target {
        SaveTarget::Variable(name) => format!("`vars.{name}`"),
        SaveTarget::Entity(path) => {
            let mut text = "entity".to_string();
            for key in path {
                crate::syntax::ast::push_path_key(&mut text, key);
            }
            format!("`{text}`")
        }
    }
}

fn read_target(target: &SaveTarget, execution: &Execution) -> Option<Value> {
    match target {
        SaveTarget::Variable(name) => execution.vars.get(name).cloned(),
        SaveTarget::Entity(path) => {
            let mut value = &execution.entity;
            for key in path {
                value = match (key, value) {
                    (PathKey::Field(name), Value::Object(map)) => map.get(name)?,
                    (PathKey::Index(index), Value::Array(items)) => items.get(*index)?,
                    _ => return None,
                };
            }
            Some(value.clone())
        }
    }
}

fn write_target(target: &SaveTarget, value: Value, execution: &mut Execution) -> Result<(), String> {
    match target {
        SaveTarget::Variable(name) => {
            if let Some(reason) = crate::value::too_deep(1, &value) {
                return Err(format!("cannot write `vars.{name}`: {reason}"));
            }
            execution.vars.insert(name.clone(), value);
            execution.secret_vars.remove(name);
            Ok(())
        }
        SaveTarget::Entity(path) => {
            // The entity is printed and stored, so a secret copied into it
            // is masked, as in a `save` line.
            let value = execution.redact_value(value);
            let mut entity = execution.entity.clone();
            set_path(&mut entity, path, value)?;
            execution.entity = entity;
            Ok(())
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A computed value: JSON, missing, or a duration.
pub(crate) enum Computed {
    Value(Option<Value>),
    Duration(Duration),
}

/// Returns the JSON value of a computed value. A duration is written in
/// seconds.
pub(crate) fn value_of(computed: Computed) -> Option<Value> {
    match computed {
        Computed::Value(value) => value,
        Computed::Duration(duration) => Some(Value::from(duration.as_secs())),
    }
}

/// Evaluates a value: an operand, or arithmetic with exact decimals and
/// dates plus durations.
pub(crate) fn evaluate_value(expr: &ValueExpr, execution: &Execution) -> Result<Computed, Diagnostic> {
    match expr {
        ValueExpr::Operand(Operand::Duration(duration, _)) => Ok(Computed::Duration(*duration)),
        ValueExpr::Operand(operand) => operand_plain(operand, execution).map(Computed::Value),
        ValueExpr::Binary {
            op,
            left,
            right,
            span,
        } => {
            let a = evaluate_value(left, execution)?;
            let b = evaluate_value(right, execution)?;
            arithmetic(*op, (a, left), (b, right), *span)
                .map_err(|message| {
                    Diagnostic::error(Code::InvalidValue, execution.redactor.redact(&message))
                        .with_label(*span, "this calculation")
                        .with_help("arithmetic works on numbers, and on a date or date-time with a duration such as `30 days`")
                })
        }
    }
}

fn arithmetic(
    op: ArithOp,
    (a, left): (Computed, &ValueExpr),
    (b, right): (Computed, &ValueExpr),
    _span: Span,
) -> Result<Computed, String> {
    let symbol = op.as_str();
    match (a, b) {
        (Computed::Duration(x), Computed::Duration(y)) => match op {
            ArithOp::Add => Ok(Computed::Duration(x + y)),
            ArithOp::Sub => x
                .checked_sub(y)
                .map(Computed::Duration)
                .ok_or_else(|| "a duration cannot be negative".to_string()),
            _ => Err(format!("`{symbol}` does not apply to two durations")),
        },
        (Computed::Value(value), Computed::Duration(duration)) => {
            shift(value.as_ref(), left, op, duration).map(|value| Computed::Value(Some(value)))
        }
        (Computed::Duration(duration), Computed::Value(value)) if op == ArithOp::Add => {
            shift(value.as_ref(), right, op, duration).map(|value| Computed::Value(Some(value)))
        }
        (Computed::Duration(_), Computed::Value(_)) => Err(format!(
            "`{symbol}` cannot take a duration on its left; write the date first"
        )),
        (Computed::Value(x), Computed::Value(y)) => {
            for (value, expr) in [(&x, left), (&y, right)] {
                if is_blank(value.as_ref()) {
                    return Err(format!(
                        "`{symbol}` needs a value, but {} is blank",
                        describe_expr(expr)
                    ));
                }
            }
            let number = |value: &Option<Value>, expr: &ValueExpr| {
                let value = value.as_ref().expect("arithmetic: blank values were rejected");
                to_decimal(value).ok_or_else(|| {
                    if out_of_range(value) {
                        return format!(
                            "`{symbol}` cannot use {}: the number `{}` is out of range {}",
                            describe_expr(expr),
                            shorten(&text_of(value)),
                            out_of_range_reason(value)
                        );
                    }
                    format!(
                        "`{symbol}` works on numbers, but {} is `{}`",
                        describe_expr(expr),
                        shorten(&text_of(value))
                    )
                })
            };
            let (x, y) = (number(&x, left)?, number(&y, right)?);
            let result = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div if y.is_zero() => {
                    return Err(format!("division by zero: {} is 0", describe_expr(right)))
                }
                ArithOp::Div => x.checked_div(y).map(|quotient| quotient.normalize()),
            };
            result
                .map(|result| Computed::Value(Some(decimal_value(result))))
                .ok_or_else(|| format!("the result of `{symbol}` is too large for a decimal number"))
        }
    }
}

/// Adds a duration to a date or date-time, or subtracts it. A date stays a
/// date when the duration is whole days.
fn shift(value: Option<&Value>, expr: &ValueExpr, op: ArithOp, duration: Duration) -> Result<Value, String> {
    let symbol = op.as_str();
    if !matches!(op, ArithOp::Add | ArithOp::Sub) {
        return Err(format!("`{symbol}` does not apply to a duration"));
    }
    let Some(value) = value.filter(|value| !is_blank(Some(value))) else {
        return Err(format!(
            "`{symbol}` needs a date, but {} is blank",
            describe_expr(expr)
        ));
    };
    let moment = match value {
        Value::String(text) => parse_moment(text),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "`{symbol}` with a duration needs a date or date-time, but {} is `{}`",
            describe_expr(expr),
            shorten(&text_of(value))
        )
    })?;
    let delta = time::Duration::try_from(duration).map_err(|_| "the duration is too long".to_string())?;
    let delta = if op == ArithOp::Sub { -delta } else { delta };
    let whole_days = duration.as_secs().is_multiple_of(86_400);
    let shifted = match moment {
        Moment::Date(date) if whole_days => date.checked_add(delta).map(Moment::Date),
        other => other.at().checked_add(delta).map(Moment::DateTime),
    };
    shifted.and_then(Moment::to_value).ok_or_else(|| {
        format!(
            "`{symbol}` moves {} (`{}`) outside the years 0000 to 9999",
            describe_expr(expr),
            shorten(&text_of(value))
        )
    })
}

fn describe_expr(expr: &ValueExpr) -> String {
    match expr {
        ValueExpr::Operand(operand) => describe_operand(operand),
        ValueExpr::Binary { .. } => "the calculation".to_string(),
    }
}

fn describe_operand(operand: &Operand) -> String {
    match operand {
        Operand::Field {
            expr: Expr::Path(path),
            ..
        } => format!("`{}`", path.display()),
        Operand::Field { .. } => "the merge field".to_string(),
        Operand::Text(..) => "the text".to_string(),
        Operand::Literal(value, _) => format!("`{value}`"),
        Operand::Duration(..) => "the duration".to_string(),
    }
}

/// Returns the value of an operand, or `None` when a merge field names
/// nothing.
fn operand_plain(operand: &Operand, execution: &Execution) -> Result<Option<Value>, Diagnostic> {
    operand_value_with(operand, execution, &crate::diagnostic::LineIndex::new(""))
}

fn operand_value(
    operand: &Operand,
    execution: &Execution,
    context: &CallContext<'_>,
) -> Result<Option<Value>, Diagnostic> {
    operand_value_with(operand, execution, context.lines)
}

fn operand_value_with(
    operand: &Operand,
    execution: &Execution,
    lines: &crate::diagnostic::LineIndex<'_>,
) -> Result<Option<Value>, Diagnostic> {
    let scope = execution.scope();
    match operand {
        Operand::Field { expr, .. } => match render::evaluate(expr, &scope) {
            Ok(value) => Ok(Some(value.into_owned())),
            Err(RenderError::Missing { .. }) => Ok(None),
            Err(error) => Err(render_diagnostic(&error, lines, &execution.redactor)),
        },
        Operand::Text(template, _) => render::render(template, &scope)
            .map(|text| Some(Value::String(text)))
            .map_err(|error| render_diagnostic(&error, lines, &execution.redactor)),
        Operand::Literal(value, _) => Ok(Some(value.clone())),
        // `flowrun check` reports a duration outside date arithmetic.
        Operand::Duration(_, span) => Err(Diagnostic::error(
            Code::InvalidValue,
            "a duration is only a value when added to a date",
        )
        .with_label(*span, "this duration")
        .with_help("add the duration to a date, as in `<<entity.opened>> + 30 days`")),
    }
}

/// Returns whether the text after `about` of an LLM condition renders
/// blank. A prompt that does not render is left to the model call, which
/// reports it.
fn about_is_blank(call: &crate::program::LlmCall, execution: &Execution) -> bool {
    let has_about = call
        .prompt
        .pieces
        .iter()
        .any(|piece| matches!(piece, crate::program::Piece::Text(text) if text == ABOUT_MARK));
    if !has_about {
        return false;
    }
    match render::render(&call.prompt, &execution.scope()) {
        Ok(prompt) => prompt
            .rsplit_once(ABOUT_MARK)
            .is_some_and(|(_, about)| about.trim().is_empty()),
        Err(_) => false,
    }
}

type Evaluation<'a> = Pin<Box<dyn Future<Output = Result<bool, Diagnostic>> + 'a>>;

/// Evaluates a condition, asking a model for an LLM condition.
pub(crate) fn evaluate<'a>(
    condition: &'a Condition,
    context: &'a CallContext<'a>,
    execution: &'a mut Execution,
    records: &'a mut Records<'_>,
) -> Evaluation<'a> {
    Box::pin(async move {
        match condition {
            Condition::Any(parts) => {
                for part in parts {
                    if evaluate(part, context, execution, records).await? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Condition::All(parts) => {
                for part in parts {
                    if !evaluate(part, context, execution, records).await? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Condition::Not(inner) => Ok(!evaluate(inner, context, execution, records).await?),
            Condition::Blank { operand, negated } => {
                let value = operand_value(operand, execution, context)?;
                Ok(is_blank(value.as_ref()) != *negated)
            }
            Condition::Compare {
                left,
                op,
                right,
                ignore_case,
                span,
            } => {
                let a = operand_value(left, execution, context)?;
                let b = operand_value(right, execution, context)?;
                compare((left, a.as_ref()), *op, (right, b.as_ref()), *ignore_case)
                    .map_err(|message| condition_error(&message, *span, execution))
            }
            Condition::In {
                left,
                items,
                negated,
                ignore_case,
                span,
            } => {
                let a = operand_value(left, execution, context)?;
                // A blank value is in no list, as it contains nothing.
                if is_blank(a.as_ref()) {
                    return Ok(*negated);
                }
                let keyword = if *negated { "not in" } else { "in" };
                if let Some(number) = a
                    .as_ref()
                    .filter(|value| value.is_number() && out_of_range(value))
                {
                    let message = format!(
                        "`{keyword}` cannot compare {}: the number `{}` is out of range {}",
                        describe_operand(left),
                        shorten(&text_of(number)),
                        out_of_range_reason(number)
                    );
                    return Err(condition_error(&message, *span, execution));
                }
                // Each item is compared on its own: a text item that cannot
                // be a number is not equal to a number, while an item that
                // is not text keeps the error of its comparison, reported
                // when no item matched.
                let mut found = false;
                let mut error = None;
                for item in items {
                    let b = operand_value(item, execution, context)?;
                    match compare(
                        (left, a.as_ref()),
                        CompareOp::Eq,
                        (item, b.as_ref()),
                        *ignore_case,
                    ) {
                        Ok(true) => {
                            found = true;
                            break;
                        }
                        Ok(false) => {}
                        Err(_) if matches!(b, Some(Value::String(_))) => {}
                        Err(message) => {
                            error.get_or_insert(message);
                        }
                    }
                }
                if let (false, Some(message)) = (found, error) {
                    return Err(condition_error(&message, *span, execution));
                }
                Ok(found != *negated)
            }
            Condition::Llm(call) => {
                if about_is_blank(call, execution) {
                    return Err(Diagnostic::error(
                        Code::ConditionFailed,
                        "the LLM condition is about a blank value; no model was asked",
                    )
                    .with_label(call.span, "this LLM condition")
                    .with_help("test the value first with `is not blank`, or give it a fallback with `let NAME = <<...>> or ...`"));
                }
                llm::run(
                    call,
                    context,
                    execution,
                    records.attempts,
                    records.usage,
                    records.dry_run,
                )
                .await?;
                let answer = execution.vars.remove(CONDITION_ANSWER);
                if context.dry_run {
                    // A dry run calls no model, so it follows the `yes` branch.
                    return Ok(true);
                }
                match answer.as_ref().and_then(Value::as_str) {
                    Some("yes") => Ok(true),
                    Some("no") => Ok(false),
                    _ => Err(Diagnostic::error(
                        Code::LlmInvalidOutput,
                        format!(
                            "the model's answer to the condition is not yes or no: {}",
                            shorten(&answer.map(|answer| text_of(&answer)).unwrap_or_default())
                        ),
                    )
                    .with_label(call.span, "this LLM condition")
                    .with_help("ask a question the model can answer with yes or no")),
                }
            }
        }
    })
}

fn condition_error(message: &str, span: Span, execution: &Execution) -> Diagnostic {
    Diagnostic::error(Code::ConditionFailed, execution.redactor.redact(message))
        .with_label(span, "this comparison")
        .with_help(
            "give the value a fallback with `let NAME = <<...>> or ...`, or test it first with `is blank`",
        )
}

/// The type two values are compared as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Date,
    Boolean,
    Text,
}

fn declared(operand: &Operand) -> Option<VarType> {
    match operand {
        Operand::Field { ty, .. } => *ty,
        Operand::Literal(Value::Number(_), _) => Some(VarType::Number),
        Operand::Literal(Value::Bool(_), _) => Some(VarType::Boolean),
        _ => None,
    }
}

fn kind_of(a: (&Operand, &Value), b: (&Operand, &Value), op: CompareOp) -> Kind {
    if matches!(
        op,
        CompareOp::Contains | CompareOp::StartsWith | CompareOp::EndsWith
    ) {
        return Kind::Text;
    }
    let types = [declared(a.0), declared(b.0)];
    let has = |wanted: &[VarType]| types.iter().flatten().any(|ty| wanted.contains(ty));
    let values = [a.1, b.1];
    if has(&[VarType::Date, VarType::Datetime]) {
        Kind::Date
    } else if has(&[VarType::Number]) || values.iter().any(|value| value.is_number()) {
        Kind::Number
    } else if has(&[VarType::Boolean]) || values.iter().any(|value| value.is_boolean()) {
        Kind::Boolean
    } else if values
        .iter()
        .all(|value| value.as_str().and_then(parse_moment).is_some())
    {
        Kind::Date
    } else {
        Kind::Text
    }
}

/// Rejects what `op` cannot compare. That is a list or object with an
/// ordering or text operator, except a list with `contains`, which looks
/// for an item. It is also a number too large or too precise for an exact
/// decimal with a text operator, whose text would be compared instead.
fn check_shapes(
    (left, a): (&Operand, &Value),
    op: CompareOp,
    (right, b): (&Operand, &Value),
) -> Result<(), String> {
    let text_op = matches!(
        op,
        CompareOp::Contains | CompareOp::StartsWith | CompareOp::EndsWith
    );
    if !op.is_ordering() && !text_op {
        return Ok(());
    }
    for (index, (operand, value)) in [(left, a), (right, b)].into_iter().enumerate() {
        let (shapes, shape) = match value {
            Value::Array(_) if op == CompareOp::Contains && index == 0 => continue,
            Value::Array(_) => ("lists", "a list"),
            Value::Object(_) => ("objects", "an object"),
            Value::Number(_) if text_op && to_decimal(value).is_none() => {
                return Err(format!(
                    "`{}` cannot use {}: the number `{}` is out of range {}",
                    op.as_str(),
                    describe_operand(operand),
                    shorten(&text_of(value)),
                    out_of_range_reason(value)
                ))
            }
            _ => continue,
        };
        return Err(format!(
            "`{}` cannot compare {}: {} is {}",
            op.as_str(),
            shapes,
            describe_operand(operand),
            shape
        ));
    }
    Ok(())
}

/// Returns whether list `items`, the value of `list`, contains an item
/// equal to `needle` as `==` compares them: `[5.0, "c"]` contains `5`. An
/// item that does not convert to the type of the comparison is not equal.
/// A number out of range is an error, as it is for `==`.
fn list_contains(
    items: &[Value],
    (list, operand, needle): (&Operand, &Operand, &Value),
    ignore_case: bool,
) -> Result<bool, String> {
    for item in items {
        let item_operand = Operand::Literal(item.clone(), list.span());
        match compare(
            (&item_operand, Some(item)),
            CompareOp::Eq,
            (operand, Some(needle)),
            ignore_case,
        ) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(_) if item.is_number() && out_of_range(item) => {
                return Err(format!(
                    "`contains` cannot compare an item of {}: the number `{}` is out of range {}",
                    describe_operand(list),
                    shorten(&text_of(item)),
                    out_of_range_reason(item)
                ))
            }
            Err(_) => {}
        }
    }
    Ok(false)
}

/// Whether `set ... add` finds `item` already in a list: equal as `==`
/// compares values without declared types, or identical JSON.
fn same_value(present: &Value, item: &Value) -> bool {
    let span = Span::new(0, 0);
    let (a, b) = (
        Operand::Literal(present.clone(), span),
        Operand::Literal(item.clone(), span),
    );
    present == item || compare((&a, Some(present)), CompareOp::Eq, (&b, Some(item)), false) == Ok(true)
}

/// Compares two values with `op`. The error names the operand that is
/// blank or does not convert.
fn compare(
    (left, a): (&Operand, Option<&Value>),
    op: CompareOp,
    (right, b): (&Operand, Option<&Value>),
    ignore_case: bool,
) -> Result<bool, String> {
    let (a_blank, b_blank) = (is_blank(a), is_blank(b));
    if a_blank || b_blank {
        let blank = if a_blank { left } else { right };
        return match op {
            _ if op.is_ordering() => Err(format!(
                "`{}` cannot compare a blank value: {} is blank",
                op.as_str(),
                describe_operand(blank)
            )),
            CompareOp::Eq => Ok(a_blank && b_blank),
            CompareOp::Ne => Ok(!(a_blank && b_blank)),
            _ => Ok(false),
        };
    }
    let (a, b) = (a.expect("compare: not blank"), b.expect("compare: not blank"));
    check_shapes((left, a), op, (right, b))?;
    let kind = kind_of((left, a), (right, b), op);
    let ordering = match kind {
        Kind::Number => {
            let number = |value: &Value, operand: &Operand| {
                to_decimal(value).ok_or_else(|| {
                    if value.is_number() {
                        return format!(
                            "`{}` cannot compare {}: the number `{}` is out of range {}",
                            op.as_str(),
                            describe_operand(operand),
                            shorten(&text_of(value)),
                            out_of_range_reason(value)
                        );
                    }
                    format!(
                        "`{}` compares numbers, but {} is `{}`",
                        op.as_str(),
                        describe_operand(operand),
                        shorten(&text_of(value))
                    )
                })
            };
            let (x, y): (Decimal, Decimal) = (number(a, left)?, number(b, right)?);
            x.cmp(&y)
        }
        Kind::Date => {
            let moment = |value: &Value, operand: &Operand| {
                value.as_str().and_then(parse_moment).ok_or_else(|| {
                    format!(
                        "`{}` compares dates, but {} is `{}`",
                        op.as_str(),
                        describe_operand(operand),
                        shorten(&text_of(value))
                    )
                })
            };
            moment(a, left)?.at().cmp(&moment(b, right)?.at())
        }
        Kind::Boolean => {
            if op.is_ordering() {
                return Err(format!("`{}` does not order booleans", op.as_str()));
            }
            let flag = |value: &Value, operand: &Operand| {
                to_bool(value).ok_or_else(|| {
                    format!(
                        "`{}` compares booleans, but {} is `{}`",
                        op.as_str(),
                        describe_operand(operand),
                        shorten(&text_of(value))
                    )
                })
            };
            flag(a, left)?.cmp(&flag(b, right)?)
        }
        Kind::Text => {
            let fold = |value: &Value| {
                let text = text_of(value);
                if ignore_case {
                    text.to_lowercase()
                } else {
                    text
                }
            };
            let needle = fold(b);
            match op {
                CompareOp::Contains => {
                    return match a {
                        Value::Array(items) => list_contains(items, (left, right, b), ignore_case),
                        other => Ok(fold(other).contains(&needle)),
                    }
                }
                CompareOp::StartsWith => return Ok(fold(a).starts_with(&needle)),
                CompareOp::EndsWith => return Ok(fold(a).ends_with(&needle)),
                _ => fold(a).cmp(&needle),
            }
        }
    };
    Ok(match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Contains | CompareOp::StartsWith | CompareOp::EndsWith => {
            unreachable!("compare: text operators return above")
        }
    })
}
