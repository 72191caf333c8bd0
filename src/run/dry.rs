//! Values a dry run does not know.
//!
//! A dry run runs no script, sends no request and calls no model, so the
//! outputs of a code step, the values `save` lines copy and the answers of
//! `llm`, `extract` and `transcribe` actions are unknown. Each is written as a
//! placeholder such as `<outputs.risk>`, so that later requests render, and
//! its target is recorded as unknown. A `let`, `set` or condition that reads
//! an unknown value is not evaluated, because its result would come from
//! the placeholder: its own target becomes unknown too, and a condition
//! follows the `then` branch.

use serde_json::Value;

use crate::program::statement::{CodeCall, Condition, Operand, Statement, ValueExpr};
use crate::program::{Action, LlmOutput, LlmTarget, Piece, SaveTarget};
use crate::syntax::ast::{Expr, PathKey};

/// The targets whose values a dry run does not know.
#[derive(Debug, Default, Clone)]
pub struct Unknown {
    targets: Vec<SaveTarget>,
}

impl Unknown {
    /// Marks `target` as unknown.
    pub fn mark(&mut self, target: &SaveTarget) {
        if !self.targets.contains(target) {
            self.targets.push(target.clone());
        }
    }

    /// Marks `target` as known again, after the dry run computed its value.
    pub fn forget(&mut self, target: &SaveTarget) {
        self.targets.retain(|known| known != target);
    }

    /// Returns the first unknown value `statement` reads, written as a merge
    /// field path such as `entity.risk`.
    pub fn read_by(&self, statement: &Statement) -> Option<String> {
        if self.targets.is_empty() {
            return None;
        }
        let mut exprs = Vec::new();
        match statement {
            Statement::Let(statement) => statement
                .sources
                .iter()
                .for_each(|source| operand_exprs(source, &mut exprs)),
            Statement::Set(statement) => value_exprs(&statement.value, &mut exprs),
            Statement::Condition(condition) => condition_exprs(condition, &mut exprs),
            Statement::Clear { .. } | Statement::Stop { .. } => {}
        }
        exprs.into_iter().find_map(|expr| self.read_by_expr(expr))
    }

    fn read_by_expr(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::Path(path) => {
                let keys: Vec<PathKey> = path.segments.iter().map(|segment| segment.key.clone()).collect();
                let reads = |target: &SaveTarget| match (path.root.text.as_str(), target) {
                    // Reading a parent of the target, or a part of it, reads
                    // the unknown value.
                    ("entity", SaveTarget::Entity(written)) => {
                        keys.starts_with(written) || written.starts_with(&keys)
                    }
                    ("vars", SaveTarget::Variable(name)) => {
                        matches!(keys.first(), Some(PathKey::Field(first)) if first == name)
                    }
                    _ => false,
                };
                self.targets
                    .iter()
                    .any(reads)
                    .then(|| path_text(&path.root.text, &keys))
            }
            Expr::Call(call) => call.args.iter().find_map(|arg| self.read_by_expr(arg)),
            Expr::String(..) | Expr::Number(..) => None,
        }
    }
}

/// Returns the targets a statement writes.
pub fn written_by(statement: &Statement) -> Vec<SaveTarget> {
    match statement {
        Statement::Let(statement) => vec![SaveTarget::Variable(statement.name.clone())],
        Statement::Set(statement) => vec![statement.target.clone()],
        Statement::Clear { target } => vec![target.clone()],
        Statement::Condition(_) | Statement::Stop { .. } => Vec::new(),
    }
}

/// Returns the placeholder a dry run writes for a code step's output `name`.
pub fn code_placeholder(name: &str) -> Value {
    Value::String(format!("<outputs.{name}>"))
}

/// Writes a placeholder to every output target of a code step and records
/// the targets as unknown.
pub fn skip_code(call: &CodeCall, execution: &mut crate::run::Execution) {
    for output in &call.outputs {
        let placeholder = code_placeholder(&output.name);
        match &output.target {
            SaveTarget::Variable(name) => {
                execution.vars.insert(name.clone(), placeholder);
            }
            SaveTarget::Entity(path) => {
                // A target under a value that is not an object stays unset.
                let _ = crate::run::save::set_path(&mut execution.entity, path, placeholder);
            }
        }
        execution.unknown.mark(&output.target);
    }
}

/// Records the targets of a model action as unknown: the answer of an
/// `llm` action, or what `extract` and `transcribe` write. `-> entity`
/// writes one field per member of the answer.
pub fn skip_model_action(action: &Action, unknown: &mut Unknown) {
    let mut mark = |target: &Option<LlmTarget>, members: &[crate::llm::schema::Field]| match target {
        None => {}
        Some(LlmTarget::Variable(name)) => unknown.mark(&SaveTarget::Variable(name.clone())),
        Some(LlmTarget::Entity(path)) => unknown.mark(&SaveTarget::Entity(path.clone())),
        Some(LlmTarget::EntityMembers) => {
            for member in members {
                unknown.mark(&SaveTarget::Entity(vec![PathKey::Field(member.name.clone())]));
            }
        }
    };
    match action {
        Action::Llm(call) => match &call.output {
            LlmOutput::Schema(fields) => mark(&call.target, fields),
            LlmOutput::Text | LlmOutput::Choices(_) => mark(&call.target, &[]),
        },
        Action::Extract(call) => mark(&call.target, &call.fields),
        Action::Transcribe(call) => {
            mark(&call.transcript, &[]);
            mark(&call.segments, &[]);
            mark(&call.detected_language, &[]);
        }
        Action::Http(_) | Action::Code(_) | Action::Statement(_) => {}
    }
}

fn path_text(root: &str, keys: &[PathKey]) -> String {
    let mut text = root.to_string();
    for key in keys {
        match key {
            PathKey::Field(name) => {
                text.push('.');
                text.push_str(name);
            }
            PathKey::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

fn operand_exprs<'a>(operand: &'a Operand, out: &mut Vec<&'a Expr>) {
    match operand {
        Operand::Field { expr, .. } => out.push(expr),
        Operand::Text(template, _) => out.extend(template.pieces.iter().filter_map(|piece| match piece {
            Piece::Field { expr, .. } => Some(expr),
            Piece::Text(_) => None,
        })),
        Operand::Literal(..) | Operand::Duration(..) => {}
    }
}

fn value_exprs<'a>(value: &'a ValueExpr, out: &mut Vec<&'a Expr>) {
    match value {
        ValueExpr::Operand(operand) => operand_exprs(operand, out),
        ValueExpr::Binary { left, right, .. } => {
            value_exprs(left, out);
            value_exprs(right, out);
        }
    }
}

fn condition_exprs<'a>(condition: &'a Condition, out: &mut Vec<&'a Expr>) {
    match condition {
        Condition::Any(parts) | Condition::All(parts) => {
            parts.iter().for_each(|part| condition_exprs(part, out))
        }
        Condition::Not(inner) => condition_exprs(inner, out),
        Condition::Compare { left, right, .. } => {
            operand_exprs(left, out);
            operand_exprs(right, out);
        }
        Condition::In { left, items, .. } => {
            operand_exprs(left, out);
            items.iter().for_each(|item| operand_exprs(item, out));
        }
        Condition::Blank { operand, .. } => operand_exprs(operand, out),
        // A dry run calls no model and follows the `then` branch anyway.
        Condition::Llm(_) => {}
    }
}
