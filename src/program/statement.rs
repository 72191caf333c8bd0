//! Checked statements: variables, conditions, field updates, `stop` and
//! code steps. The checker turns each statement outside a step into a step
//! of its own, and each step inside an `if` block carries the branches it
//! needs.

use std::time::Duration;

use crate::diagnostic::Span;
use crate::program::{Compiled, LlmCall, SaveTarget};
use crate::syntax::ast::{ArithOp, CompareOp, Expr, SetMode};

/// The type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    Text,
    Number,
    Boolean,
    Date,
    Datetime,
    Uuid,
}

impl VarType {
    pub const ALL: [VarType; 6] = [
        VarType::Text,
        VarType::Number,
        VarType::Boolean,
        VarType::Date,
        VarType::Datetime,
        VarType::Uuid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VarType::Text => "text",
            VarType::Number => "number",
            VarType::Boolean => "boolean",
            VarType::Date => "date",
            VarType::Datetime => "datetime",
            VarType::Uuid => "uuid",
        }
    }

    pub fn parse(text: &str) -> Option<VarType> {
        VarType::ALL.into_iter().find(|ty| ty.as_str() == text)
    }
}

/// One value of a statement.
#[derive(Debug, Clone)]
pub enum Operand {
    /// A bare merge field: its value as it is. `ty` is the declared type of
    /// the variable it reads, if it reads one.
    Field {
        expr: Expr,
        ty: Option<VarType>,
        span: Span,
    },
    /// A string, rendered as text.
    Text(Compiled, Span),
    /// A number or boolean literal.
    Literal(serde_json::Value, Span),
    /// A duration literal such as `30 days`.
    Duration(Duration, Span),
}

impl Operand {
    pub fn span(&self) -> Span {
        match self {
            Operand::Field { span, .. }
            | Operand::Text(_, span)
            | Operand::Literal(_, span)
            | Operand::Duration(_, span) => *span,
        }
    }
}

/// An operand, or arithmetic on two values.
#[derive(Debug, Clone)]
pub enum ValueExpr {
    Operand(Operand),
    Binary {
        op: ArithOp,
        left: Box<ValueExpr>,
        right: Box<ValueExpr>,
        span: Span,
    },
}

impl ValueExpr {
    pub fn span(&self) -> Span {
        match self {
            ValueExpr::Operand(operand) => operand.span(),
            ValueExpr::Binary { span, .. } => *span,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Condition {
    Any(Vec<Condition>),
    All(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        left: Operand,
        op: CompareOp,
        right: Operand,
        ignore_case: bool,
        span: Span,
    },
    In {
        left: Operand,
        items: Vec<Operand>,
        negated: bool,
        ignore_case: bool,
        span: Span,
    },
    Blank {
        operand: Operand,
        negated: bool,
    },
    /// A yes-or-no question to a model.
    Llm(Box<LlmCall>),
}

impl Condition {
    /// The model calls of the condition, in order.
    pub fn llm_calls(&self) -> Vec<&LlmCall> {
        match self {
            Condition::Llm(call) => vec![call],
            Condition::Any(parts) | Condition::All(parts) => {
                parts.iter().flat_map(Condition::llm_calls).collect()
            }
            Condition::Not(inner) => inner.llm_calls(),
            _ => Vec::new(),
        }
    }
}

/// A statement that runs as a step of its own.
#[derive(Debug, Clone)]
pub enum Statement {
    Let(LetStatement),
    Set(SetStatement),
    Clear {
        target: SaveTarget,
    },
    /// Decides which branch of an `if` runs.
    Condition(Condition),
    Stop {
        failed: bool,
        message: Option<Compiled>,
    },
}

/// `let NAME: TYPE required = SOURCE or SOURCE ...`.
#[derive(Debug, Clone)]
pub struct LetStatement {
    pub name: String,
    /// The declared type, or the type of a number or boolean source; `None`
    /// keeps the value as its source gives it.
    pub ty: Option<VarType>,
    /// Whether the type was written, or comes from a literal.
    pub declared: bool,
    pub required: bool,
    pub sources: Vec<Operand>,
}

#[derive(Debug, Clone)]
pub struct SetStatement {
    pub target: SaveTarget,
    pub mode: SetMode,
    pub value: ValueExpr,
    /// The declared type of the variable written, if the target is one.
    pub ty: Option<VarType>,
}

/// Which branch of an `if` a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Branch {
    Then,
    Else,
}

impl Branch {
    pub fn as_str(self) -> &'static str {
        match self {
            Branch::Then => "then",
            Branch::Else => "else",
        }
    }

    pub fn parse(text: &str) -> Option<Branch> {
        match text {
            "then" => Some(Branch::Then),
            "else" => Some(Branch::Else),
            _ => None,
        }
    }
}

/// A step runs only when the condition step `condition` took `branch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub condition: String,
    pub branch: Branch,
}

/// A `code python` action.
#[derive(Debug, Clone)]
pub struct CodeCall {
    pub script: String,
    pub inputs: Vec<(String, ValueExpr)>,
    pub outputs: Vec<CodeOutput>,
    /// The address-space limit of the interpreter, in bytes.
    pub memory: u64,
    /// The interpreter to run, or `None` for `python3` on `PATH`.
    pub interpreter: Option<String>,
    pub span: Span,
}

/// One `NAME -> TARGET` line of a code step's `outputs`.
#[derive(Debug, Clone)]
pub struct CodeOutput {
    pub name: String,
    pub target: SaveTarget,
    /// The target as written, such as `vars.total`.
    pub written: String,
    /// The type of the variable written, which the value is converted to;
    /// `None` for an entity field.
    pub ty: Option<VarType>,
}

/// The memory limit of a code step when it sets none: 1 GiB.
pub const DEFAULT_CODE_MEMORY: u64 = 1024 * 1024 * 1024;
