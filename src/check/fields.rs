//! Checks merge fields and compiles templates with the encoding of each
//! field's position.

use crate::check::names::did_you_mean;
use crate::check::Checker;
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::program::{Compiled, Encoding, Piece};
use crate::syntax::ast::{Call, Expr, Path, PathKey, Segment, Template};

pub const ROOTS: [&str; 4] = ["entity", "execution", "vars", "secret"];
pub const EXECUTION_FIELDS: [&str; 3] = ["id", "started_at", "workflow"];

/// Helpers callable in a merge field, with their argument counts.
pub const HELPERS: [(&str, usize, &str); 5] = [
    (
        "default",
        2,
        "`default PATH VALUE`: the value at PATH, or VALUE when PATH is missing or null",
    ),
    ("upper", 1, "`upper VALUE`: the text in upper case"),
    ("lower", 1, "`lower VALUE`: the text in lower case"),
    ("json", 1, "`json VALUE`: the value written as JSON text"),
    (
        "date",
        2,
        "`date VALUE \"FORMAT\"`: an RFC 3339 date written with a format such as \"[year]-[month]-[day]\"",
    ),
];

impl Checker {
    /// Checks every field of `template` and compiles it. `encoding_of` gives
    /// the encoding of the field with the given index.
    pub(crate) fn compile(
        &mut self,
        template: &Template,
        encoding_of: impl Fn(usize) -> Encoding,
    ) -> Compiled {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut field_index = 0;
        for segment in &template.segments {
            match segment {
                Segment::Text(part) => match pieces.last_mut() {
                    Some(Piece::Text(text)) => text.push_str(&part.text),
                    _ => pieces.push(Piece::Text(part.text.clone())),
                },
                Segment::Field(field) => {
                    self.check_expr(&field.expr, false);
                    pieces.push(Piece::Field {
                        expr: field.expr.clone(),
                        encoding: encoding_of(field_index),
                        span: field.span,
                    });
                    field_index += 1;
                }
            }
        }
        Compiled { pieces }
    }

    /// Whether an expression reads the entity or the execution, directly, in
    /// a helper's arguments, or through a variable whose `let` does.
    pub(crate) fn varies_per_execution(&self, expr: &Expr) -> bool {
        match expr {
            Expr::Path(path) => match path.root.text.as_str() {
                "entity" | "execution" => true,
                "vars" => matches!(path.segments.first().map(|segment| &segment.key),
                    Some(PathKey::Field(name)) if self.execution_vars.contains(name)),
                _ => false,
            },
            Expr::Call(call) => call.args.iter().any(|arg| self.varies_per_execution(arg)),
            Expr::String(..) | Expr::Number(..) => false,
        }
    }

    /// Checks one expression. `in_default` is true for the first argument of
    /// `default`, where a missing path is expected.
    pub(crate) fn check_expr(&mut self, expr: &Expr, in_default: bool) {
        match expr {
            Expr::Path(path) => self.check_path(path, in_default),
            Expr::Call(call) => self.check_call(call),
            Expr::String(..) | Expr::Number(..) => {}
        }
    }

    fn check_call(&mut self, call: &Call) {
        let name = call.helper.text.as_str();
        let Some((_, arity, usage)) = HELPERS.iter().find(|(helper, ..)| *helper == name) else {
            let names: Vec<&str> = HELPERS.iter().map(|(helper, ..)| *helper).collect();
            let mut diagnostic = Diagnostic::error(Code::UnknownHelper, format!("unknown helper `{name}`"))
                .with_label(call.helper.span, "not a helper");
            if ROOTS.contains(&name) {
                diagnostic = diagnostic.with_help(format!(
                    "`{name}` is a merge-field root: write a path such as `{name}.field`"
                ));
            } else {
                diagnostic = diagnostic.with_help(did_you_mean(name, &names, "helpers"));
            }
            self.diagnostics.push(diagnostic);
            return;
        };
        if call.args.len() != *arity {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidHelperCall,
                    format!(
                        "`{name}` takes {arity} argument{}, found {}",
                        plural(*arity),
                        call.args.len()
                    ),
                )
                .with_label(call.span, "wrong number of arguments")
                .with_help(format!("usage: {usage}")),
            );
            return;
        }
        if name == "date" {
            self.check_date_format(&call.args[1]);
        }
        for (index, arg) in call.args.iter().enumerate() {
            self.check_expr(arg, name == "default" && index == 0);
        }
    }

    fn check_date_format(&mut self, arg: &Expr) {
        let Expr::String(format, span) = arg else {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidHelperCall,
                    "the format of `date` must be a quoted string",
                )
                .with_label(arg.span(), "not a quoted format")
                .with_help("write a format such as \"[year]-[month]-[day]\""),
            );
            return;
        };
        if let Err(error) = time::format_description::parse_borrowed::<2>(format) {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidHelperCall, format!("invalid date format: {error}"))
                    .with_label(*span, "invalid format")
                    .with_help(
                        "formats use components such as [year], [month], [day], [hour], [minute], [second]",
                    ),
            );
        }
    }

    fn check_path(&mut self, path: &Path, in_default: bool) {
        let root = path.root.text.as_str();
        match root {
            "entity" => {}
            "execution" => self.check_execution_path(path),
            "vars" => self.check_variable_use(path),
            // A secret inside `default` may be left unset, so it is not
            // required before the run.
            "secret" if in_default => {}
            "secret" => self.check_secret_path(path),
            "response" => self.diagnostics.push(
                Diagnostic::error(Code::UnknownMergeFieldRoot, "`response` is not a merge-field root")
                    .with_label(path.root.span, "not available in templates")
                    .with_help(
                        "a response is only read by a `save` line, such as `save response.json.id -> entity.remote_id`",
                    ),
            ),
            _ if path.segments.is_empty() && in_default => {}
            _ => self.diagnostics.push(
                Diagnostic::error(Code::UnknownMergeFieldRoot, format!("unknown merge-field root `{root}`"))
                    .with_label(path.root.span, "unknown root")
                    .with_help(did_you_mean(root, &ROOTS, "roots")),
            ),
        }
    }

    fn check_execution_path(&mut self, path: &Path) {
        let Some(first) = path.segments.first() else {
            return;
        };
        let PathKey::Field(name) = &first.key else {
            return self.unknown_execution_field(&format!("[{}]", path_key_text(&first.key)), first.span);
        };
        if !EXECUTION_FIELDS.contains(&name.as_str()) {
            self.unknown_execution_field(name, first.span);
        }
    }

    fn unknown_execution_field(&mut self, name: &str, span: Span) {
        self.diagnostics.push(
            Diagnostic::error(
                Code::UnknownExecutionField,
                format!("unknown execution field `{name}`"),
            )
            .with_label(span, "not an execution field")
            .with_help(did_you_mean(name, &EXECUTION_FIELDS, "execution fields")),
        );
    }

    pub(crate) fn check_variable_use(&mut self, path: &Path) {
        let Some(first) = path.segments.first() else {
            self.diagnostics.push(
                Diagnostic::error(Code::UnknownVariable, "`vars` needs a variable name")
                    .with_label(path.span, "no variable named")
                    .with_help("write `vars.NAME` for a variable declared with `let NAME = ...`"),
            );
            return;
        };
        let PathKey::Field(name) = &first.key else {
            self.diagnostics.push(
                Diagnostic::error(Code::UnknownVariable, "variables are named, not indexed")
                    .with_label(first.span, "an index where a name belongs")
                    .with_help("write `vars.NAME`"),
            );
            return;
        };
        if self.variables.contains_key(name.as_str()) && !self.unreached_variables.contains(name.as_str()) {
            return;
        }
        let declared: Vec<&str> = self.variable_order.iter().map(String::as_str).collect();
        let mut diagnostic = Diagnostic::error(Code::UnknownVariable, format!("unknown variable `{name}`"))
            .with_label(first.span, "not declared before this point");
        diagnostic = match self.later_variables.get(name.as_str()) {
            // The declaration starts before the use only when the use is in
            // the declaration's own sources.
            Some(span) if span.start < first.span.start => diagnostic
                .with_related(*span, "declared here")
                .with_help(format!(
                    "a `let` cannot read its own variable: give `{name}` a fallback that does not use `vars.{name}`"
                )),
            Some(span) => diagnostic
                .with_related(*span, "declared here, after its use")
                .with_help("variables are evaluated top to bottom: move the `let` above its first use"),
            None if declared.is_empty() => diagnostic.with_help(format!(
                "declare it with `let {name} = \"...\"` or `let {name}` and pass `--var {name}=VALUE`"
            )),
            None => diagnostic.with_help(format!(
                "{} A new variable is declared with `let {name} = \"...\"`.",
                did_you_mean(name, &declared, "variables")
            )),
        };
        self.diagnostics.push(diagnostic);
    }

    fn check_secret_path(&mut self, path: &Path) {
        let valid = match path.segments.as_slice() {
            [segment] => match &segment.key {
                PathKey::Field(name) => {
                    if !self.program_secrets.iter().any(|(known, _)| known == name) {
                        self.program_secrets.push((name.clone(), path.span));
                    }
                    true
                }
                PathKey::Index(_) => false,
            },
            _ => false,
        };
        if !valid {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidSecretPath, "a secret is written `secret.NAME`")
                    .with_label(path.span, "not a secret name")
                    .with_help(
                        "write `secret.NAME`; its value comes from the environment variable FLOWRUN_SECRET_NAME or the --secrets file",
                    ),
            );
        }
    }
}

fn path_key_text(key: &PathKey) -> String {
    match key {
        PathKey::Field(name) => name.clone(),
        PathKey::Index(index) => index.to_string(),
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}
