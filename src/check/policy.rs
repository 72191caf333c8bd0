//! `on error` lines and workflow settings: what a failed step does, and
//! where notifications go.

use crate::check::names::did_you_mean;
use crate::check::Checker;
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::program::{Compiled, NotifySeverity, OnError};
use crate::syntax::ast::StepOption;

/// Workflow settings, the lines outside steps that are not `let`.
pub const SETTINGS: [&str; 3] = ["on", "notify", "entity"];

const ON_ERROR_FORMS: &str = "write `on error continue notify`, `on error pause notify` or \
                              `on error continue silently`, optionally followed by \
                              `severity low|medium|high|critical` after `notify`";

/// One `on error` line: the behaviour, and the severity when it names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnErrorLine {
    pub on_error: OnError,
    pub severity: Option<NotifySeverity>,
}

/// The workflow-level settings of a file.
#[derive(Debug, Default)]
pub struct WorkflowSettings {
    pub on_error: Option<OnErrorLine>,
    pub webhooks: Vec<Compiled>,
}

impl Checker {
    /// Reads the workflow settings of a file, in order.
    pub(crate) fn workflow_settings(&mut self, settings: &[&StepOption]) -> WorkflowSettings {
        let mut result = WorkflowSettings::default();
        let mut on_error_span: Option<Span> = None;
        for setting in settings {
            match setting.name.text.as_str() {
                "on" => {
                    if let Some(first) = on_error_span {
                        self.duplicate_on_error(setting, first);
                        continue;
                    }
                    on_error_span = Some(setting.span);
                    result.on_error = self.on_error(setting);
                }
                "notify" => {
                    if let Some(webhook) = self.notify(setting) {
                        result.webhooks.push(webhook);
                    }
                }
                "entity" => self.entity_setting(setting),
                name => self.diagnostics.push(
                    Diagnostic::error(Code::UnknownSetting, format!("unknown workflow setting `{name}`"))
                        .with_label(setting.name.span, "not a setting")
                        .with_help(format!(
                            "{} Lines outside steps start with `workflow`, `let`, `step`, `http`, `provider`, `on error` or `notify webhook`.",
                            did_you_mean(name, &SETTINGS, "settings")
                        )),
                ),
            }
        }
        result
    }

    /// Checks the form of `entity schema "FILE"`; `cli` reads the file.
    fn entity_setting(&mut self, setting: &StepOption) {
        let args = &setting.args;
        let well_formed = args.len() == 2
            && args[0].text == "schema"
            && args[1].quoted
            && args[1]
                .template
                .as_ref()
                .is_some_and(|template| template.as_plain().is_some());
        if !well_formed {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidEntitySchema, "the entity schema line must name one file")
                    .with_label(setting.span, "not `entity schema \"FILE\"`")
                    .with_help("write `entity schema \"claim.schema.json\"`: a JSON Schema or a sample entity, relative to the workflow"),
            );
        }
    }

    pub(crate) fn duplicate_on_error(&mut self, option: &StepOption, first: Span) {
        self.diagnostics.push(
            Diagnostic::error(Code::DuplicateOption, "`on error` is given twice")
                .with_label(option.span, "given again here")
                .with_related(first, "first given here")
                .with_help("keep one of the two lines"),
        );
    }

    /// Reads `on error BEHAVIOUR [severity LEVEL]`.
    pub(crate) fn on_error(&mut self, option: &StepOption) -> Option<OnErrorLine> {
        let words: Vec<&str> = option.args.iter().map(|arg| arg.text.as_str()).collect();
        let invalid = |checker: &mut Checker, span: Span, message: String| {
            checker.diagnostics.push(
                Diagnostic::error(Code::InvalidOnError, message)
                    .with_label(span, "not a failure behaviour")
                    .with_help(ON_ERROR_FORMS),
            );
            None
        };
        if words.first() != Some(&"error") {
            return invalid(
                self,
                option.span,
                "`on` is written `on error BEHAVIOUR`".to_string(),
            );
        }
        let (on_error, used) = match words.get(1..3) {
            Some(["continue", "notify"]) => (OnError::ContinueNotify, 3),
            Some(["pause", "notify"]) => (OnError::PauseNotify, 3),
            Some(["continue", "silently"]) => (OnError::ContinueSilently, 3),
            _ => {
                let span = option.args.get(1).map_or(option.span, |arg| arg.span);
                let written = words[1..].join(" ");
                return invalid(self, span, format!("unknown failure behaviour `{written}`"));
            }
        };
        let rest = &option.args[used..];
        let severity = match rest {
            [] => None,
            [keyword, level] if keyword.text == "severity" && on_error != OnError::ContinueSilently => {
                match NotifySeverity::ALL
                    .into_iter()
                    .find(|known| known.as_str() == level.text)
                {
                    Some(severity) => Some(severity),
                    None => {
                        let names: Vec<&str> =
                            NotifySeverity::ALL.iter().map(|known| known.as_str()).collect();
                        self.diagnostics.push(
                            Diagnostic::error(
                                Code::InvalidOnError,
                                format!("unknown severity `{}`", level.text),
                            )
                            .with_label(level.span, "not a severity")
                            .with_help(did_you_mean(
                                &level.text,
                                &names,
                                "severities",
                            )),
                        );
                        return None;
                    }
                }
            }
            [keyword, ..] if keyword.text == "severity" && on_error == OnError::ContinueSilently => {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::InvalidOnError,
                        "`continue silently` sends no notification, so it takes no severity",
                    )
                    .with_label(keyword.span, "severity of a notification never sent")
                    .with_help("remove the severity, or use `on error continue notify severity LEVEL`"),
                );
                return None;
            }
            [first, ..] => {
                return invalid(
                    self,
                    first.span,
                    format!("unexpected `{}` in `on error`", first.text),
                );
            }
        };
        Some(OnErrorLine { on_error, severity })
    }

    /// Reads `notify webhook "URL"`.
    fn notify(&mut self, setting: &StepOption) -> Option<Compiled> {
        let help = "write `notify webhook \"https://hooks.example.test/flowrun\"`; the URL may use `<<vars.NAME>>` and `<<secret.NAME>>`";
        let [kind, url] = setting.args.as_slice() else {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidNotify, "invalid `notify` line")
                    .with_label(setting.span, "expected `webhook` and a quoted URL")
                    .with_help(help),
            );
            return None;
        };
        if kind.text != "webhook" || kind.quoted {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidNotify,
                    format!("unknown notification channel `{}`", kind.text),
                )
                .with_label(kind.span, "not a channel")
                .with_help(format!(
                    "{}; the stderr line is always written, and --notify-file adds a file",
                    help
                )),
            );
            return None;
        }
        if !url.quoted {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidNotify, "the webhook URL must be quoted")
                    .with_label(url.span, "unquoted URL")
                    .with_help(help),
            );
            return None;
        }
        let Some(parsed) = &url.template else {
            return None;
        };
        for field in parsed.fields() {
            if self.varies_per_execution(&field.expr) {
                {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::InvalidNotify,
                            "a webhook URL may use only `vars` and `secret`",
                        )
                        .with_label(field.span, "differs per execution")
                        .with_help("put execution details in the notification body, which flowrun writes"),
                    );
                    return None;
                }
            }
        }
        // Encoded like the URL of an HTTP step: values in the path and query
        // are percent-encoded.
        let literal = crate::syntax::ast::StringLit {
            template: parsed.clone(),
            span: url.span,
        };
        Some(self.url(&literal))
    }
}
