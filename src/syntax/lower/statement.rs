//! Lowers statements: typed `let` declarations, `if` blocks and their
//! conditions, `set`, `clear`, `stop`, and the parts of code steps.

use pest::iterators::Pair;

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::syntax::ast::{
    ArithOp, ClearStatement, CodeAction, CodeInput, CodeOutput, CompareOp, Condition, IfBlock, Item, Let,
    LlmClause, Operand, SetMode, SetStatement, Statement, StopStatement, ValueExpr,
};
use crate::syntax::lower::Lowerer;
use crate::syntax::template::{self, Mode};
use crate::syntax::Rule;

/// How many operations an arithmetic expression may chain, its
/// parenthesised parts included.
pub const MAX_ARITHMETIC_DEPTH: usize = 256;

impl Lowerer<'_> {
    fn line_of(&self, span: Span) -> usize {
        self.lines.line_col(span.start).0
    }

    pub(super) fn let_decl(&mut self, pair: Pair<'_, Rule>) -> Let {
        let span = self.span_to_last_child(&pair);
        let mut name = None;
        let mut ty = None;
        let mut required = false;
        let mut values = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::kw_let | Rule::kw_or => {}
                Rule::ident => name = Some(self.ident(child)),
                Rule::var_type => {
                    let inner = child
                        .into_inner()
                        .next()
                        .expect("Lowerer::let_decl: the grammar requires a type name");
                    ty = Some(self.ident(inner));
                }
                Rule::kw_required => required = true,
                _ => values.push(self.operand(child)),
            }
        }
        let mut values = values.into_iter();
        Let {
            name: name.expect("Lowerer::let_decl: the grammar requires a name"),
            ty,
            required,
            value: values.next(),
            fallbacks: values.collect(),
            line: self.line_of(span),
            span,
        }
    }

    /// Lowers one operand pair: a string, a triple-quoted string, a number,
    /// a boolean, a duration or a bare merge field.
    pub(super) fn operand(&mut self, pair: Pair<'_, Rule>) -> Operand {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::string => Operand::String(self.string(pair)),
            Rule::triple_string => Operand::String(self.triple_string(pair)),
            Rule::number => Operand::Number(pair.as_str().to_string(), span),
            Rule::boolean => Operand::Bool(pair.as_str() == "true", span),
            Rule::duration => Operand::Duration(pair.as_str().to_string(), span),
            Rule::field_value => {
                let template =
                    template::parse(pair.as_str(), span.start, Mode::Quoted, &mut self.diagnostics);
                match template.segments.into_iter().next() {
                    Some(crate::syntax::ast::Segment::Field(field)) => Operand::Field(field),
                    // The merge field did not parse; its diagnostic is
                    // already reported, and empty text stands in for it.
                    _ => Operand::String(crate::syntax::ast::StringLit {
                        template: Default::default(),
                        span,
                    }),
                }
            }
            rule => unreachable!("Lowerer::operand: unexpected rule {rule:?}"),
        }
    }

    /// Lowers a statement pair into an item.
    pub(super) fn statement(&mut self, pair: Pair<'_, Rule>) -> Item {
        match pair.as_rule() {
            Rule::let_decl => Item::Let(self.let_decl(pair)),
            Rule::if_block => Item::Statement(Statement::If(self.if_block(pair))),
            Rule::else_orphan => {
                let span = self.span(&pair);
                let keyword = pair
                    .into_inner()
                    .next()
                    .map_or(span, |keyword| self.span(&keyword));
                Item::Statement(Statement::ElseWithoutIf(keyword))
            }
            Rule::set_stmt => Item::Statement(Statement::Set(self.set_stmt(pair))),
            Rule::clear_stmt => {
                let span = self.span(&pair);
                let target = pair
                    .into_inner()
                    .find(|child| child.as_rule() == Rule::target_path)
                    .expect("Lowerer::statement: the grammar requires a target");
                Item::Statement(Statement::Clear(ClearStatement {
                    line: self.line_of(span),
                    target: target.as_str().to_string(),
                    target_span: self.span(&target),
                    span,
                }))
            }
            Rule::stop_stmt => {
                let span = self.span_to_last_child(&pair);
                let mut failed = false;
                let mut message = None;
                for child in pair.into_inner() {
                    match child.as_rule() {
                        Rule::kw_stop => {}
                        Rule::kw_failed => failed = true,
                        Rule::string => message = Some(self.string(child)),
                        rule => unreachable!("Lowerer::statement: unexpected stop rule {rule:?}"),
                    }
                }
                Item::Statement(Statement::Stop(StopStatement {
                    line: self.line_of(span),
                    failed,
                    message,
                    span,
                }))
            }
            rule => unreachable!("Lowerer::statement: unexpected rule {rule:?}"),
        }
    }

    fn if_block(&mut self, pair: Pair<'_, Rule>) -> IfBlock {
        let span = self.span(&pair);
        let mut condition = None;
        let mut then = None;
        let mut otherwise = None;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::kw_if | Rule::kw_else => {}
                Rule::condition => condition = Some(self.condition(child)),
                Rule::block if then.is_none() => then = Some(self.block(child)),
                Rule::block => otherwise = Some(self.block(child)),
                Rule::if_block => {
                    otherwise = Some(vec![Item::Statement(Statement::If(self.if_block(child)))]);
                }
                rule => unreachable!("Lowerer::if_block: unexpected rule {rule:?}"),
            }
        }
        let condition = condition.expect("Lowerer::if_block: the grammar requires a condition");
        IfBlock {
            line: self.line_of(span),
            head: Span::new(span.start, condition.span().end),
            condition,
            then: then.expect("Lowerer::if_block: the grammar requires a block"),
            otherwise,
            span,
        }
    }

    pub(super) fn block(&mut self, pair: Pair<'_, Rule>) -> Vec<Item> {
        let mut items = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::step => items.push(Item::Step(self.step(child))),
                Rule::http_action => {
                    let action = self.http_action(child);
                    items.push(Item::Step(self.bare_step(action)));
                }
                _ => items.push(self.statement(child)),
            }
        }
        items
    }

    fn condition(&mut self, pair: Pair<'_, Rule>) -> Condition {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::condition | Rule::cond_and => {
                let is_or = pair.as_rule() == Rule::condition;
                let mut parts: Vec<Condition> = pair
                    .into_inner()
                    .filter(|child| !matches!(child.as_rule(), Rule::kw_or | Rule::kw_and))
                    .map(|child| self.condition(child))
                    .collect();
                if parts.len() == 1 {
                    parts.pop().expect("Lowerer::condition: one part")
                } else if is_or {
                    Condition::Or(parts, span)
                } else {
                    Condition::And(parts, span)
                }
            }
            Rule::cond_not => {
                let mut inner: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
                if inner.first().is_some_and(|child| child.as_rule() == Rule::kw_not) {
                    let operand = inner.pop().expect("Lowerer::condition: `not` needs a condition");
                    Condition::Not(Box::new(self.condition(operand)), span)
                } else {
                    let only = inner.pop().expect("Lowerer::condition: an atom");
                    self.condition(only)
                }
            }
            Rule::comparison => self.comparison(pair),
            Rule::llm_condition => {
                let mut question = None;
                let mut about = None;
                let mut clauses: Vec<LlmClause> = Vec::new();
                for child in pair.into_inner() {
                    match child.as_rule() {
                        Rule::kw_llm | Rule::kw_about => {}
                        Rule::string if question.is_none() => question = Some(self.string(child)),
                        Rule::triple_string if question.is_none() => {
                            question = Some(self.triple_string(child))
                        }
                        Rule::llm_text => clauses.push(self.llm_clause(child)),
                        _ => about = Some(self.operand(child)),
                    }
                }
                let end = clauses
                    .last()
                    .map(|clause| clause.span().end)
                    .or(about.as_ref().map(|about| about.span().end))
                    .unwrap_or(span.end);
                Condition::Llm {
                    question: question.expect("Lowerer::condition: the grammar requires a question"),
                    about,
                    clauses,
                    span: Span::new(span.start, end),
                }
            }
            rule => unreachable!("Lowerer::condition: unexpected rule {rule:?}"),
        }
    }

    fn comparison(&mut self, pair: Pair<'_, Rule>) -> Condition {
        let span = self.span_to_last_child(&pair);
        let mut inner = pair.into_inner();
        let left = self.operand(inner.next().expect("Lowerer::comparison: a left operand"));
        let test = inner.next().expect("Lowerer::comparison: a test");
        let span = Span::new(span.start, span.end.max(self.span(&test).end));
        match test.as_rule() {
            Rule::blank_test => Condition::Blank {
                operand: left,
                negated: test.into_inner().any(|child| child.as_rule() == Rule::negation),
                span,
            },
            Rule::in_test => {
                let mut negated = false;
                let mut ignore_case = false;
                let mut items = Vec::new();
                for child in test.into_inner() {
                    match child.as_rule() {
                        Rule::negation => negated = true,
                        Rule::kw_in => {}
                        Rule::ignoring_case => ignore_case = true,
                        _ => items.push(self.operand(child)),
                    }
                }
                Condition::In {
                    left,
                    items,
                    negated,
                    ignore_case,
                    span,
                }
            }
            Rule::binary_test => {
                let mut op = CompareOp::Eq;
                let mut right = None;
                let mut ignore_case = false;
                for child in test.into_inner() {
                    match child.as_rule() {
                        Rule::compare_op => op = compare_op(child.as_str()),
                        Rule::ignoring_case => ignore_case = true,
                        _ => right = Some(self.operand(child)),
                    }
                }
                Condition::Compare {
                    left,
                    op,
                    right: right.expect("Lowerer::comparison: a right operand"),
                    ignore_case,
                    span,
                }
            }
            rule => unreachable!("Lowerer::comparison: unexpected rule {rule:?}"),
        }
    }

    fn set_stmt(&mut self, pair: Pair<'_, Rule>) -> SetStatement {
        let span = self.span_to_last_child(&pair);
        let mut target = None;
        let mut mode = SetMode::Overwrite;
        let mut value = None;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::kw_set => {}
                Rule::target_path => target = Some((child.as_str().to_string(), self.span(&child))),
                Rule::kw_add => mode = SetMode::Add,
                Rule::only_if_blank => mode = SetMode::OnlyIfBlank,
                Rule::value_expr => value = Some(self.value_expr(child)),
                rule => unreachable!("Lowerer::set_stmt: unexpected rule {rule:?}"),
            }
        }
        let (target, target_span) = target.expect("Lowerer::set_stmt: the grammar requires a target");
        SetStatement {
            line: self.line_of(span),
            target,
            target_span,
            mode,
            value: value.expect("Lowerer::set_stmt: the grammar requires a value"),
            span,
        }
    }

    /// Lowers `a + b * c`: `*` and `/` bind tighter than `+` and `-`, and
    /// operators of one level apply from left to right.
    pub(super) fn value_expr(&mut self, pair: Pair<'_, Rule>) -> ValueExpr {
        self.value_expr_with_depth(pair).0
    }

    /// Lowers an expression and returns it with a bound on the depth of its
    /// tree. An expression deeper than [`MAX_ARITHMETIC_DEPTH`] is reported
    /// and kept as its first operand, so that no later pass walks a tree
    /// deep enough to exhaust the stack.
    fn value_expr_with_depth(&mut self, pair: Pair<'_, Rule>) -> (ValueExpr, usize) {
        let span = self.span(&pair);
        let mut operands = Vec::new();
        let mut operators = Vec::new();
        let mut deepest = 1;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::arith_op => operators.push(match child.as_str() {
                    "+" => ArithOp::Add,
                    "-" => ArithOp::Sub,
                    "*" => ArithOp::Mul,
                    _ => ArithOp::Div,
                }),
                Rule::value_expr => {
                    let (expr, depth) = self.value_expr_with_depth(child);
                    deepest = deepest.max(depth);
                    operands.push(expr);
                }
                _ => operands.push(ValueExpr::Operand(self.operand(child))),
            }
        }
        let depth = deepest + operators.len();
        if depth > MAX_ARITHMETIC_DEPTH {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::SyntaxError,
                    format!("arithmetic nests more than {MAX_ARITHMETIC_DEPTH} operations deep"),
                )
                .with_label(span, format!("{} operators here", operators.len()))
                .with_help(format!(
                    "split the calculation over several `set` or `let` lines; an expression may \
                     chain at most {MAX_ARITHMETIC_DEPTH} operations"
                )),
            );
            return (operands.swap_remove(0), 1);
        }
        // First fold `*` and `/` into their left operand, then `+` and `-`.
        let mut terms = vec![operands.remove(0)];
        let mut additive = Vec::new();
        for (op, operand) in operators.into_iter().zip(operands) {
            if matches!(op, ArithOp::Mul | ArithOp::Div) {
                let left = terms.pop().expect("Lowerer::value_expr: a left term");
                terms.push(binary(op, left, operand));
            } else {
                additive.push(op);
                terms.push(operand);
            }
        }
        let mut terms = terms.into_iter();
        let mut result = terms.next().expect("Lowerer::value_expr: a first term");
        for (op, term) in additive.into_iter().zip(terms) {
            result = binary(op, result, term);
        }
        (result, depth)
    }

    pub(super) fn code_action(&mut self, pair: Pair<'_, Rule>) -> CodeAction {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        inner.next();
        let language = self.ident(inner.next().expect("Lowerer::code_action: a language"));
        let body = inner.next().expect("Lowerer::code_action: a script");
        let script_span = self.span(&body);
        let content = body
            .into_inner()
            .next()
            .expect("Lowerer::code_action: the script's content");
        let base = self.span(&content).start;
        let mut script = String::new();
        let mut line_starts = Vec::new();
        for (index, (offset, line)) in template::dedent(content.as_str()).into_iter().enumerate() {
            if index > 0 {
                script.push('\n');
            }
            script.push_str(line);
            line_starts.push(base + offset);
        }
        CodeAction {
            language,
            script,
            line_starts,
            script_span,
            span,
        }
    }

    pub(super) fn code_inputs(&mut self, pair: Pair<'_, Rule>) -> (Vec<CodeInput>, Span) {
        let span = self.span(&pair);
        let inputs = pair
            .into_inner()
            .filter(|child| child.as_rule() == Rule::code_input)
            .map(|child| {
                let span = self.span(&child);
                let mut inner = child.into_inner();
                let name = self.ident(inner.next().expect("Lowerer::code_inputs: a name"));
                let value = self.value_expr(inner.next().expect("Lowerer::code_inputs: a value"));
                CodeInput { name, value, span }
            })
            .collect();
        (inputs, span)
    }

    pub(super) fn code_outputs(&mut self, pair: Pair<'_, Rule>) -> (Vec<CodeOutput>, Span) {
        let span = self.span(&pair);
        let outputs = pair
            .into_inner()
            .filter(|child| child.as_rule() == Rule::code_output)
            .map(|child| {
                let span = self.span(&child);
                let mut inner = child.into_inner();
                let name = self.ident(inner.next().expect("Lowerer::code_outputs: a name"));
                let target = inner.next().expect("Lowerer::code_outputs: a target");
                CodeOutput {
                    name,
                    target: target.as_str().to_string(),
                    target_span: self.span(&target),
                    span,
                }
            })
            .collect();
        (outputs, span)
    }
}

fn binary(op: ArithOp, left: ValueExpr, right: ValueExpr) -> ValueExpr {
    let span = Span::new(left.span().start, right.span().end);
    ValueExpr::Binary {
        op,
        left: Box::new(left),
        right: Box::new(right),
        span,
    }
}

fn compare_op(text: &str) -> CompareOp {
    match text.split_whitespace().next().unwrap_or(text) {
        "==" => CompareOp::Eq,
        "!=" => CompareOp::Ne,
        "<" => CompareOp::Lt,
        "<=" => CompareOp::Le,
        ">" => CompareOp::Gt,
        ">=" => CompareOp::Ge,
        "contains" => CompareOp::Contains,
        "starts" => CompareOp::StartsWith,
        _ => CompareOp::EndsWith,
    }
}
