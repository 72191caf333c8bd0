//! Interprets the option lines of a step: timeouts, retries, encoding,
//! redirects and `save`.

use std::collections::HashMap;
use std::time::Duration;

use crate::check::names::did_you_mean;
use crate::check::policy::OnErrorLine;
use crate::check::Checker;
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::program::{Action, Encoding, Piece, Request, Save, SaveSource, SaveTarget, Settings};
use crate::syntax::ast::{Expr, OptionArg, PathKey, StepOption};
use crate::syntax::template;

pub const OPTIONS: [&str; 19] = [
    "timeout",
    "retries",
    "max_wait",
    "retry",
    "encode",
    "redirects",
    "idempotency_key",
    "on",
    "save",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "repair",
    "max_file_size",
    "input_budget",
    "upload_limit",
    "memory",
    "interpreter",
];

/// The longest timeout or wait a step accepts.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_RETRIES: u32 = 100;

impl Checker {
    /// Reads the option lines of one step. Each entry pairs an option with
    /// the number of requests written before it, so that a `save` line
    /// applies to the request above it.
    pub(crate) fn options(
        &mut self,
        options: &[(usize, &StepOption)],
        actions: &mut [Action],
    ) -> (Settings, Option<OnErrorLine>) {
        let mut settings = Settings::default();
        let mut on_error = None;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut encode = true;

        for (actions_before, option) in options {
            let name = option.name.text.as_str();
            if !OPTIONS.contains(&name) {
                self.diagnostics.push(
                    Diagnostic::error(Code::UnknownOption, format!("unknown step option `{name}`"))
                        .with_label(option.name.span, "not a step option")
                        .with_help(did_you_mean(name, &OPTIONS, "options")),
                );
                continue;
            }
            if name != "save" {
                if let Some(first) = seen.get(name) {
                    self.diagnostics.push(
                        Diagnostic::error(Code::DuplicateOption, format!("option `{name}` is given twice"))
                            .with_label(option.span, "given again here")
                            .with_related(*first, "first given here")
                            .with_help("keep one of the two lines"),
                    );
                    continue;
                }
                seen.insert(name, option.span);
            }

            match name {
                "timeout" => {
                    if let Some(timeout) = self.duration_arg(option, Code::InvalidTimeout) {
                        settings.timeout = timeout;
                    }
                }
                "max_wait" => {
                    if let Some(wait) = self.duration_arg(option, Code::InvalidRetry) {
                        settings.max_wait = wait;
                    }
                }
                "retries" => {
                    if let Some(retries) = self.retries_arg(option) {
                        settings.max_retries = retries;
                    }
                }
                "retry" => self.retry_classes(option, &mut settings),
                "encode" => encode = self.switch_arg(option).unwrap_or(true),
                "redirects" => settings.follow_redirects = self.switch_arg(option).unwrap_or(true),
                "idempotency_key" => settings.idempotency_key = self.switch_arg(option).unwrap_or(true),
                "on" => on_error = self.on_error(option),
                "max_tokens" => {
                    settings.llm.max_tokens =
                        self.number_arg(option, 1.0, 1_000_000.0, true).map(|n| n as u32)
                }
                "temperature" => settings.llm.temperature = self.number_arg(option, 0.0, 2.0, false),
                "top_p" => settings.llm.top_p = self.number_arg(option, 0.0, 1.0, false),
                "seed" => {
                    settings.llm.seed = self
                        .number_arg(option, i64::MIN as f64, i64::MAX as f64, true)
                        .map(|n| n as i64)
                }
                "repair" => settings.llm.repair = self.switch_arg(option).unwrap_or(true),
                "max_file_size" | "input_budget" | "upload_limit" => {
                    self.media_option(option, &mut settings.media)
                }
                // Options of code steps, read with the script.
                "memory" | "interpreter" => {
                    if !actions.iter().any(|action| matches!(action, Action::Code(_))) {
                        self.diagnostics.push(
                            Diagnostic::error(Code::InvalidOption, format!("`{name}` applies to code steps"))
                                .with_label(option.span, "this step has no `code` action")
                                .with_help(
                                    "remove the line, or add `code python \"\"\" ... \"\"\"` to the step",
                                ),
                        );
                    }
                }
                "save" => {
                    let Some(save) = self.save(option) else { continue };
                    match actions_before
                        .checked_sub(1)
                        .and_then(|index| actions.get_mut(index))
                        .and_then(|action| match action {
                            Action::Http(request) => Some(request),
                            _ => None,
                        }) {
                        Some(request) => request.saves.push(save),
                        None => self.diagnostics.push(
                            Diagnostic::error(Code::InvalidSave, "`save` must follow the request it reads")
                                .with_label(option.span, "no request above this line")
                                .with_help("move the `save` line below the `http` action"),
                        ),
                    }
                }
                _ => unreachable!("Checker::options: `{name}` is in OPTIONS but not handled"),
            }
        }

        if !encode {
            for request in actions.iter_mut().filter_map(|action| match action {
                Action::Http(request) => Some(request),
                _ => None,
            }) {
                turn_off_encoding(request);
            }
        }
        (settings, on_error)
    }

    fn single_arg<'o>(
        &mut self,
        option: &'o StepOption,
        code: Code,
        expected: &str,
    ) -> Option<&'o OptionArg> {
        match option.args.as_slice() {
            [arg] => Some(arg),
            [] => {
                self.diagnostics.push(
                    Diagnostic::error(code, format!("`{}` needs a value", option.name.text))
                        .with_label(option.span, "value missing")
                        .with_help(format!("write {expected}")),
                );
                None
            }
            [_, extra, ..] => {
                self.diagnostics.push(
                    Diagnostic::error(code, format!("`{}` takes one value", option.name.text))
                        .with_label(extra.span, "unexpected value")
                        .with_help(format!("write {expected}")),
                );
                None
            }
        }
    }

    fn duration_arg(&mut self, option: &StepOption, code: Code) -> Option<Duration> {
        let example = format!(
            "`{} 10s`: a whole number with a unit ms, s, m or h",
            option.name.text
        );
        let arg = self.single_arg(option, code, &example)?;
        match parse_duration(&arg.text) {
            Ok(duration) if duration.is_zero() => {
                self.push_invalid(code, option, arg, "must be greater than zero", &example);
                None
            }
            Ok(duration) if duration > MAX_DURATION => {
                self.push_invalid(code, option, arg, "is longer than the maximum of 24h", &example);
                None
            }
            Ok(duration) => Some(duration),
            Err(reason) => {
                self.push_invalid(code, option, arg, reason, &example);
                None
            }
        }
    }

    fn push_invalid(
        &mut self,
        code: Code,
        option: &StepOption,
        arg: &OptionArg,
        reason: &str,
        example: &str,
    ) {
        self.diagnostics.push(
            Diagnostic::error(
                code,
                format!("invalid {} `{}`: {reason}", option.name.text, arg.text),
            )
            .with_label(arg.span, reason.to_string())
            .with_help(format!("write {example}")),
        );
    }

    /// Reads a number between `min` and `max`, a whole one when `whole`.
    fn number_arg(&mut self, option: &StepOption, min: f64, max: f64, whole: bool) -> Option<f64> {
        let kind = if whole { "a whole number" } else { "a number" };
        let example = format!("`{} VALUE`: {kind} from {min} to {max}", option.name.text);
        let arg = self.single_arg(option, Code::InvalidOption, &example)?;
        let value = arg.text.parse::<f64>().ok().filter(|value| value.is_finite());
        match value {
            Some(value) if whole && value.fract() != 0.0 => {
                self.push_invalid(
                    Code::InvalidOption,
                    option,
                    arg,
                    "is not a whole number",
                    &example,
                );
                None
            }
            Some(value) if value < min || value > max => {
                self.push_invalid(Code::InvalidOption, option, arg, "is out of range", &example);
                None
            }
            Some(value) => Some(value),
            None => {
                self.push_invalid(Code::InvalidOption, option, arg, "is not a number", &example);
                None
            }
        }
    }

    fn retries_arg(&mut self, option: &StepOption) -> Option<u32> {
        let example = format!("`retries 5`: a whole number from 0 to {MAX_RETRIES}");
        let arg = self.single_arg(option, Code::InvalidRetry, &example)?;
        match arg.text.parse::<u32>() {
            Ok(retries) if retries <= MAX_RETRIES => Some(retries),
            Ok(_) => {
                self.push_invalid(
                    Code::InvalidRetry,
                    option,
                    arg,
                    "is more than the maximum",
                    &example,
                );
                None
            }
            Err(_) if !arg.text.is_empty() && arg.text.bytes().all(|byte| byte.is_ascii_digit()) => {
                self.push_invalid(
                    Code::InvalidRetry,
                    option,
                    arg,
                    "is more than the maximum",
                    &example,
                );
                None
            }
            Err(_) => {
                self.push_invalid(Code::InvalidRetry, option, arg, "is not a whole number", &example);
                None
            }
        }
    }

    fn retry_classes(&mut self, option: &StepOption, settings: &mut Settings) {
        const CLASSES: [&str; 2] = ["5xx", "connection"];
        let example = "`retry on 5xx` or `retry on 5xx, connection`";
        let mut args = option.args.iter();
        if args.next().map(|arg| arg.text.as_str()) != Some("on") {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidRetry, "`retry` is written `retry on CLASS`")
                    .with_label(option.span, "`on` missing")
                    .with_help(format!("write {example}; 429 responses are always retried")),
            );
            return;
        }
        let mut any = false;
        for arg in args {
            for class in arg.text.split(',').filter(|class| !class.is_empty()) {
                any = true;
                match class {
                    "5xx" => settings.retry_server_errors = true,
                    "connection" => settings.retry_connection_errors = true,
                    _ => self.diagnostics.push(
                        Diagnostic::error(Code::InvalidRetry, format!("unknown retry class `{class}`"))
                            .with_label(arg.span, "not a retry class")
                            .with_help(did_you_mean(class, &CLASSES, "retry classes")),
                    ),
                }
            }
        }
        if !any {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidRetry, "`retry on` needs a class")
                    .with_label(option.span, "class missing")
                    .with_help(format!("write {example}")),
            );
        }
    }

    fn switch_arg(&mut self, option: &StepOption) -> Option<bool> {
        let example = format!("`{} off` or `{} on`", option.name.text, option.name.text);
        let arg = self.single_arg(option, Code::InvalidOption, &example)?;
        match arg.text.as_str() {
            "on" => Some(true),
            "off" => Some(false),
            _ => {
                self.push_invalid(
                    Code::InvalidOption,
                    option,
                    arg,
                    "expected `on` or `off`",
                    &example,
                );
                None
            }
        }
    }

    fn save(&mut self, option: &StepOption) -> Option<Save> {
        let help = "write `save SOURCE -> TARGET`, where SOURCE is response.status, response.body, \
                    response.headers.NAME or response.json.PATH, and TARGET is entity.PATH or vars.NAME";
        let [source, arrow, target] = option.args.as_slice() else {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidSave, "invalid `save` line")
                    .with_label(option.span, "expected a source, `->` and a target")
                    .with_help(help),
            );
            return None;
        };
        if arrow.text != "->" {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidSave,
                    format!("expected `->`, found `{}`", arrow.text),
                )
                .with_label(arrow.span, "expected `->`")
                .with_help(help),
            );
            return None;
        }
        let source_kind = self.save_source(source, help)?;
        let target_kind = self.save_target(target, help)?;
        Some(Save {
            source: source_kind,
            target: target_kind,
            source_text: source.text.clone(),
            span: option.span,
        })
    }

    fn save_path(&mut self, arg: &OptionArg, help: &str) -> Option<crate::syntax::ast::Path> {
        let mut diagnostics = Vec::new();
        let expr = template::parse_expression(&arg.text, arg.span.start, arg.span, &mut diagnostics);
        match expr {
            Some(Expr::Path(path)) if !arg.quoted => Some(path),
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(Code::InvalidSave, format!("`{}` is not a path", arg.text))
                        .with_label(arg.span, "expected a path")
                        .with_help(help.to_string()),
                );
                None
            }
        }
    }

    fn save_source(&mut self, arg: &OptionArg, help: &str) -> Option<SaveSource> {
        let path = self.save_path(arg, help)?;
        let keys: Vec<&PathKey> = path.segments.iter().map(|segment| &segment.key).collect();
        let field = |key: &PathKey| match key {
            PathKey::Field(name) => Some(name.clone()),
            PathKey::Index(_) => None,
        };
        let source = if path.root.text != "response" {
            None
        } else {
            match keys.as_slice() {
                [key] if field(key).as_deref() == Some("status") => Some(SaveSource::Status),
                [key] if field(key).as_deref() == Some("body") => Some(SaveSource::Body),
                [key, name] if field(key).as_deref() == Some("headers") => {
                    field(name).map(SaveSource::Header)
                }
                [key, rest @ ..] if field(key).as_deref() == Some("json") => {
                    Some(SaveSource::Json(rest.iter().map(|key| (*key).clone()).collect()))
                }
                _ => None,
            }
        };
        if source.is_none() {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidSave,
                    format!("`{}` is not a response value", arg.text),
                )
                .with_label(arg.span, "not a save source")
                .with_help(help.to_string()),
            );
        }
        source
    }

    fn save_target(&mut self, arg: &OptionArg, help: &str) -> Option<SaveTarget> {
        let path = self.save_path(arg, help)?;
        let keys: Vec<PathKey> = path.segments.iter().map(|segment| segment.key.clone()).collect();
        match (path.root.text.as_str(), keys.as_slice()) {
            ("entity", [_, ..]) => Some(SaveTarget::Entity(keys)),
            ("vars", [PathKey::Field(name)]) => {
                self.check_variable_use(&path);
                Some(SaveTarget::Variable(name.clone()))
            }
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(Code::InvalidSave, format!("cannot save to `{}`", arg.text))
                        .with_label(arg.span, "not a save target")
                        .with_help(help.to_string()),
                );
                None
            }
        }
    }
}

/// Parses a duration such as `500ms`, `10s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err("expected a whole number with a unit");
    }
    let value: u64 = digits.parse().map_err(|_| "the number is too large")?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err("the unit is missing"),
        _ => return Err("the unit must be ms, s, m or h"),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or("the number is too large")
}

fn turn_off_encoding(request: &mut Request) {
    let compiled =
        std::iter::once(&mut request.url).chain(request.body.as_mut().map(|body| &mut body.template));
    for template in compiled {
        for piece in &mut template.pieces {
            if let Piece::Field { encoding, .. } = piece {
                *encoding = Encoding::Raw;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), Err("the unit is missing"));
        assert_eq!(parse_duration("10 s"), Err("the unit must be ms, s, m or h"));
        assert_eq!(parse_duration("s"), Err("expected a whole number with a unit"));
    }
}
