//! Checks statements and flattens `if` blocks into steps.
//!
//! Every statement outside a step becomes a step of its own, named after
//! its keyword and line, such as `if (line 12)`. A step inside an `if`
//! block carries guards: the condition steps and branches it needs. So the
//! interpreter walks one flat list, and a resume finds every step by name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::check::names::did_you_mean;
use crate::check::Checker;
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::program::statement::{
    Branch, CodeCall, CodeOutput, Condition, Guard, LetStatement, Operand, SetStatement, Statement,
    ValueExpr, VarType, DEFAULT_CODE_MEMORY,
};
use crate::program::{
    Action, Compiled, Encoding, ErrorPolicy, LlmCall, LlmOutput, LlmTarget, Piece, SaveTarget, Settings,
    Step, Variable,
};
use crate::syntax::ast::{self, ArithOp, CompareOp, Expr, Item, LlmClause, PathKey, StepItem};
use crate::syntax::template;

/// The variable an LLM condition writes its answer to before the
/// interpreter reads and removes it. No merge field can name it.
pub const CONDITION_ANSWER: &str = "@answer";
/// What stands between the question of an LLM condition and the text it is
/// about, in the prompt.
pub const ABOUT_MARK: &str = "\n\nText:\n";

/// The steps built so far and the names they use.
pub(crate) struct Flattener {
    pub steps: Vec<Step>,
    pub step_names: HashMap<String, Span>,
    pub default_policy: ErrorPolicy,
}

/// Collects every `let` in `items` and the blocks inside them, in source
/// order. Each comes with whether it is resolved before the first step: a
/// simple declaration at the top level.
pub(crate) fn collect_lets<'a>(items: &'a [Item], top: bool, out: &mut Vec<(&'a ast::Let, bool)>) {
    for item in items {
        match item {
            Item::Let(decl) => out.push((decl, top && decl.is_simple())),
            Item::Statement(ast::Statement::If(block)) => {
                collect_lets(&block.then, false, out);
                if let Some(otherwise) = &block.otherwise {
                    collect_lets(otherwise, false, out);
                }
            }
            _ => {}
        }
    }
}

/// Finds `program` in the directories of `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether `python3` is on `PATH`, so that scripts can be compiled.
pub(crate) fn python_available() -> bool {
    find_on_path("python3").is_some()
}

/// The units of a duration literal, in the singular.
const DURATION_UNITS: [&str; 5] = ["week", "day", "hour", "minute", "second"];

/// Parses a duration literal such as `30 days` or `1 hour`.
fn parse_duration_literal(text: &str) -> Option<Duration> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(digits_end);
    let count: u64 = digits.parse().ok()?;
    let seconds = match unit.trim().trim_end_matches('s') {
        "week" => 7 * 24 * 3600,
        "day" => 24 * 3600,
        "hour" => 3600,
        "minute" => 60,
        "second" => 1,
        _ => return None,
    };
    count.checked_mul(seconds).map(Duration::from_secs)
}

/// Whether a value is a duration: a duration literal, or the sum or
/// difference of two durations.
fn is_duration(expr: &ast::ValueExpr) -> bool {
    match expr {
        ast::ValueExpr::Operand(operand) => matches!(operand, ast::Operand::Duration(..)),
        ast::ValueExpr::Binary { left, right, .. } => is_duration(left) && is_duration(right),
    }
}

/// What the checker knows of an operand's type.
#[derive(Debug, Clone, PartialEq)]
enum Known {
    Type(VarType),
    /// A quoted string without merge fields: text that may convert.
    Literal(String),
    Duration,
    Unknown,
}

impl Checker {
    /// Declares a variable that a `let` step computes.
    pub(crate) fn deferred_variable(&mut self, decl: &ast::Let) -> Option<Variable> {
        let name = &decl.name.text;
        if let Some(first) = self.variables.get(name) {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::DuplicateVariable,
                    format!("variable `{name}` is declared twice"),
                )
                .with_label(decl.name.span, "declared again here")
                .with_related(*first, "first declared here")
                .with_help("remove one declaration or rename it"),
            );
            return None;
        }
        self.variables.insert(name.clone(), decl.name.span);
        self.variable_order.push(name.clone());
        self.execution_vars.insert(name.clone());
        let ty = self.let_type(decl);
        if let Some(ty) = ty {
            self.var_types.insert(name.clone(), ty);
        }
        Some(Variable {
            name: name.clone(),
            value: None,
            deferred: true,
            ty,
            needs_var: decl.value.is_none() && decl.fallbacks.is_empty(),
            span: decl.span,
        })
    }

    /// The declared type of a `let`, or the type of its first number or
    /// boolean literal; `None` when it has neither.
    fn let_type(&mut self, decl: &ast::Let) -> Option<VarType> {
        if let Some(ty) = &decl.ty {
            return Some(match VarType::parse(&ty.text) {
                Some(ty) => ty,
                None => {
                    let names: Vec<&str> = VarType::ALL.iter().map(|ty| ty.as_str()).collect();
                    self.diagnostics.push(
                        Diagnostic::error(Code::UnknownType, format!("unknown type `{}`", ty.text))
                            .with_label(ty.span, "not a variable type")
                            .with_help(did_you_mean(&ty.text, &names, "types")),
                    );
                    VarType::Text
                }
            });
        }
        std::iter::once(decl.value.as_ref())
            .flatten()
            .chain(decl.fallbacks.iter())
            .find_map(|value| match value {
                ast::Operand::Number(..) => Some(VarType::Number),
                ast::Operand::Bool(..) => Some(VarType::Boolean),
                _ => None,
            })
    }

    /// Checks `items` and appends their steps to `flat`. Each step gets
    /// `guards`, and the steps of an `if` block also the branch they need.
    pub(crate) fn flatten(&mut self, items: &[Item], guards: &[Guard], flat: &mut Flattener) {
        for item in items {
            match item {
                Item::Step(step) => {
                    self.step_name(&step.name, step.name_span, step.name_is_plain, flat);
                    let mut checked = self.step(step, flat.default_policy);
                    checked.guards = guards.to_vec();
                    flat.steps.push(checked);
                }
                Item::Let(decl) if guards.is_empty() && decl.is_simple() => {}
                Item::Let(decl) => {
                    // The sources are checked first, so that a `let` that
                    // reads its own variable is a use before declaration.
                    let statement = self.let_statement(decl);
                    self.unreached_variables.remove(&decl.name.text);
                    let name = format!("let {} (line {})", decl.name.text, decl.line);
                    self.statement_step(name, decl.span, statement, guards, flat);
                }
                Item::Statement(ast::Statement::If(block)) => self.if_block(block, guards, flat),
                Item::Statement(ast::Statement::ElseWithoutIf(span)) => self.diagnostics.push(
                    Diagnostic::error(Code::ElseWithoutIf, "`else` without an `if` before it")
                        .with_label(*span, "no `if` block ends right before this `else`")
                        .with_help("put the `else` block right after the `}` of an `if` block, or remove it"),
                ),
                Item::Statement(ast::Statement::Set(set)) => {
                    let statement = self.set_statement(set);
                    let name = format!("set {} (line {})", set.target, set.line);
                    self.statement_step(name, set.span, statement, guards, flat);
                }
                Item::Statement(ast::Statement::Clear(clear)) => {
                    let statement = self
                        .statement_target(&clear.target, clear.target_span)
                        .map(|target| Statement::Clear { target });
                    let name = format!("clear {} (line {})", clear.target, clear.line);
                    self.statement_step(name, clear.span, statement, guards, flat);
                }
                Item::Statement(ast::Statement::Stop(stop)) => {
                    let message = stop
                        .message
                        .as_ref()
                        .map(|message| self.compile(&message.template, |_| Encoding::Raw));
                    let statement = Some(Statement::Stop {
                        failed: stop.failed,
                        message,
                    });
                    let name = format!("stop (line {})", stop.line);
                    self.statement_step(name, stop.span, statement, guards, flat);
                }
                Item::Setting(_) | Item::Provider(_) => {}
            }
        }
    }

    fn step_name(&mut self, name: &str, span: Span, plain: bool, flat: &mut Flattener) {
        if !plain {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidName, "a step name cannot hold merge fields")
                    .with_label(span, "merge field in the name")
                    .with_help(
                        "write the name as plain text, so that logs and run reports can name the step",
                    ),
            );
        }
        if let Some(first) = flat.step_names.get(name) {
            self.diagnostics.push(
                Diagnostic::error(Code::DuplicateStepName, format!("duplicate step name \"{name}\""))
                    .with_label(span, "used again here")
                    .with_related(*first, "first used here")
                    .with_help("give each step its own name, so that logs and run reports identify it"),
            );
        } else {
            flat.step_names.insert(name.to_string(), span);
        }
    }

    /// Adds a step that runs one statement. A statement that did not check
    /// adds nothing: its diagnostic is reported.
    fn statement_step(
        &mut self,
        mut name: String,
        span: Span,
        statement: Option<Statement>,
        guards: &[Guard],
        flat: &mut Flattener,
    ) -> Option<String> {
        let statement = statement?;
        // Two statements on one line get the column too.
        if flat.step_names.contains_key(&name) {
            name = format!("{name} at byte {}", span.start);
        }
        flat.step_names.insert(name.clone(), span);
        flat.steps.push(Step {
            name: name.clone(),
            span,
            actions: vec![Action::Statement(statement)],
            settings: Settings::default(),
            policy: flat.default_policy,
            guards: guards.to_vec(),
        });
        Some(name)
    }

    fn if_block(&mut self, block: &ast::IfBlock, guards: &[Guard], flat: &mut Flattener) {
        let condition = self.condition(&block.condition);
        let name = format!("if (line {})", block.line);
        let Some(name) = self.statement_step(
            name,
            block.head,
            Some(Statement::Condition(condition)),
            guards,
            flat,
        ) else {
            return;
        };
        if let Some(Step { settings, .. }) = flat.steps.last_mut() {
            if condition_uses_llm(&block.condition) {
                settings.timeout = crate::check::LLM_TIMEOUT;
            }
        }
        let mut inner = guards.to_vec();
        inner.push(Guard {
            condition: name.clone(),
            branch: Branch::Then,
        });
        self.flatten(&block.then, &inner, flat);
        if let Some(otherwise) = &block.otherwise {
            inner.pop();
            inner.push(Guard {
                condition: name,
                branch: Branch::Else,
            });
            self.flatten(otherwise, &inner, flat);
        }
    }

    fn let_statement(&mut self, decl: &ast::Let) -> Option<Statement> {
        let ty = self.var_types.get(&decl.name.text).copied();
        for source in std::iter::once(decl.value.as_ref())
            .flatten()
            .chain(decl.fallbacks.iter())
        {
            if let ast::Operand::Duration(text, span) = source {
                self.duration_as_value(
                    format!("variable `{}` cannot hold the duration `{text}`", decl.name.text),
                    *span,
                );
            }
        }
        let sources = std::iter::once(decl.value.as_ref())
            .flatten()
            .chain(decl.fallbacks.iter())
            .map(|source| self.operand(source))
            .collect();
        Some(Statement::Let(LetStatement {
            name: decl.name.text.clone(),
            ty,
            declared: decl.ty.is_some(),
            required: decl.required,
            sources,
        }))
    }

    fn set_statement(&mut self, set: &ast::SetStatement) -> Option<Statement> {
        if is_duration(&set.value) {
            self.duration_as_value(
                format!("`set {}` cannot write a duration", set.target),
                set.value.span(),
            );
        }
        let value = self.value_expr(&set.value);
        let target = self.statement_target(&set.target, set.target_span)?;
        let ty = match &target {
            SaveTarget::Variable(name) => self.var_types.get(name).copied(),
            SaveTarget::Entity(_) => None,
        };
        Some(Statement::Set(SetStatement {
            target,
            mode: set.mode,
            value,
            ty,
        }))
    }

    /// Reports a duration stored as a value. A duration only shifts a date,
    /// and no JSON value represents it.
    pub(crate) fn duration_as_value(&mut self, message: String, span: Span) {
        self.diagnostics.push(
            Diagnostic::error(Code::TypeMismatch, message)
                .with_label(span, "a duration is not a value")
                .with_help(
                    "add the duration to a date where it is used, as in `<<entity.opened>> + 30 days`, or store a number, such as `let wait_days = 30`",
                ),
        );
    }

    /// Reads the target of `set`, `clear` or a code output: `entity.PATH`
    /// or `vars.NAME` of a declared variable.
    pub(crate) fn statement_target(&mut self, text: &str, span: Span) -> Option<SaveTarget> {
        let mut diagnostics = Vec::new();
        let expr = template::parse_expression(text, span.start, span, &mut diagnostics);
        let path = match expr {
            Some(Expr::Path(path)) if diagnostics.is_empty() => path,
            _ => return self.invalid_statement_target(text, span),
        };
        let keys: Vec<PathKey> = path.segments.iter().map(|segment| segment.key.clone()).collect();
        match (path.root.text.as_str(), keys.as_slice()) {
            ("entity", [_, ..]) => Some(SaveTarget::Entity(keys)),
            ("vars", [PathKey::Field(name)]) => {
                self.check_variable_use(&path);
                Some(SaveTarget::Variable(name.clone()))
            }
            _ => self.invalid_statement_target(text, span),
        }
    }

    fn invalid_statement_target(&mut self, text: &str, span: Span) -> Option<SaveTarget> {
        self.diagnostics.push(
            Diagnostic::error(Code::InvalidTarget, format!("cannot write to `{text}`"))
                .with_label(span, "not a field or a variable")
                .with_help("write to a field, such as `entity.status`, or to a declared variable, such as `vars.total`"),
        );
        None
    }

    pub(crate) fn value_expr(&mut self, expr: &ast::ValueExpr) -> ValueExpr {
        match expr {
            ast::ValueExpr::Operand(operand) => ValueExpr::Operand(self.operand(operand)),
            ast::ValueExpr::Binary {
                op,
                left,
                right,
                span,
            } => {
                for side in [left, right] {
                    if let ast::ValueExpr::Operand(operand) = side.as_ref() {
                        self.check_arithmetic_operand(*op, operand);
                    }
                }
                ValueExpr::Binary {
                    op: *op,
                    left: Box::new(self.value_expr(left)),
                    right: Box::new(self.value_expr(right)),
                    span: *span,
                }
            }
        }
    }

    /// Reports a literal that arithmetic always rejects: a boolean, or a
    /// text that is neither a number nor a date or date-time.
    fn check_arithmetic_operand(&mut self, op: ArithOp, operand: &ast::Operand) {
        let (shown, span) = match operand {
            ast::Operand::Bool(value, span) => (format!("the boolean `{value}`"), *span),
            ast::Operand::String(lit) => match lit.as_plain() {
                Some(text)
                    if !crate::value::compares_with(&text, VarType::Number)
                        && !crate::value::compares_with(&text, VarType::Datetime) =>
                {
                    (format!("the text \"{text}\""), lit.span)
                }
                _ => return,
            },
            _ => return,
        };
        self.diagnostics.push(
            Diagnostic::error(
                Code::TypeMismatch,
                format!(
                    "`{}` works on numbers, and on a date with a duration, but {shown} is neither",
                    op.as_str()
                ),
            )
            .with_label(span, "never a number or a date")
            .with_help("write a number, such as `2`, or a merge field that holds one"),
        );
    }

    fn operand(&mut self, operand: &ast::Operand) -> Operand {
        match operand {
            ast::Operand::String(lit) => {
                Operand::Text(self.compile(&lit.template, |_| Encoding::Raw), lit.span)
            }
            ast::Operand::Number(text, span) => Operand::Literal(
                serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone())),
                *span,
            ),
            ast::Operand::Bool(value, span) => Operand::Literal(serde_json::Value::Bool(*value), *span),
            ast::Operand::Field(field) => {
                self.check_expr(&field.expr, false);
                Operand::Field {
                    ty: self.field_type(&field.expr),
                    expr: field.expr.clone(),
                    span: field.span,
                }
            }
            ast::Operand::Duration(text, span) => {
                let unit = text.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
                if !DURATION_UNITS.contains(&unit.trim_end_matches('s')) {
                    self.diagnostics.push(
                        Diagnostic::error(Code::UnknownUnit, format!("unknown duration unit `{unit}`"))
                            .with_label(*span, "not a duration unit")
                            .with_help("valid units: `weeks`, `days`, `hours`, `minutes`, `seconds`; a month or a year has no fixed length, so write days, such as `30 days`"),
                    );
                }
                // A count too large for seconds is rare enough for zero.
                Operand::Duration(parse_duration_literal(text).unwrap_or_default(), *span)
            }
        }
    }

    /// The declared type of the variable a merge field reads, if it reads
    /// one directly.
    fn field_type(&self, expr: &Expr) -> Option<VarType> {
        let Expr::Path(path) = expr else { return None };
        if path.root.text != "vars" || path.segments.len() != 1 {
            return None;
        }
        match &path.segments[0].key {
            PathKey::Field(name) => self.var_types.get(name).copied(),
            PathKey::Index(_) => None,
        }
    }

    fn known(&self, operand: &ast::Operand) -> Known {
        match operand {
            ast::Operand::String(lit) => match lit.as_plain() {
                Some(text) => Known::Literal(text),
                None => Known::Unknown,
            },
            ast::Operand::Number(..) => Known::Type(VarType::Number),
            ast::Operand::Bool(..) => Known::Type(VarType::Boolean),
            ast::Operand::Duration(..) => Known::Duration,
            ast::Operand::Field(field) => match self.field_type(&field.expr) {
                // A text variable may hold anything a field holds.
                Some(VarType::Text) | None => Known::Unknown,
                Some(ty) => Known::Type(ty),
            },
        }
    }

    fn condition(&mut self, condition: &ast::Condition) -> Condition {
        match condition {
            ast::Condition::Or(parts, _) => {
                Condition::Any(parts.iter().map(|part| self.condition(part)).collect())
            }
            ast::Condition::And(parts, _) => {
                Condition::All(parts.iter().map(|part| self.condition(part)).collect())
            }
            ast::Condition::Not(inner, _) => Condition::Not(Box::new(self.condition(inner))),
            ast::Condition::Compare {
                left,
                op,
                right,
                ignore_case,
                span,
            } => {
                self.check_types(left, right, *op, op.as_str());
                Condition::Compare {
                    left: self.operand(left),
                    op: *op,
                    right: self.operand(right),
                    ignore_case: *ignore_case,
                    span: *span,
                }
            }
            ast::Condition::In {
                left,
                items,
                negated,
                ignore_case,
                span,
            } => {
                // An item is compared with `==`, except that a text item
                // that is not a number is simply not equal to a number.
                let left_known = self.known(left);
                for item in items {
                    let unequal_text = match (&left_known, self.known(item)) {
                        (Known::Type(VarType::Number), Known::Literal(text)) => {
                            !crate::value::compares_with(&text, VarType::Number)
                        }
                        _ => false,
                    };
                    if !unequal_text {
                        self.check_types(left, item, CompareOp::Eq, if *negated { "not in" } else { "in" });
                    }
                }
                Condition::In {
                    left: self.operand(left),
                    items: items.iter().map(|item| self.operand(item)).collect(),
                    negated: *negated,
                    ignore_case: *ignore_case,
                    span: *span,
                }
            }
            ast::Condition::Blank { operand, negated, .. } => Condition::Blank {
                operand: self.operand(operand),
                negated: *negated,
            },
            ast::Condition::Llm {
                question,
                about,
                clauses,
                span,
            } => Condition::Llm(Box::new(self.llm_condition(
                question,
                about.as_ref(),
                clauses,
                *span,
            ))),
        }
    }

    /// Reports a comparison whose two sides can never have one type, such
    /// as a number variable and the text "high". `operator` is the operator
    /// as written, which differs from `op` for an item of `in`.
    fn check_types(&mut self, left: &ast::Operand, right: &ast::Operand, op: CompareOp, operator: &str) {
        let (a, b) = (self.known(left), self.known(right));
        let describe = |known: &Known| match known {
            Known::Type(ty) => ty.as_str().to_string(),
            Known::Literal(text) => format!("the text \"{text}\""),
            Known::Duration => "a duration".to_string(),
            Known::Unknown => "a value".to_string(),
        };
        let converts = |text: &str, ty: VarType| crate::value::compares_with(text, ty);
        let text_op = matches!(
            op,
            CompareOp::Contains | CompareOp::StartsWith | CompareOp::EndsWith
        );
        let mismatch = match (&a, &b) {
            (Known::Duration, _) | (_, Known::Duration) => true,
            (Known::Type(VarType::Boolean), _) | (_, Known::Type(VarType::Boolean)) if op.is_ordering() => {
                true
            }
            (Known::Type(x), Known::Type(y)) => {
                let dates = |ty: &VarType| matches!(ty, VarType::Date | VarType::Datetime);
                x != y && !(dates(x) && dates(y)) && !text_op
            }
            (Known::Type(ty), Known::Literal(text)) | (Known::Literal(text), Known::Type(ty)) => {
                !text_op && !converts(text, *ty)
            }
            _ => false,
        };
        if mismatch {
            let span = Span::new(left.span().start, right.span().end);
            let help = if op.is_ordering() {
                "compare values of one type: numbers with numbers, dates with dates; booleans only with == or !="
            } else {
                "compare values of one type, such as a number variable with a number: `<<vars.score>> > 600`"
            };
            self.diagnostics.push(
                Diagnostic::error(
                    Code::TypeMismatch,
                    format!("`{}` compares {} with {}", operator, describe(&a), describe(&b)),
                )
                .with_label(span, "these values never have one type")
                .with_help(help),
            );
        }
    }

    fn llm_condition(
        &mut self,
        question: &ast::StringLit,
        about: Option<&ast::Operand>,
        clauses: &[LlmClause],
        span: Span,
    ) -> LlmCall {
        let mut prompt = self.compile(&question.template, |_| Encoding::Raw);
        if let Some(about) = about {
            prompt.pieces.push(Piece::Text(ABOUT_MARK.to_string()));
            match about {
                ast::Operand::Field(field) => {
                    self.check_expr(&field.expr, false);
                    prompt.pieces.push(Piece::Field {
                        expr: field.expr.clone(),
                        encoding: Encoding::Raw,
                        span: field.span,
                    });
                }
                ast::Operand::String(lit) => {
                    let compiled = self.compile(&lit.template, |_| Encoding::Raw);
                    prompt.pieces.extend(compiled.pieces);
                }
                ast::Operand::Number(text, _) | ast::Operand::Duration(text, _) => {
                    prompt.pieces.push(Piece::Text(text.clone()))
                }
                ast::Operand::Bool(value, _) => prompt.pieces.push(Piece::Text(value.to_string())),
            }
        }
        let mut provider = None;
        let mut model = None;
        let mut system = None;
        let known = self.provider_names.clone();
        for clause in clauses {
            let LlmClause::Text { keyword, value } = clause else {
                continue;
            };
            match keyword.text.as_str() {
                "provider" => match value.as_plain() {
                    Some(name) => {
                        self.check_provider_name(&name, value.span, &known);
                        provider = Some(name);
                    }
                    None => self.plain_llm_word(value.span, "provider"),
                },
                "model" => match value.as_plain() {
                    Some(name) => model = Some(name),
                    None => self.plain_llm_word(value.span, "model"),
                },
                "system" => system = Some(self.compile(&value.template, |_| Encoding::Raw)),
                _ => self.diagnostics.push(
                    Diagnostic::error(Code::InvalidLlm, "an LLM condition has its question already")
                        .with_label(clause.span(), "a second prompt")
                        .with_help("write the question after `llm`, and the text it is about after `about`"),
                ),
            }
        }
        let system = system.unwrap_or_else(|| Compiled {
            pieces: vec![Piece::Text(
                "Answer the question about the text with yes or no.".to_string(),
            )],
        });
        LlmCall {
            provider,
            model,
            fallback: Vec::new(),
            prompt,
            system: Some(system),
            output: LlmOutput::Choices(vec!["yes".to_string(), "no".to_string()]),
            target: Some(LlmTarget::Variable(CONDITION_ANSWER.to_string())),
            span,
        }
    }

    fn plain_llm_word(&mut self, span: Span, what: &str) {
        self.diagnostics.push(
            Diagnostic::error(
                Code::InvalidLlm,
                format!("the {what} of an LLM condition cannot hold merge fields"),
            )
            .with_label(span, "merge field")
            .with_help(format!("write the {what} as plain text")),
        );
    }

    /// Builds the code action of a step from its `code`, `inputs` and
    /// `outputs` lines.
    pub(crate) fn code_call(&mut self, step: &ast::Step) -> Option<CodeCall> {
        let mut code: Option<&ast::CodeAction> = None;
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        let mut parts_span = None;
        let mut others = None;
        for item in &step.items {
            match item {
                StepItem::Code(action) => {
                    if let Some(first) = code {
                        self.diagnostics.push(
                            Diagnostic::error(Code::InvalidCode, "a step holds at most one `code` action")
                                .with_label(action.span, "second script")
                                .with_related(first.span, "first script")
                                .with_help("put each script in a step of its own"),
                        );
                        continue;
                    }
                    code = Some(action);
                }
                StepItem::CodeInputs(list, span) => {
                    parts_span.get_or_insert(*span);
                    for input in list {
                        if let Some(first) = list
                            .iter()
                            .find(|other| other.name.text == input.name.text)
                            .filter(|first| first.span != input.span)
                        {
                            self.diagnostics.push(
                                Diagnostic::error(
                                    Code::InvalidCode,
                                    format!("input `{}` is given twice", input.name.text),
                                )
                                .with_label(input.name.span, "given again here")
                                .with_related(first.name.span, "first given here")
                                .with_help("keep one of the two lines, or rename one input"),
                            );
                            continue;
                        }
                        if is_duration(&input.value) {
                            let message = format!("input `{}` cannot be a duration", input.name.text);
                            self.duration_as_value(message, input.value.span());
                        }
                        inputs.push((input.name.text.clone(), self.value_expr(&input.value)));
                    }
                }
                StepItem::CodeOutputs(list, span) => {
                    parts_span.get_or_insert(*span);
                    for output in list {
                        if output.name.text == "log" {
                            self.diagnostics.push(
                                Diagnostic::error(Code::InvalidCode, "an output cannot be named `log`")
                                    .with_label(output.name.span, "`outputs.log` is the method that keeps log messages")
                                    .with_help("give the output another name, such as `log_text`, in the script and here"),
                            );
                            continue;
                        }
                        if let Some(target) = self.statement_target(&output.target, output.target_span) {
                            let ty = match &target {
                                SaveTarget::Variable(name) => self.var_types.get(name).copied(),
                                SaveTarget::Entity(_) => None,
                            };
                            outputs.push(CodeOutput {
                                name: output.name.text.clone(),
                                target,
                                written: output.target.clone(),
                                ty,
                            });
                        }
                    }
                }
                StepItem::Http(action) => {
                    others.get_or_insert(action.span);
                }
                StepItem::Llm(action) => {
                    others.get_or_insert(action.span);
                }
                StepItem::Extract(action) => {
                    others.get_or_insert(action.span);
                }
                StepItem::Transcribe(action) => {
                    others.get_or_insert(action.span);
                }
                StepItem::Option(_) => {}
            }
        }
        let Some(code) = code else {
            if let Some(span) = parts_span {
                self.diagnostics.push(
                    Diagnostic::error(Code::InvalidCode, "`inputs` and `outputs` belong to a code step")
                        .with_label(span, "no `code` action in this step")
                        .with_help("add a script such as `code python \"\"\" outputs.total = inputs.a + inputs.b \"\"\"`"),
                );
            }
            return None;
        };
        if let Some(other) = others {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidCode, "a code step runs only its script")
                    .with_label(other, "another action in the code step")
                    .with_related(code.span, "the script")
                    .with_help("move the other action to a step of its own"),
            );
        }
        if code.language.text != "python" {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidCode,
                    format!("unknown language `{}`", code.language.text),
                )
                .with_label(code.language.span, "not a supported language")
                .with_help("write `code python \"\"\" ... \"\"\"`; Python is the only language"),
            );
            return None;
        }
        if self.python {
            self.compile_python(code);
        }
        Some(CodeCall {
            script: code.script.clone(),
            inputs,
            outputs,
            memory: DEFAULT_CODE_MEMORY,
            interpreter: None,
            span: code.span,
        })
    }

    /// Reads the `memory` and `interpreter` options of a code step.
    pub(crate) fn code_options(&mut self, options: &[(usize, &ast::StepOption)], call: &mut CodeCall) {
        for (_, option) in options {
            let arg = option.args.first();
            match (option.name.text.as_str(), arg) {
                ("memory", Some(arg)) if option.args.len() == 1 => match parse_size(&arg.text) {
                    Some(bytes) => call.memory = bytes,
                    None => self.diagnostics.push(
                        Diagnostic::error(Code::InvalidOption, format!("invalid memory `{}`", arg.text))
                            .with_label(arg.span, "not a size")
                            .with_help("write a whole number with a unit MB or GB, such as `memory 512MB`, from 64MB to 64GB"),
                    ),
                },
                ("interpreter", Some(arg)) if option.args.len() == 1 => {
                    call.interpreter = Some(arg.text.clone());
                }
                ("memory" | "interpreter", _) => self.diagnostics.push(
                    Diagnostic::error(Code::InvalidOption, format!("`{}` takes one value", option.name.text))
                        .with_label(option.span, "wrong number of values")
                        .with_help("write `memory 512MB` or `interpreter \"/usr/bin/python3\"`"),
                ),
                // `save` lines report themselves; an unknown option too.
                ("timeout" | "on" | "save", _) => {}
                (name, _) if crate::check::options::OPTIONS.contains(&name) => self.diagnostics.push(
                    Diagnostic::warning(
                        Code::InvalidOption,
                        format!("`{name}` has no effect on a code step"),
                    )
                    .with_label(option.span, "ignored")
                    .with_help("a code step takes `timeout`, `memory`, `interpreter` and `on error`; remove the line"),
                ),
                _ => {}
            }
        }
    }

    /// Compiles a script with `python3 -m py_compile` and reports a script
    /// that does not compile as a warning at its line.
    fn compile_python(&mut self, code: &ast::CodeAction) {
        let Some(error) = py_compile(&code.script) else {
            return;
        };
        let span = error
            .line
            .checked_sub(1)
            .and_then(|index| code.line_starts.get(index))
            .map(|start| {
                let length = code.script.lines().nth(error.line - 1).map_or(0, str::len);
                Span::new(*start, *start + length)
            })
            .unwrap_or(code.script_span);
        self.diagnostics.push(
            Diagnostic::warning(
                Code::PythonSyntax,
                format!("the Python script does not compile: {}", error.message),
            )
            .with_label(span, format!("line {} of the script", error.line))
            .with_help("fix the script; a run that reaches this step fails with Python's error"),
        );
    }
}

fn condition_uses_llm(condition: &ast::Condition) -> bool {
    match condition {
        ast::Condition::Llm { .. } => true,
        ast::Condition::Or(parts, _) | ast::Condition::And(parts, _) => parts.iter().any(condition_uses_llm),
        ast::Condition::Not(inner, _) => condition_uses_llm(inner),
        _ => false,
    }
}

/// Parses a size such as `512MB` or `1GB` into bytes, from 16 MB to 64 GB.
fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(digits_end);
    let count: u64 = digits.parse().ok()?;
    let unit_bytes = match unit.to_ascii_uppercase().as_str() {
        "MB" => 1024 * 1024,
        "GB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    let bytes = count.checked_mul(unit_bytes)?;
    (64 * 1024 * 1024..=64 * 1024 * 1024 * 1024)
        .contains(&bytes)
        .then_some(bytes)
}

struct PythonError {
    line: usize,
    message: String,
}

/// Runs `python3 -m py_compile` on the script in a new temporary folder,
/// which also receives the compiled file, and returns the error it reports.
fn py_compile(script: &str) -> Option<PythonError> {
    let folder = std::env::temp_dir().join(format!("flowrun-check-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&folder).ok()?;
    let file = folder.join("script.py");
    let output = std::fs::write(&file, script).ok().and_then(|()| {
        std::process::Command::new("python3")
            .args(["-m", "py_compile", "script.py"])
            .current_dir(&folder)
            .env_clear()
            .env("PYTHONPYCACHEPREFIX", &folder)
            .output()
            .ok()
    });
    let _ = std::fs::remove_dir_all(&folder);
    let output = output?;
    if output.status.success() {
        return None;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("unknown error")
        .trim()
        .to_string();
    let line = stderr
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(1);
    Some(PythonError { line, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_literals() {
        assert_eq!(
            parse_duration_literal("30 days"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration_literal("1 hour"), Some(Duration::from_secs(3_600)));
        assert_eq!(
            parse_duration_literal("2weeks"),
            Some(Duration::from_secs(14 * 86_400))
        );
        assert_eq!(parse_duration_literal("5 fortnights"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MB"), Some(512 * 1024 * 1024));
        assert_eq!(parse_size("1gb"), Some(1024 * 1024 * 1024));
        assert_eq!(parse_size("1MB"), None);
        assert_eq!(parse_size("lots"), None);
    }
}
