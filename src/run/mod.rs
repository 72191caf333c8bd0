//! The interpreter: runs a checked program against one entity.
//!
//! [`prepare`] validates the run's inputs and resolves variables, and
//! [`prepare_resume`] restores a stored execution; a problem there means the
//! run cannot start. [`execute`] walks the steps in order and records each
//! failure in the [`report::Report`], where the step's failure behaviour
//! decides whether the execution goes on.

mod code;
pub mod dry;
mod errors;
mod execute;
mod extract;
pub mod http;
pub mod llm;
mod media;
pub mod notify;
pub mod politeness;
pub mod redact;
pub mod report;
mod request;
pub mod retry;
mod save;
mod statement;
mod transcribe;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::check::names::did_you_mean;
use crate::diagnostic::{Code, Diagnostic, LineIndex, Span};
use crate::program::statement::VarType;
use crate::program::{Program, Variable, VariableValue};
use crate::render::{self, Scope};
use crate::store::ExecutionRecord;
use crate::value::convert_text;
pub use errors::{body_excerpt, render_diagnostic, split_response_body};
pub use execute::execute;
use redact::Redactor;
pub use request::idempotency_key;
use retry::Sleeper;

/// The key of the stored variables that holds the branch each condition
/// step took, so that a resume follows the same branches without asking a
/// model again.
pub const BRANCHES_KEY: &str = "@branches";

/// What a run starts from, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub entity: Value,
    /// `--var name=value` pairs, in order; a later pair wins.
    pub vars: Vec<(String, String)>,
    pub secrets: HashMap<String, String>,
    pub execution_id: Option<String>,
    /// Environment variables that configure model providers, see
    /// [`llm::PROVIDER_ENV`].
    pub env: HashMap<String, String>,
}

/// The state of one execution.
pub struct Execution {
    pub id: String,
    pub started_at: String,
    pub workflow: String,
    pub entity: Value,
    pub vars: Map<String, Value>,
    pub secrets: HashMap<String, String>,
    pub redactor: Redactor,
    /// Environment variables that configure model providers.
    pub env: HashMap<String, String>,
    /// Variables whose `let` reads a secret and that no `save` has replaced
    /// since: the store leaves them out.
    pub secret_vars: std::collections::HashSet<String>,
    /// The branch each condition step took, by step name.
    pub branches: Map<String, Value>,
    /// `--var` values of variables that a `let` step computes.
    pub var_overrides: HashMap<String, String>,
    /// In a dry run, the targets whose values come from skipped scripts and
    /// requests.
    pub unknown: dry::Unknown,
    execution_value: Value,
    mask_secrets: bool,
}

impl Execution {
    /// The variables as the store keeps them: without the variables whose
    /// `let` reads a secret, which a resume renders again, and with any
    /// other secret value replaced by `***`.
    /// The branches taken so far are kept with them, under
    /// [`BRANCHES_KEY`], which no variable name can take.
    pub fn stored_vars(&self) -> Map<String, Value> {
        let mut stored: Map<String, Value> = self
            .vars
            .iter()
            .filter(|(name, _)| !self.secret_vars.contains(*name))
            .map(|(name, value)| (name.clone(), self.redact_value(value.clone())))
            .collect();
        if !self.branches.is_empty() {
            stored.insert(BRANCHES_KEY.to_string(), Value::Object(self.branches.clone()));
        }
        stored
    }

    /// Replaces every secret inside `value` with `***`, keeping its shape:
    /// strings are masked where they hold a secret, and a number that is a
    /// secret becomes the string `***`.
    pub fn redact_value(&self, value: Value) -> Value {
        if self.redactor.is_empty() {
            return value;
        }
        match value {
            Value::String(text) => Value::String(self.redactor.redact(&text)),
            Value::Number(number) => {
                let text = number.to_string();
                if self.redactor.redact(&text) == text {
                    Value::Number(number)
                } else {
                    Value::String(redact::MASK.to_string())
                }
            }
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|item| self.redact_value(item)).collect())
            }
            Value::Object(members) => Value::Object(
                members
                    .into_iter()
                    .map(|(key, member)| (key, self.redact_value(member)))
                    .collect(),
            ),
            other => other,
        }
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            entity: &self.entity,
            execution: &self.execution_value,
            vars: &self.vars,
            secrets: &self.secrets,
            mask_secrets: self.mask_secrets,
        }
    }
}

pub struct Options {
    /// Render every request and send nothing.
    pub dry_run: bool,
    pub sleeper: Arc<dyn Sleeper>,
    /// Notification channels besides standard error and the workflow's
    /// own webhooks.
    pub channels: notify::Channels,
    /// The index of the first step to run: 0, or where a resumed execution
    /// continues.
    pub first_step: usize,
    /// Whether steps that ran before a resume failed with `continue notify`,
    /// which makes the execution fail even when the rest succeeds.
    pub earlier_failures: bool,
    /// The store the execution is recorded in, for the resume hint.
    pub store_path: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dry_run: false,
            sleeper: Arc::new(retry::TokioSleeper),
            channels: notify::Channels::default(),
            first_step: 0,
            earlier_failures: false,
            store_path: None,
        }
    }
}

/// Returns the id of this process, read once, because the C library makes
/// a system call on every `getpid`, and each store write of a batch needs it.
pub fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Returns the current time in RFC 3339, UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Checks the inputs of a run and resolves the workflow's variables. A dry
/// run masks secrets, so it needs none of them set.
pub fn prepare(
    program: &Program,
    source: &str,
    inputs: Inputs,
    dry_run: bool,
) -> Result<Execution, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    let declared: Vec<&str> = program
        .variables
        .iter()
        .map(|variable| variable.name.as_str())
        .collect();
    let mut overrides: HashMap<String, String> = HashMap::new();
    for (name, value) in inputs.vars {
        if !declared.contains(&name.as_str()) {
            diagnostics.push(
                Diagnostic::error(
                    Code::InvalidVar,
                    format!("--var {name}: the workflow declares no variable `{name}`"),
                )
                .with_help(did_you_mean(&name, &declared, "variables")),
            );
        }
        overrides.insert(name, value);
    }

    if !dry_run {
        diagnostics.extend(missing_secrets(&program.secrets, &inputs.secrets));
    }

    let started_at = now();
    let id = inputs
        .execution_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // A dry run writes `***` for every secret itself, and redacting the
    // values too would also hide text that merely looks like a secret; the
    // API keys of providers still need hiding.
    let redactor = if dry_run {
        Redactor::new(secret_values(&HashMap::new(), &inputs.env).collect::<Vec<_>>())
    } else {
        Redactor::new(secret_values(&inputs.secrets, &inputs.env))
    };
    let mut execution = Execution {
        execution_value: json!({"id": id, "started_at": started_at, "workflow": program.name}),
        id,
        started_at,
        workflow: program.name.clone(),
        entity: inputs.entity,
        vars: Map::new(),
        secrets: inputs.secrets,
        redactor,
        env: inputs.env,
        secret_vars: secret_derived(program),
        branches: Map::new(),
        var_overrides: HashMap::new(),
        unknown: dry::Unknown::default(),
        mask_secrets: dry_run,
    };
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }

    let lines = LineIndex::new(source);
    for variable in &program.variables {
        let given = overrides.remove(&variable.name);
        if variable.needs_var && given.is_none() {
            diagnostics.push(missing_var(variable));
            continue;
        }
        let given = match given.map(|text| convert_var(variable, text)).transpose() {
            Ok(given) => given,
            Err(diagnostic) => {
                diagnostics.push(*diagnostic);
                continue;
            }
        };
        if variable.deferred {
            // An empty value is blank, so the `let`'s sources decide.
            if let Some(text) = given.filter(|text| !text.trim().is_empty()) {
                execution.var_overrides.insert(variable.name.clone(), text);
            }
            continue;
        }
        let value = match (given, &variable.value) {
            (Some(text), _) => match variable.ty {
                Some(var_type) => convert_text(&text, var_type).unwrap_or(Value::String(text)),
                None => Value::String(text),
            },
            (None, Some(VariableValue::Literal(value))) => value.clone(),
            (None, Some(VariableValue::Template(template))) => {
                match render::render(template, &execution.scope()) {
                    Ok(text) => Value::String(text),
                    Err(error) => {
                        diagnostics.push(render_diagnostic(&error, &lines, &execution.redactor));
                        continue;
                    }
                }
            }
            (None, None) => {
                diagnostics.push(missing_var(variable));
                continue;
            }
        };
        execution.vars.insert(variable.name.clone(), value);
    }
    if diagnostics.is_empty() {
        Ok(execution)
    } else {
        Err(diagnostics)
    }
}

fn missing_var(variable: &Variable) -> Diagnostic {
    Diagnostic::error(
        Code::MissingVar,
        format!("variable `{}` has no value", variable.name),
    )
    .with_label(variable.span, "declared without a value")
    .with_help(format!("pass it with --var {}=VALUE", variable.name))
}

/// Checks that the `--var` value `text` converts to the variable's type.
/// Empty text is blank and passes: a `let` step's sources then decide, and
/// a simple `let` of type text keeps it.
fn convert_var(variable: &Variable, text: String) -> Result<String, Box<Diagnostic>> {
    let Some(var_type) = variable.ty else {
        return Ok(text);
    };
    let blank_allowed = variable.deferred || var_type == VarType::Text;
    if blank_allowed && text.trim().is_empty() {
        return Ok(text);
    }
    match convert_text(&text, var_type) {
        Ok(_) => Ok(text),
        Err(reason) => {
            let name = &variable.name;
            let ty = var_type.as_str();
            let example = match var_type {
                VarType::Number => "5000",
                VarType::Boolean => "true",
                VarType::Date => "2024-01-31",
                VarType::Datetime => "2024-01-31T09:00:00Z",
                VarType::Uuid => "123e4567-e89b-12d3-a456-426614174000",
                VarType::Text => "TEXT",
            };
            Err(Box::new(
                Diagnostic::error(
                    Code::InvalidVar,
                    format!("--var {name}={text}: variable `{name}` is a {ty}, but {reason}"),
                )
                .with_label(variable.span, format!("declared as a {ty}"))
                .with_help(format!("pass a {ty}, such as --var {name}={example}")),
            ))
        }
    }
}

/// Returns a diagnostic for each secret the workflow uses that the run lacks.
fn missing_secrets(used: &[(String, Span)], given: &HashMap<String, String>) -> Vec<Diagnostic> {
    used.iter()
        .filter(|(name, _)| !given.contains_key(name))
        .map(|(name, span)| {
            Diagnostic::error(Code::SecretNotSet, format!("secret `{name}` is not set"))
                .with_label(*span, "used here")
                .with_help(format!(
                    "set the environment variable FLOWRUN_SECRET_{name}, or add `{name}=...` to the file given with --secrets"
                ))
        })
        .collect()
}

/// Restores a stored execution to run its remaining steps: its id, start
/// time, entity and variables come from the store. Secrets are never
/// stored, so they must be given again.
pub fn prepare_resume(
    program: &Program,
    record: &ExecutionRecord,
    secrets: HashMap<String, String>,
    env: HashMap<String, String>,
) -> Result<Execution, Vec<Diagnostic>> {
    let diagnostics = missing_secrets(&program.secrets, &secrets);
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let redactor = Redactor::new(secret_values(&secrets, &env));
    let mut execution = Execution {
        execution_value: json!({"id": record.id, "started_at": record.started_at, "workflow": program.name}),
        id: record.id.clone(),
        started_at: record.started_at.clone(),
        workflow: program.name.clone(),
        entity: record.entity_before.clone(),
        vars: Map::new(),
        secrets,
        redactor,
        env,
        secret_vars: secret_derived(program),
        branches: Map::new(),
        var_overrides: HashMap::new(),
        unknown: dry::Unknown::default(),
        mask_secrets: false,
    };
    // The store leaves out variables whose `let` reads a secret. They are
    // rendered again, in declaration order, from the entity as the execution
    // started and with the secrets given now.
    let mut diagnostics = Vec::new();
    execution.vars = record.vars.clone();
    if let Some(Value::Object(branches)) = execution.vars.remove(BRANCHES_KEY) {
        execution.branches = branches;
    }
    // A variable declared after the execution stopped is evaluated the same
    // way; one that a `let` step computes gets its value from that step.
    for variable in &program.variables {
        if execution.vars.contains_key(&variable.name) || variable.deferred {
            continue;
        }
        let value = match &variable.value {
            Some(VariableValue::Literal(value)) => value.clone(),
            Some(VariableValue::Template(template)) => match render::render(template, &execution.scope()) {
                Ok(text) => Value::String(text),
                Err(error) => {
                    diagnostics.push(render_diagnostic(
                        &error,
                        &LineIndex::new(""),
                        &execution.redactor,
                    ));
                    continue;
                }
            },
            None => {
                diagnostics.push(
                    Diagnostic::error(
                        Code::MissingVar,
                        format!("variable `{}` has no value", variable.name),
                    )
                    .with_label(
                        variable.span,
                        "declared without a value after the execution stopped",
                    )
                    .with_help("give it a value in the workflow; a resume takes no --var"),
                );
                continue;
            }
        };
        execution.vars.insert(variable.name.clone(), value);
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    execution.entity = record.entity.clone();
    // A `let` step that read a secret was left out of the store: it is
    // computed again when it ran before the resume point, on its branch.
    let lines = LineIndex::new("");
    for step in program.steps.iter().take(record.next_step) {
        let guards_hold = step.guards.iter().all(|guard| {
            execution.branches.get(&guard.condition).and_then(Value::as_str) == Some(guard.branch.as_str())
        });
        for action in &step.actions {
            let crate::program::Action::Statement(crate::program::statement::Statement::Let(statement)) =
                action
            else {
                continue;
            };
            if guards_hold
                && statement::reads_secret(statement)
                && !execution.vars.contains_key(&statement.name)
            {
                if let Err(diagnostic) = statement::resolve_let(statement, step.span, &lines, &mut execution)
                {
                    return Err(vec![diagnostic]);
                }
            }
        }
    }
    Ok(execution)
}

/// SHA-256 of `text`, hex.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// SHA-256 of each step's source text, in step order. A resume compares
/// these to tell whether the steps before the failed one changed.
pub fn step_hashes(program: &Program, source: &str) -> Vec<String> {
    program
        .steps
        .iter()
        .map(|step| sha256_hex(source.get(step.span.start..step.span.end).unwrap_or_default()))
        .collect()
}

/// Every value flowrun must hide: the secrets, and the API keys of model
/// providers.
fn secret_values<'a>(
    secrets: &'a HashMap<String, String>,
    env: &'a HashMap<String, String>,
) -> impl Iterator<Item = &'a str> {
    let keys = env
        .iter()
        .filter(|(name, _)| name.ends_with("_API_KEY"))
        .map(|(_, value)| value.as_str());
    secrets.values().map(String::as_str).chain(keys)
}

/// Collects the variables whose `let` value reads a secret, directly or
/// through an earlier variable that does.
fn secret_derived(program: &Program) -> std::collections::HashSet<String> {
    use crate::program::Piece;
    use crate::syntax::ast::{Expr, PathKey};

    fn reads(expr: &Expr, derived: &std::collections::HashSet<String>) -> bool {
        match expr {
            Expr::Path(path) => match path.root.text.as_str() {
                "secret" => true,
                "vars" => matches!(path.segments.first().map(|segment| &segment.key),
                    Some(PathKey::Field(name)) if derived.contains(name)),
                _ => false,
            },
            Expr::Call(call) => call.args.iter().any(|arg| reads(arg, derived)),
            Expr::String(..) | Expr::Number(..) => false,
        }
    }

    let mut derived = std::collections::HashSet::new();
    for variable in &program.variables {
        let Some(VariableValue::Template(template)) = &variable.value else {
            continue;
        };
        let secret = template.pieces.iter().any(|piece| match piece {
            Piece::Field { expr, .. } => reads(expr, &derived),
            Piece::Text(_) => false,
        });
        if secret {
            derived.insert(variable.name.clone());
        }
    }
    derived
}
