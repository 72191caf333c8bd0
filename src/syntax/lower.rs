//! Lowers pest pairs into the syntax tree: one function per grammar rule,
//! named after it. The grammar guarantees the shape of each pair, so a pair
//! of an unexpected rule is a bug in this file and panics with the function
//! that met it.

use pest::iterators::Pair;

use crate::diagnostic::{Code, Diagnostic, LineIndex, Span};
mod statement;

use crate::syntax::ast::{
    ExtractAction, File, Header, HeaderPair, HttpAction, Ident, Item, LlmAction, LlmClause, OptionArg,
    Payload, PayloadBody, PayloadKind, ProviderBlock, ProviderEntry, ProviderValue, SchemaField, SchemaType,
    Step, StepItem, StepOption, StringLit, TranscribeAction, TranscribeClause,
};
use crate::syntax::template::{self, Mode};
use crate::syntax::Rule;

/// A clause written on its own line.
enum Clause {
    Llm(LlmClause),
    Transcribe(TranscribeClause),
}

impl Clause {
    fn span(&self) -> Span {
        match self {
            Clause::Llm(clause) => clause.span(),
            Clause::Transcribe(clause) => clause.span(),
        }
    }
}

pub(crate) struct Lowerer<'a> {
    pub diagnostics: Vec<Diagnostic>,
    /// Names given to bare actions so far, to keep them unique.
    pub bare_names: std::collections::HashSet<String>,
    pub lines: &'a LineIndex<'a>,
    /// Added to every span: the offset of the parsed chunk in the file.
    pub base: usize,
}

impl Lowerer<'_> {
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let span = pair.as_span();
        Span::new(self.base + span.start(), self.base + span.end())
    }

    /// Lowers the children of a `file` or `chunk` pair into `file`.
    pub fn file(&mut self, pair: Pair<'_, Rule>, file: &mut File) {
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::header => {
                    let header = self.header(child);
                    if file.header.is_some() || !file.items.is_empty() {
                        self.diagnostics.push(
                            Diagnostic::error(
                                Code::SyntaxError,
                                "the `workflow` line must come first, and only once",
                            )
                            .with_label(header.span, "misplaced `workflow` line")
                            .with_help("keep one `workflow \"NAME\"` line, at the top of the file"),
                        );
                    } else {
                        file.header = Some(header);
                    }
                }
                Rule::let_decl
                | Rule::if_block
                | Rule::else_orphan
                | Rule::set_stmt
                | Rule::clear_stmt
                | Rule::stop_stmt => file.items.push(self.statement(child)),
                Rule::step => file.items.push(Item::Step(self.step(child))),
                Rule::setting => file.items.push(Item::Setting(self.option(child))),
                Rule::provider => file.items.push(Item::Provider(self.provider(child))),
                Rule::http_action => {
                    let action = self.http_action(child);
                    file.items.push(Item::Step(self.bare_step(action)));
                }
                Rule::EOI => {}
                rule => unreachable!("Lowerer::file: unexpected rule {rule:?}"),
            }
        }
    }

    fn header(&mut self, pair: Pair<'_, Rule>) -> Header {
        let span = self.span(&pair);
        let name = pair
            .into_inner()
            .find(|child| child.as_rule() == Rule::string)
            .map(|child| self.string(child))
            .expect("Lowerer::header: the grammar requires a name");
        Header { name, span }
    }

    fn step(&mut self, pair: Pair<'_, Rule>) -> Step {
        let span = self.span(&pair);
        let mut name = None;
        let mut items = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::kw_step => {}
                Rule::string if name.is_none() => name = Some(self.string(child)),
                Rule::http_action => items.push(StepItem::Http(self.http_action(child))),
                Rule::llm_action => items.push(StepItem::Llm(self.llm_action(child))),
                Rule::extract_action => items.push(StepItem::Extract(self.extract_action(child))),
                Rule::transcribe_action => items.push(StepItem::Transcribe(self.transcribe_action(child))),
                Rule::llm_text | Rule::llm_list | Rule::llm_schema | Rule::llm_output => {
                    let clause = self.llm_clause(child);
                    self.attach_clause(&mut items, Clause::Llm(clause));
                }
                Rule::transcribe_text | Rule::transcribe_part => {
                    let clause = self.transcribe_clause(child);
                    self.attach_clause(&mut items, Clause::Transcribe(clause));
                }
                Rule::code_action => items.push(StepItem::Code(self.code_action(child))),
                Rule::code_inputs => {
                    let (inputs, span) = self.code_inputs(child);
                    items.push(StepItem::CodeInputs(inputs, span));
                }
                Rule::code_outputs => {
                    let (outputs, span) = self.code_outputs(child);
                    items.push(StepItem::CodeOutputs(outputs, span));
                }
                Rule::option => items.push(StepItem::Option(self.option(child))),
                rule => unreachable!("Lowerer::step: unexpected rule {rule:?}"),
            }
        }
        let name = name.expect("Lowerer::step: the grammar requires a name");
        let plain = name.as_plain();
        Step {
            name_is_plain: plain.is_some(),
            // A name with merge fields is reported by the checker; the
            // written text stands in for it here.
            name: plain.unwrap_or_else(|| self.lines_text(name.span)),
            name_span: name.span,
            bare: false,
            items,
            span,
        }
    }

    fn lines_text(&self, span: Span) -> String {
        format!("step at line {}", self.lines.line_col(span.start).0)
    }

    /// Wraps an action written outside a step block in a step named after
    /// its line.
    fn bare_step(&mut self, action: HttpAction) -> Step {
        let (line, column) = self.lines.line_col(action.span.start);
        let mut name = format!("{} (line {line})", action.method.text);
        if !self.bare_names.insert(name.clone()) {
            name = format!("{} (line {line}, column {column})", action.method.text);
            self.bare_names.insert(name.clone());
        }
        Step {
            name,
            name_span: action.method.span,
            bare: true,
            name_is_plain: true,
            span: action.span,
            items: vec![StepItem::Http(action)],
        }
    }

    /// The span of a pair up to the end of its last child. pest counts the
    /// white space and comments it skipped while looking for an optional
    /// part as part of the pair, so a span that ends in an optional part
    /// would reach the next line of the file.
    fn span_to_last_child(&self, pair: &Pair<'_, Rule>) -> Span {
        let span = self.span(pair);
        let end = pair
            .clone()
            .into_inner()
            .last()
            .map_or(span.end, |child| self.span(&child).end);
        Span::new(span.start, end)
    }

    fn http_action(&mut self, pair: Pair<'_, Rule>) -> HttpAction {
        let span = self.span_to_last_child(&pair);
        let mut method = None;
        let mut url = None;
        let mut payloads = Vec::new();
        let mut headers = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::kw_http => {}
                Rule::method => method = Some(self.ident(child)),
                Rule::string => url = Some(self.string(child)),
                Rule::payload => payloads.push(self.payload(child)),
                Rule::headers => headers.extend(self.headers(child)),
                rule => unreachable!("Lowerer::http_action: unexpected rule {rule:?}"),
            }
        }
        HttpAction {
            method: method.expect("Lowerer::http_action: the grammar requires a method"),
            url: url.expect("Lowerer::http_action: the grammar requires a URL"),
            payloads,
            headers,
            span,
        }
    }

    fn payload(&mut self, pair: Pair<'_, Rule>) -> Payload {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let kind_pair = inner
            .next()
            .and_then(|kind| kind.into_inner().next())
            .expect("Lowerer::payload: the grammar requires a kind");
        let kind = match kind_pair.as_rule() {
            Rule::ident | Rule::known_kind => PayloadKind::Word(self.ident(kind_pair)),
            Rule::string => PayloadKind::MediaType(self.string(kind_pair)),
            rule => unreachable!("Lowerer::payload: unexpected kind rule {rule:?}"),
        };
        let body_pair = inner
            .next()
            .expect("Lowerer::payload: the grammar requires a body");
        let body = self.payload_body(body_pair);
        Payload { kind, body, span }
    }

    fn payload_body(&mut self, pair: Pair<'_, Rule>) -> PayloadBody {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::json_object | Rule::json_array => {
                let indent = self.indent_of_line(span.start);
                let template = template::parse(
                    pair.as_str(),
                    span.start,
                    Mode::Block(indent),
                    &mut self.diagnostics,
                );
                PayloadBody {
                    is_block: true,
                    template,
                    span,
                }
            }
            Rule::string => PayloadBody {
                is_block: false,
                template: self.string(pair).template,
                span,
            },
            Rule::triple_string => PayloadBody {
                is_block: false,
                template: self.triple_string(pair).template,
                span,
            },
            rule => unreachable!("Lowerer::payload_body: unexpected rule {rule:?}"),
        }
    }

    /// The leading white space of the source line holding `offset`.
    fn indent_of_line(&self, offset: usize) -> usize {
        let source = self.lines.source();
        let line_start = source[..offset].rfind('\n').map_or(0, |index| index + 1);
        let line = &source[line_start..offset];
        line.len() - line.trim_start_matches([' ', '\t']).len()
    }

    fn headers(&mut self, pair: Pair<'_, Rule>) -> Vec<HeaderPair> {
        pair.into_inner()
            .filter(|child| child.as_rule() == Rule::header_pair)
            .map(|child| self.header_pair(child))
            .collect()
    }

    fn header_pair(&mut self, pair: Pair<'_, Rule>) -> HeaderPair {
        let span = self.span(&pair);
        let mut strings = pair.into_inner().map(|child| self.string(child));
        let name = strings
            .next()
            .expect("Lowerer::header_pair: the grammar requires a name");
        let value = strings
            .next()
            .expect("Lowerer::header_pair: the grammar requires a value");
        HeaderPair { name, value, span }
    }

    fn option(&mut self, pair: Pair<'_, Rule>) -> StepOption {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name = self.ident(
            inner
                .next()
                .expect("Lowerer::option: the grammar requires a name"),
        );
        let args = inner
            .map(|child| match child.as_rule() {
                Rule::string => {
                    let written = child.as_str();
                    let lit = self.string(child);
                    OptionArg {
                        text: lit
                            .as_plain()
                            .unwrap_or_else(|| written[1..written.len() - 1].to_string()),
                        template: Some(lit.template),
                        quoted: true,
                        span: lit.span,
                    }
                }
                Rule::bare_arg => OptionArg {
                    text: child.as_str().to_string(),
                    template: None,
                    quoted: false,
                    span: self.span(&child),
                },
                rule => unreachable!("Lowerer::option: unexpected rule {rule:?}"),
            })
            .collect();
        StepOption { name, args, span }
    }

    fn provider(&mut self, pair: Pair<'_, Rule>) -> ProviderBlock {
        let span = self.span(&pair);
        let mut name = None;
        let mut entries = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::kw_provider => {}
                Rule::ident => name = Some(self.ident(child)),
                Rule::provider_entry => {
                    let entry_span = self.span(&child);
                    let mut inner = child.into_inner();
                    let key = self.ident(
                        inner
                            .next()
                            .expect("Lowerer::provider: the grammar requires a key"),
                    );
                    let value_pair = inner
                        .next()
                        .expect("Lowerer::provider: the grammar requires a value");
                    let value = match value_pair.as_rule() {
                        Rule::string => ProviderValue::String(self.string(value_pair)),
                        Rule::ident => ProviderValue::Word(self.ident(value_pair)),
                        rule => unreachable!("Lowerer::provider: unexpected value rule {rule:?}"),
                    };
                    entries.push(ProviderEntry {
                        key,
                        value,
                        span: entry_span,
                    });
                }
                rule => unreachable!("Lowerer::provider: unexpected rule {rule:?}"),
            }
        }
        ProviderBlock {
            name: name.expect("Lowerer::provider: the grammar requires a name"),
            entries,
            span,
        }
    }

    fn llm_action(&mut self, pair: Pair<'_, Rule>) -> LlmAction {
        let span = self.span_to_last_child(&pair);
        let clauses = pair
            .into_inner()
            .filter(|child| child.as_rule() != Rule::kw_llm)
            .map(|child| self.llm_clause(child))
            .collect();
        LlmAction { clauses, span }
    }

    fn llm_clause(&mut self, pair: Pair<'_, Rule>) -> LlmClause {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::llm_text => {
                let mut inner = pair.into_inner();
                let keyword = self.ident(
                    inner
                        .next()
                        .expect("Lowerer::llm_clause: the grammar requires a keyword"),
                );
                let value_pair = inner
                    .next()
                    .expect("Lowerer::llm_clause: the grammar requires a string");
                let value = match value_pair.as_rule() {
                    Rule::triple_string => self.triple_string(value_pair),
                    _ => self.string(value_pair),
                };
                LlmClause::Text { keyword, value }
            }
            Rule::llm_list => {
                let mut inner = pair.into_inner();
                let keyword = self.ident(
                    inner
                        .next()
                        .expect("Lowerer::llm_clause: the grammar requires a keyword"),
                );
                let items = inner.map(|item| self.string(item)).collect();
                LlmClause::List { keyword, items, span }
            }
            Rule::llm_schema => {
                let object = pair
                    .into_inner()
                    .find(|child| child.as_rule() == Rule::schema_object)
                    .expect("Lowerer::llm_clause: the grammar requires fields");
                LlmClause::Schema {
                    fields: self.schema_object(object),
                    span,
                }
            }
            Rule::llm_output => {
                let target = pair
                    .into_inner()
                    .next()
                    .expect("Lowerer::llm_clause: the grammar requires a target");
                LlmClause::Output {
                    target: target.as_str().to_string(),
                    span: self.span(&target),
                }
            }
            rule => unreachable!("Lowerer::llm_clause: unexpected rule {rule:?}"),
        }
    }

    fn extract_action(&mut self, pair: Pair<'_, Rule>) -> ExtractAction {
        let span = self.span_to_last_child(&pair);
        let mut source = None;
        let mut clauses = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::kw_extract => {}
                Rule::target_path if source.is_none() => {
                    source = Some((child.as_str().to_string(), self.span(&child)));
                }
                Rule::extract_fields => {
                    let fields_span = self.span(&child);
                    let object = child
                        .into_inner()
                        .find(|part| part.as_rule() == Rule::schema_object)
                        .expect("Lowerer::extract_action: the grammar requires fields");
                    clauses.push(LlmClause::Schema {
                        fields: self.schema_object(object),
                        span: fields_span,
                    });
                }
                _ => clauses.push(self.llm_clause(child)),
            }
        }
        let (source, source_span) = source.expect("Lowerer::extract_action: the grammar requires a source");
        ExtractAction {
            source,
            source_span,
            clauses,
            span,
        }
    }

    fn transcribe_action(&mut self, pair: Pair<'_, Rule>) -> TranscribeAction {
        let span = self.span_to_last_child(&pair);
        let mut source = None;
        let mut clauses = Vec::new();
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::kw_transcribe => {}
                Rule::target_path if source.is_none() => {
                    source = Some((child.as_str().to_string(), self.span(&child)));
                }
                _ => clauses.push(self.transcribe_clause(child)),
            }
        }
        let (source, source_span) =
            source.expect("Lowerer::transcribe_action: the grammar requires a source");
        TranscribeAction {
            source,
            source_span,
            clauses,
            span,
        }
    }

    fn transcribe_clause(&mut self, pair: Pair<'_, Rule>) -> TranscribeClause {
        match pair.as_rule() {
            Rule::transcribe_text => {
                let mut inner = pair.into_inner();
                let keyword = self.ident(
                    inner
                        .next()
                        .expect("Lowerer::transcribe_clause: the grammar requires a keyword"),
                );
                let value = self.string(
                    inner
                        .next()
                        .expect("Lowerer::transcribe_clause: the grammar requires a string"),
                );
                TranscribeClause::Text { keyword, value }
            }
            Rule::transcribe_part | Rule::llm_output => {
                let mut part = None;
                let mut target = None;
                for piece in pair.into_inner() {
                    match piece.as_rule() {
                        Rule::transcribe_part_name => part = Some(self.ident(piece)),
                        _ => target = Some((piece.as_str().to_string(), self.span(&piece))),
                    }
                }
                let (target, span) =
                    target.expect("Lowerer::transcribe_clause: the grammar requires a target");
                TranscribeClause::Output { part, target, span }
            }
            rule => unreachable!("Lowerer::transcribe_clause: unexpected rule {rule:?}"),
        }
    }

    /// Adds a clause written on its own line, after option lines, to the
    /// action above it.
    fn attach_clause(&mut self, items: &mut [StepItem], clause: Clause) {
        let span = clause.span();
        let above = items
            .iter_mut()
            .rev()
            .find(|item| !matches!(item, StepItem::Option(_)));
        let widen = |action_span: &mut Span| {
            *action_span = Span::new(action_span.start, action_span.end.max(span.end))
        };
        match (above, clause) {
            (Some(StepItem::Llm(action)), Clause::Llm(clause)) => {
                widen(&mut action.span);
                action.clauses.push(clause);
            }
            (Some(StepItem::Extract(action)), Clause::Llm(clause @ (LlmClause::Text { .. } | LlmClause::Output { .. }))) => {
                widen(&mut action.span);
                action.clauses.push(clause);
            }
            (Some(StepItem::Transcribe(action)), Clause::Transcribe(clause)) => {
                widen(&mut action.span);
                action.clauses.push(clause);
            }
            (Some(StepItem::Transcribe(action)), Clause::Llm(LlmClause::Output { target, span })) => {
                widen(&mut action.span);
                action.clauses.push(TranscribeClause::Output { part: None, target, span });
            }
            (Some(StepItem::Transcribe(action)), Clause::Llm(LlmClause::Text { keyword, value }))
                if keyword.text != "system" =>
            {
                widen(&mut action.span);
                action.clauses.push(TranscribeClause::Text { keyword, value });
            }
            (Some(StepItem::Transcribe(_) | StepItem::Extract(_)), _) => self.diagnostics.push(
                Diagnostic::error(Code::SyntaxError, "this line does not belong to the action above it")
                    .with_label(span, "not a clause of that action")
                    .with_help("see docs/extraction.md and docs/transcription.md for the clauses of `extract` and `transcribe`"),
            ),
            _ => self.diagnostics.push(
                Diagnostic::error(Code::SyntaxError, "this line belongs to an `llm` action")
                    .with_label(span, "no `llm` action above it")
                    .with_help("start the action with `llm prompt \"...\"`, and put this line after it"),
            ),
        }
    }

    fn schema_object(&mut self, pair: Pair<'_, Rule>) -> Vec<SchemaField> {
        pair.into_inner().map(|field| self.schema_field(field)).collect()
    }

    fn schema_field(&mut self, pair: Pair<'_, Rule>) -> SchemaField {
        let span = self.span(&pair);
        let mut name = None;
        let mut optional = false;
        let mut ty = None;
        let mut description = None;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::ident if name.is_none() => name = Some(self.ident(child)),
                Rule::optional_mark => optional = true,
                Rule::string => description = Some(self.string(child)),
                _ => ty = Some(self.schema_type(child)),
            }
        }
        SchemaField {
            name: name.expect("Lowerer::schema_field: the grammar requires a name"),
            optional,
            ty: ty.expect("Lowerer::schema_field: the grammar requires a type"),
            description,
            span,
        }
    }

    fn schema_type(&mut self, pair: Pair<'_, Rule>) -> SchemaType {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::ident => SchemaType::Named(self.ident(pair)),
            Rule::schema_enum => {
                SchemaType::Enum(pair.into_inner().map(|item| self.string(item)).collect(), span)
            }
            Rule::schema_list => {
                let inner = pair
                    .into_inner()
                    .next()
                    .expect("Lowerer::schema_type: the grammar requires an item type");
                SchemaType::List(Box::new(self.schema_type(inner)), span)
            }
            Rule::schema_object => SchemaType::Object(self.schema_object(pair), span),
            rule => unreachable!("Lowerer::schema_type: unexpected rule {rule:?}"),
        }
    }

    fn ident(&mut self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            text: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn string(&mut self, pair: Pair<'_, Rule>) -> StringLit {
        let span = self.span(&pair);
        let inner = pair
            .into_inner()
            .next()
            .expect("Lowerer::string: the grammar requires content");
        let start = self.span(&inner).start;
        let template = template::parse(inner.as_str(), start, Mode::Quoted, &mut self.diagnostics);
        StringLit { template, span }
    }

    fn triple_string(&mut self, pair: Pair<'_, Rule>) -> StringLit {
        let span = self.span(&pair);
        let inner = pair
            .into_inner()
            .next()
            .expect("Lowerer::triple_string: the grammar requires content");
        let start = self.span(&inner).start;
        let template = template::parse(inner.as_str(), start, Mode::Triple, &mut self.diagnostics);
        StringLit { template, span }
    }
}
