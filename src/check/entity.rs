//! Checks against the entity schema: unknown `entity.` paths, values whose
//! type cannot fit where they are used, and writes of a value to a field of
//! another type. Without a schema nothing here runs.

use crate::check::names::{quote_list, suggest};
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::schema::{split_path, EntitySchema, Lookup, Type};
use crate::syntax::ast::{
    Condition, Expr, File, Item, LlmClause, Operand, PathKey, SetMode, SetStatement, Statement, StepItem,
    StepOption, Template, TranscribeClause, ValueExpr,
};

/// Where a template's value goes, which decides what types fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Url,
    Header,
    Other,
}

/// A path some line writes, so that reading it later is not unknown.
struct Write {
    keys: Vec<PathKey>,
}

pub fn check(file: &File, schema: &EntitySchema) -> Vec<Diagnostic> {
    let mut checker = EntityChecker {
        schema,
        writes: Vec::new(),
        diagnostics: Vec::new(),
    };
    checker.collect_writes(&file.items);
    checker.file(file);
    checker.diagnostics
}

struct EntityChecker<'a> {
    schema: &'a EntitySchema,
    writes: Vec<Write>,
    diagnostics: Vec<Diagnostic>,
}

impl EntityChecker<'_> {
    fn collect_writes(&mut self, items: &[Item]) {
        for item in items {
            match item {
                Item::Statement(Statement::If(block)) => {
                    self.collect_writes(&block.then);
                    if let Some(otherwise) = &block.otherwise {
                        self.collect_writes(otherwise);
                    }
                    continue;
                }
                Item::Statement(Statement::Set(set)) => {
                    self.push_write(&set.target);
                    continue;
                }
                Item::Statement(Statement::Clear(clear)) => {
                    self.push_write(&clear.target);
                    continue;
                }
                _ => {}
            }
            let Item::Step(step) = item else { continue };
            for step_item in &step.items {
                let target = match step_item {
                    StepItem::Option(option) => save_target(option).map(|(target, ..)| target),
                    StepItem::Llm(action) => action.clauses.iter().find_map(|clause| match clause {
                        LlmClause::Output { target, .. } => Some(target.clone()),
                        _ => None,
                    }),
                    StepItem::Extract(action) => {
                        self.collect_extract_writes(action);
                        None
                    }
                    StepItem::Transcribe(action) => {
                        for clause in &action.clauses {
                            if let TranscribeClause::Output { target, .. } = clause {
                                self.push_write(target);
                            }
                        }
                        None
                    }
                    StepItem::CodeOutputs(outputs, _) => {
                        for output in outputs {
                            self.push_write(&output.target);
                        }
                        None
                    }
                    _ => None,
                };
                if let Some((root, keys)) = target.map(|target| split_path(&target)) {
                    if root == "entity" {
                        self.writes.push(Write { keys });
                    }
                }
            }
        }
    }

    fn push_write(&mut self, target: &str) {
        let (root, keys) = split_path(target);
        if root == "entity" {
            self.writes.push(Write { keys });
        }
    }

    /// Records the fields an `extract` writes: each declared field when it
    /// writes into the whole entity, else its target.
    fn collect_extract_writes(&mut self, action: &crate::syntax::ast::ExtractAction) {
        for clause in &action.clauses {
            let LlmClause::Output { target, .. } = clause else {
                continue;
            };
            if target != "entity" {
                self.push_write(target);
                continue;
            }
            for other in &action.clauses {
                if let LlmClause::Schema { fields, .. } = other {
                    for field in fields {
                        self.writes.push(Write {
                            keys: vec![PathKey::Field(field.name.text.clone())],
                        });
                    }
                }
            }
        }
    }

    fn file(&mut self, file: &File) {
        self.items(&file.items);
    }

    fn items(&mut self, items: &[Item]) {
        for item in items {
            match item {
                Item::Statement(Statement::If(block)) => {
                    self.condition(&block.condition);
                    self.items(&block.then);
                    if let Some(otherwise) = &block.otherwise {
                        self.items(otherwise);
                    }
                }
                Item::Statement(Statement::Set(set)) => self.set(set),
                Item::Statement(Statement::Stop(stop)) => {
                    if let Some(message) = &stop.message {
                        self.template(&message.template, Place::Other);
                    }
                }
                Item::Let(declaration) => {
                    for value in declaration.value.iter().chain(&declaration.fallbacks) {
                        self.operand(value);
                    }
                }
                Item::Step(step) => {
                    for step_item in &step.items {
                        self.step_item(step_item);
                    }
                }
                _ => {}
            }
        }
    }

    fn step_item(&mut self, step_item: &StepItem) {
        match step_item {
            StepItem::Http(action) => {
                self.template(&action.url.template, Place::Url);
                for payload in &action.payloads {
                    self.template(&payload.body.template, Place::Other);
                }
                for header in &action.headers {
                    self.template(&header.value.template, Place::Header);
                }
            }
            StepItem::Llm(action) => {
                for clause in &action.clauses {
                    if let LlmClause::Text { value, .. } = clause {
                        self.template(&value.template, Place::Other);
                    }
                }
                let output = action.clauses.iter().find_map(|clause| match clause {
                    LlmClause::Output { target, span } => Some((target, *span)),
                    _ => None,
                });
                if let Some((target, span)) = output {
                    let written = if action
                        .clauses
                        .iter()
                        .any(|clause| matches!(clause, LlmClause::Schema { .. }))
                    {
                        "object"
                    } else {
                        "string"
                    };
                    self.write(target, span, written);
                }
            }
            StepItem::Extract(action) => {
                for clause in &action.clauses {
                    match clause {
                        LlmClause::Text { value, .. } => self.template(&value.template, Place::Other),
                        LlmClause::Output { target, span } if target != "entity" => {
                            self.write(target, *span, "object")
                        }
                        _ => {}
                    }
                }
            }
            StepItem::Transcribe(action) => {
                for clause in &action.clauses {
                    match clause {
                        TranscribeClause::Text { value, .. } => self.template(&value.template, Place::Other),
                        TranscribeClause::Output {
                            part: None,
                            target,
                            span,
                        } => self.write(target, *span, "string"),
                        TranscribeClause::Output { .. } => {}
                    }
                }
            }
            StepItem::CodeInputs(inputs, _) => {
                for input in inputs {
                    self.value_expr(&input.value);
                }
            }
            StepItem::Code(_) | StepItem::CodeOutputs(..) => {}
            StepItem::Option(option) => {
                if let Some((target, source, span)) = save_target(option) {
                    let written = match source.as_str() {
                        "response.status" => Some("integer"),
                        "response.body" => Some("string"),
                        source if source.starts_with("response.headers") => Some("string"),
                        _ => None,
                    };
                    if let Some(written) = written {
                        self.write(&target, span, written);
                    }
                }
                for arg in &option.args {
                    if let Some(template) = &arg.template {
                        self.template(template, Place::Other);
                    }
                }
            }
        }
    }

    fn condition(&mut self, condition: &Condition) {
        match condition {
            Condition::Or(parts, _) | Condition::And(parts, _) => {
                for part in parts {
                    self.condition(part);
                }
            }
            Condition::Not(inner, _) => self.condition(inner),
            Condition::Compare { left, right, .. } => {
                self.operand(left);
                self.operand(right);
            }
            Condition::In { left, items, .. } => {
                self.operand(left);
                for item in items {
                    self.operand(item);
                }
            }
            Condition::Blank { operand, .. } => self.operand(operand),
            Condition::Llm { question, about, .. } => {
                self.template(&question.template, Place::Other);
                if let Some(about) = about {
                    self.operand(about);
                }
            }
        }
    }

    fn operand(&mut self, operand: &Operand) {
        match operand {
            Operand::String(value) => self.template(&value.template, Place::Other),
            Operand::Field(field) => self.expr(&field.expr, Place::Other),
            Operand::Number(..) | Operand::Bool(..) | Operand::Duration(..) => {}
        }
    }

    fn value_expr(&mut self, value: &ValueExpr) {
        match value {
            ValueExpr::Operand(operand) => self.operand(operand),
            ValueExpr::Binary { left, right, .. } => {
                self.value_expr(left);
                self.value_expr(right);
            }
        }
    }

    /// Checks what a `set` reads, and that its value fits the target: a
    /// list for `add`, else a field of the value's type.
    fn set(&mut self, set: &SetStatement) {
        self.value_expr(&set.value);
        if set.mode == SetMode::Add {
            let (root, keys) = split_path(&set.target);
            if root != "entity" {
                return;
            }
            let Lookup::Found(shape) = self.schema.lookup(&keys) else {
                return;
            };
            if !matches!(shape.ty, Type::Array(_) | Type::Any | Type::Null) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::EntityWriteType,
                        format!(
                            "`set ... add` appends to a list, but `{}` is {} {} in the entity schema",
                            set.target,
                            article(shape.type_name()),
                            shape.type_name()
                        ),
                    )
                    .with_label(set.target_span, "not a list")
                    .with_help("write `set TARGET = VALUE` to replace the value, or add to a list field"),
                );
            }
            return;
        }
        if let Some(written) = self.value_type(&set.value) {
            self.write(&set.target, set.target_span, written);
        }
    }

    /// Returns the JSON type a `set` value writes, or `None` when the
    /// checker cannot tell.
    fn value_type(&self, value: &ValueExpr) -> Option<&'static str> {
        match value {
            ValueExpr::Binary { left, right, .. } => {
                // A date plus or minus a duration is a date, written as text.
                let dated = [left, right]
                    .iter()
                    .any(|side| matches!(side.as_ref(), ValueExpr::Operand(Operand::Duration(..))));
                Some(if dated { "string" } else { "number" })
            }
            ValueExpr::Operand(Operand::String(_)) => Some("string"),
            ValueExpr::Operand(Operand::Number(..)) => Some("number"),
            ValueExpr::Operand(Operand::Bool(..)) => Some("boolean"),
            ValueExpr::Operand(Operand::Duration(..)) => None,
            ValueExpr::Operand(Operand::Field(field)) => match &field.expr {
                Expr::Path(path) if path.root.text == "entity" => {
                    let keys: Vec<PathKey> =
                        path.segments.iter().map(|segment| segment.key.clone()).collect();
                    match self.schema.lookup(&keys) {
                        Lookup::Found(shape) => match shape.ty {
                            Type::Any | Type::Null => None,
                            _ => Some(shape.type_name()),
                        },
                        _ => None,
                    }
                }
                _ => None,
            },
        }
    }

    fn template(&mut self, template: &Template, place: Place) {
        for field in template.fields() {
            self.expr(&field.expr, place);
        }
    }

    fn expr(&mut self, expr: &Expr, place: Place) {
        match expr {
            Expr::Path(path) if path.root.text == "entity" => {
                let keys: Vec<PathKey> = path.segments.iter().map(|segment| segment.key.clone()).collect();
                match self.schema.lookup(&keys) {
                    Lookup::Found(shape) => {
                        let misfit = match (&shape.ty, place) {
                            (Type::Object(_), Place::Url | Place::Header) => Some("an object"),
                            (Type::Array(_), Place::Url | Place::Header) => Some("an array"),
                            _ => None,
                        };
                        if let Some(kind) = misfit {
                            let where_ = if place == Place::Url {
                                "a URL"
                            } else {
                                "a header value"
                            };
                            self.diagnostics.push(
                                Diagnostic::error(
                                    Code::EntityTypeMismatch,
                                    format!("`{}` is {kind}, which cannot go into {where_}", path.display()),
                                )
                                .with_label(path.span, format!("{kind} in {where_}"))
                                .with_help(format!(
                                    "use one of its {}, such as `{}{}`, or `json {}` to send it as JSON text",
                                    if kind == "an array" { "elements" } else { "fields" },
                                    path.display(),
                                    if kind == "an array" { "[0]" } else { ".FIELD" },
                                    path.display()
                                )),
                            );
                        }
                    }
                    Lookup::Unknown { index, parent } => {
                        if !self.is_written(&keys[..=index]) {
                            self.unknown(path, index, parent.fields());
                        }
                    }
                    Lookup::Opaque => {}
                }
            }
            Expr::Call(call) => {
                for arg in &call.args {
                    self.expr(arg, Place::Other);
                }
            }
            _ => {}
        }
    }

    fn is_written(&self, keys: &[PathKey]) -> bool {
        self.writes.iter().any(|write| write.keys.starts_with(keys))
    }

    fn unknown(
        &mut self,
        path: &crate::syntax::ast::Path,
        index: usize,
        fields: &[(String, crate::schema::Shape)],
    ) {
        let segment = &path.segments[index];
        let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        let key = match &segment.key {
            PathKey::Field(name) => name.clone(),
            PathKey::Index(index) => format!("[{index}]"),
        };
        let mut prefix = String::from("entity");
        for segment in &path.segments[..index] {
            crate::syntax::ast::push_path_key(&mut prefix, &segment.key);
        }
        let help = match suggest(&key, names.iter().copied()) {
            Some(name) => format!("did you mean `{name}`?"),
            None if names.is_empty() => format!("`{prefix}` has no fields in the entity schema"),
            None => format!("fields of `{prefix}`: {}.", quote_list(&names)),
        };
        self.diagnostics.push(
            Diagnostic::warning(
                Code::UnknownEntityField,
                format!("`{key}` is not a field of `{prefix}` in the entity schema"),
            )
            .with_label(segment.span, "unknown field")
            .with_help(help),
        );
    }

    /// Checks that a value of type `written` fits the field at `target`.
    fn write(&mut self, target: &str, span: Span, written: &str) {
        let (root, keys) = split_path(target);
        if root != "entity" {
            return;
        }
        let Lookup::Found(shape) = self.schema.lookup(&keys) else {
            return;
        };
        // A number may be whole, so it fits an integer field too.
        let fits = matches!(
            (&shape.ty, written),
            (Type::Any | Type::Null, _)
                | (Type::String, "string")
                | (Type::Object(_), "object")
                | (Type::Array(_), "array")
                | (Type::Boolean, "boolean")
                | (Type::Number | Type::Integer, "integer" | "number")
        );
        if !fits {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::EntityWriteType,
                    format!(
                        "this writes {} {written} to `{target}`, which is {} {} in the entity schema",
                        article(written),
                        article(shape.type_name()),
                        shape.type_name()
                    ),
                )
                .with_label(span, format!("writes {} {written}", article(written)))
                .with_help(
                    "write to a field of the same type, or change the field's type in the entity schema",
                ),
            );
        }
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Reads the target, source and target span of a `save SOURCE -> TARGET`
/// line.
fn save_target(option: &StepOption) -> Option<(String, String, Span)> {
    if option.name.text != "save" || option.args.len() != 3 || option.args[1].text != "->" {
        return None;
    }
    Some((
        option.args[2].text.clone(),
        option.args[0].text.clone(),
        option.args[2].span,
    ))
}
