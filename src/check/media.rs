//! `extract` and `transcribe` actions, and the option lines that set their
//! limits.

use crate::check::Checker;
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::program::{Encoding, ExtractCall, LlmTarget, MediaParams, TranscribeCall};
use crate::syntax::ast::{
    Expr, ExtractAction, LlmClause, OptionArg, StepOption, StringLit, TranscribeAction, TranscribeClause,
};
use crate::syntax::template;

/// The largest value `max_file_size` and `upload_limit` accept: 4 GiB.
const MAX_SIZE: u64 = 4 << 30;

impl Checker {
    /// Checks an `extract` action and compiles it.
    pub(crate) fn extract_call(
        &mut self,
        action: &ExtractAction,
        known_providers: &[String],
    ) -> Option<ExtractCall> {
        let source = self.media_source(&action.source, action.source_span, Code::InvalidExtract);
        let mut call = ExtractCall {
            source: source
                .clone()
                .unwrap_or(Expr::String(String::new(), action.source_span)),
            provider: None,
            model: None,
            prompt: None,
            system: None,
            fields: Vec::new(),
            target: None,
            span: action.span,
        };
        let mut seen: Vec<(String, Span)> = Vec::new();
        let mut has_fields = false;
        for clause in &action.clauses {
            let keyword = match clause {
                LlmClause::Text { keyword, .. } | LlmClause::List { keyword, .. } => keyword.text.clone(),
                LlmClause::Schema { .. } => "fields".to_string(),
                LlmClause::Output { .. } => "->".to_string(),
            };
            if self.repeated_clause(
                &mut seen,
                &keyword,
                clause.span(),
                Code::InvalidExtract,
                "extract",
            ) {
                continue;
            }
            match clause {
                LlmClause::Text { keyword, value } => match keyword.text.as_str() {
                    "prompt" => call.prompt = Some(self.compile(&value.template, |_| Encoding::Raw)),
                    "system" => call.system = Some(self.compile(&value.template, |_| Encoding::Raw)),
                    "model" => call.model = self.plain_name(value, "a model name", Code::InvalidExtract),
                    "provider" => {
                        call.provider = self.plain_name(value, "a provider name", Code::InvalidExtract);
                        if let Some(name) = &call.provider {
                            self.check_provider_name(name, value.span, known_providers);
                        }
                    }
                    other => unreachable!("Checker::extract_call: the grammar allows no keyword `{other}`"),
                },
                LlmClause::Schema { fields, span } => {
                    has_fields = true;
                    if fields.is_empty() {
                        self.diagnostics.push(
                            Diagnostic::error(Code::InvalidSchema, "`fields` needs at least one field")
                                .with_label(*span, "no fields")
                                .with_help("declare fields such as `fields { policy_number: text, premium: number }`"),
                        );
                        continue;
                    }
                    call.fields = self.schema_fields(fields);
                }
                LlmClause::Output { target, span } => call.target = self.llm_target(target, *span),
                LlmClause::List { span, .. } => self.diagnostics.push(
                    Diagnostic::error(Code::InvalidExtract, "`extract` takes no list")
                        .with_label(*span, "not an extract clause")
                        .with_help("`choices` and `fallback` belong to `llm` actions"),
                ),
            }
        }
        if !has_fields {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidExtract, "an `extract` action needs `fields { ... }`")
                    .with_label(action.span, "no fields declared")
                    .with_help(
                        "declare what to extract, such as `fields { policy_number: text, premium: number }`",
                    ),
            );
            return None;
        }
        if call.target.is_none() {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidExtract, "an `extract` action needs a target")
                    .with_label(action.span, "the values go nowhere")
                    .with_help("write `-> entity` to make each field a field of the entity, or `-> entity.NAME` for one object"),
            );
            return None;
        }
        source?;
        Some(call)
    }

    /// Checks a `transcribe` action and compiles it.
    pub(crate) fn transcribe_call(
        &mut self,
        action: &TranscribeAction,
        known_providers: &[String],
    ) -> Option<TranscribeCall> {
        let source = self.media_source(&action.source, action.source_span, Code::InvalidTranscribe);
        let mut call = TranscribeCall {
            source: source
                .clone()
                .unwrap_or(Expr::String(String::new(), action.source_span)),
            provider: None,
            model: None,
            language: None,
            prompt: None,
            transcript: None,
            segments: None,
            detected_language: None,
            span: action.span,
        };
        let mut seen: Vec<(String, Span)> = Vec::new();
        for clause in &action.clauses {
            let keyword = match clause {
                TranscribeClause::Text { keyword, .. } => keyword.text.clone(),
                TranscribeClause::Output { part: Some(part), .. } => part.text.clone(),
                TranscribeClause::Output { part: None, .. } => "->".to_string(),
            };
            if self.repeated_clause(
                &mut seen,
                &keyword,
                clause.span(),
                Code::InvalidTranscribe,
                "transcribe",
            ) {
                continue;
            }
            match clause {
                TranscribeClause::Text { keyword, value } => match keyword.text.as_str() {
                    "prompt" => call.prompt = Some(self.compile(&value.template, |_| Encoding::Raw)),
                    "model" => call.model = self.plain_name(value, "a model name", Code::InvalidTranscribe),
                    "language" => {
                        call.language = self.plain_name(value, "a language code", Code::InvalidTranscribe);
                        if let Some(code) = &call.language {
                            if !(2..=3).contains(&code.len())
                                || !code.bytes().all(|byte| byte.is_ascii_lowercase())
                            {
                                self.diagnostics.push(
                                    Diagnostic::error(
                                        Code::InvalidTranscribe,
                                        format!("\"{code}\" is not a language code"),
                                    )
                                    .with_label(value.span, "not an ISO 639-1 code")
                                    .with_help(
                                        "write a two-letter code in lower case, such as `language \"en\"`",
                                    ),
                                );
                            }
                        }
                    }
                    "provider" => {
                        call.provider = self.plain_name(value, "a provider name", Code::InvalidTranscribe);
                        if let Some(name) = &call.provider {
                            self.check_provider_name(name, value.span, known_providers);
                        }
                    }
                    other => {
                        unreachable!("Checker::transcribe_call: the grammar allows no keyword `{other}`")
                    }
                },
                TranscribeClause::Output { part, target, span } => {
                    let target = self.llm_target(target, *span);
                    if matches!(target, Some(LlmTarget::EntityMembers)) {
                        self.diagnostics.push(
                            Diagnostic::error(Code::InvalidTranscribe, "a transcript goes to one field")
                                .with_label(*span, "the whole entity")
                                .with_help("write `-> entity.FIELD`"),
                        );
                        continue;
                    }
                    match part.as_ref().map(|part| part.text.as_str()) {
                        None => call.transcript = target,
                        Some("segments") => call.segments = target,
                        Some(_) => call.detected_language = target,
                    }
                }
            }
        }
        if call.transcript.is_none() && call.segments.is_none() && call.detected_language.is_none() {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidTranscribe, "a `transcribe` action needs a target")
                    .with_label(action.span, "the transcript goes nowhere")
                    .with_help("write `-> entity.FIELD` for the transcript"),
            );
            return None;
        }
        source?;
        Some(call)
    }

    /// Reads the source of an `extract` or `transcribe` action: a path in
    /// the entity, or a variable.
    fn media_source(&mut self, text: &str, span: Span, code: Code) -> Option<Expr> {
        let mut diagnostics = Vec::new();
        let expr = template::parse_expression(text, span.start, span, &mut diagnostics);
        match expr {
            Some(Expr::Path(path)) if path.root.text == "entity" && !path.segments.is_empty() => {
                Some(Expr::Path(path))
            }
            Some(Expr::Path(path)) if path.root.text == "vars" => {
                self.check_variable_use(&path);
                Some(Expr::Path(path))
            }
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(code, format!("cannot read a file from `{text}`"))
                        .with_label(span, "not a field that holds a file")
                        .with_help("name the field that holds the path, URL or data URI, such as `entity.policy_document`"),
                );
                None
            }
        }
    }

    fn repeated_clause(
        &mut self,
        seen: &mut Vec<(String, Span)>,
        keyword: &str,
        span: Span,
        code: Code,
        action: &str,
    ) -> bool {
        if let Some((_, first)) = seen.iter().find(|(name, _)| name == keyword) {
            self.diagnostics.push(
                Diagnostic::error(
                    code,
                    format!("`{keyword}` is given twice in one `{action}` action"),
                )
                .with_label(span, "given again here")
                .with_related(*first, "first given here")
                .with_help("keep one of the two"),
            );
            return true;
        }
        seen.push((keyword.to_string(), span));
        false
    }

    fn plain_name(&mut self, value: &StringLit, what: &str, code: Code) -> Option<String> {
        match value.as_plain() {
            Some(text) if !text.trim().is_empty() => Some(text),
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(code, format!("{what} must be plain, non-empty text"))
                        .with_label(value.span, "not plain text")
                        .with_help(format!("write {what} without merge fields")),
                );
                None
            }
        }
    }

    /// Reads `max_file_size`, `input_budget` or `upload_limit` into `params`.
    pub(crate) fn media_option(&mut self, option: &StepOption, params: &mut MediaParams) {
        let name = option.name.text.as_str();
        let example = match name {
            "input_budget" => "`input_budget 24000`: a number of characters",
            _ => "a size such as `25MB`, `512KB` or `1048576` bytes",
        };
        let [arg] = option.args.as_slice() else {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidOption, format!("`{name}` takes one value"))
                    .with_label(option.span, "one value expected")
                    .with_help(format!("write {example}")),
            );
            return;
        };
        let invalid = |checker: &mut Checker, arg: &OptionArg, reason: &str| {
            checker.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidOption,
                    format!("invalid {name} `{}`: {reason}", arg.text),
                )
                .with_label(arg.span, "invalid value")
                .with_help(format!("write {example}")),
            );
        };
        match name {
            "input_budget" => match arg.text.parse::<usize>() {
                Ok(budget) if (1_000..=10_000_000).contains(&budget) => params.input_budget = budget,
                Ok(_) => invalid(self, arg, "must be between 1000 and 10000000"),
                Err(_) => invalid(self, arg, "not a whole number"),
            },
            _ => match parse_size(&arg.text) {
                Some(0) => invalid(self, arg, "must be greater than zero"),
                Some(size) if size > MAX_SIZE => invalid(self, arg, "is larger than the maximum of 4GB"),
                Some(size) if name == "max_file_size" => params.max_file_size = size,
                Some(size) => params.upload_limit = size,
                None => invalid(self, arg, "not a size"),
            },
        }
    }
}

/// Parses a size: a whole number of bytes, or one followed by `KB`, `MB`
/// or `GB`, each 1024 times the one before.
pub fn parse_size(text: &str) -> Option<u64> {
    let upper = text.trim().to_ascii_uppercase();
    let (digits, factor) = if let Some(digits) = upper.strip_suffix("GB") {
        (digits, 1u64 << 30)
    } else if let Some(digits) = upper.strip_suffix("MB") {
        (digits, 1 << 20)
    } else if let Some(digits) = upper.strip_suffix("KB") {
        (digits, 1 << 10)
    } else {
        (upper.strip_suffix('B').unwrap_or(&upper), 1)
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("25MB"), Some(25 * 1024 * 1024));
        assert_eq!(parse_size("512kb"), Some(512 * 1024));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("300"), Some(300));
        assert_eq!(parse_size("300B"), Some(300));
        assert_eq!(parse_size("2.5MB"), None);
        assert_eq!(parse_size("MB"), None);
        assert_eq!(parse_size("99999999999999999999GB"), None);
    }
}
