//! The execution store: a durable record of every execution, step, request
//! attempt and notification, so that a paused or interrupted execution can
//! resume where it stopped.
//!
//! [`Store`] is the interface the interpreter and the command line use; the
//! schema and the queries live behind it. [`sqlite::SqliteStore`] is the
//! embedded implementation. Another backend, such as PostgreSQL for several
//! workers, implements the same trait.

pub mod group;
pub mod journal;
pub mod sqlite;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Running,
    Succeeded,
    Failed,
    Paused,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<ExecutionStatus> {
        [
            ExecutionStatus::Running,
            ExecutionStatus::Succeeded,
            ExecutionStatus::Failed,
            ExecutionStatus::Paused,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Started and not finished: its requests may be in flight.
    Running,
    Succeeded,
    /// Failed, and the workflow went on after a notification.
    FailedContinued,
    /// Failed, and the workflow went on without a notification; this does
    /// not fail the execution.
    FailedSilently,
    /// Failed, and the execution paused or failed at it.
    Failed,
    /// Was running when flowrun stopped without finishing it.
    OutcomeUnknown,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::FailedContinued => "failed_continued",
            StepStatus::FailedSilently => "failed_silently",
            StepStatus::Failed => "failed",
            StepStatus::OutcomeUnknown => "outcome_unknown",
        }
    }

    pub fn parse(text: &str) -> Option<StepStatus> {
        [
            StepStatus::Running,
            StepStatus::Succeeded,
            StepStatus::FailedContinued,
            StepStatus::FailedSilently,
            StepStatus::Failed,
            StepStatus::OutcomeUnknown,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// What a new execution starts from.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: &'a str,
    pub workflow: &'a str,
    /// The workflow file, as given on the command line, for `resume`.
    pub source_path: &'a str,
    /// SHA-256 of the whole workflow file, hex.
    pub workflow_hash: &'a str,
    /// SHA-256 of each step's source text, hex, in step order.
    pub step_hashes: &'a [String],
    /// The name of each step, in step order.
    pub step_names: &'a [String],
    pub entity: &'a Value,
    /// Variables after `let` and `--var`. Secrets are never stored.
    pub vars: &'a Map<String, Value>,
    /// RFC 3339.
    pub started_at: &'a str,
    /// The process that runs the execution.
    pub pid: u32,
}

/// An execution as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub workflow: String,
    pub source_path: String,
    pub workflow_hash: String,
    pub step_hashes: Vec<String>,
    pub step_names: Vec<String>,
    pub status: ExecutionStatus,
    /// The entity when the execution started.
    pub entity_before: Value,
    /// The entity after the last finished step.
    pub entity: Value,
    /// The variables after the last finished step.
    pub vars: Map<String, Value>,
    /// The index of the first step that has not finished.
    pub next_step: usize,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// The process that last ran the execution.
    pub pid: u32,
}

/// One row of `flowrun runs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionSummary {
    pub id: String,
    pub workflow: String,
    pub status: ExecutionStatus,
    pub started_at: String,
    pub updated_at: String,
    /// The name of the step at `next_step`, when one is left.
    pub next_step_name: Option<String>,
    /// The process that last ran the execution.
    pub pid: u32,
}

/// One request attempt, secrets already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Which action of the step, from 0.
    pub action: usize,
    /// 1 for the first request of the action.
    pub number: u32,
    pub method: String,
    pub url: String,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub waited_ms: u64,
    pub error: Option<String>,
}

/// One step of an execution as stored, with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub index: usize,
    pub name: String,
    pub status: StepStatus,
    /// How many times the step was started: 2 after one resume of it.
    pub runs: u32,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The error code, such as `flow::run::http_status`.
    pub code: Option<String>,
    /// The HTTP methods of the step's actions, for deciding whether a step
    /// left in flight may be sent again.
    pub methods: Vec<String>,
    /// Token usage and latency of the step's model calls in its last run,
    /// as a JSON array of `{provider, model, prompt_tokens,
    /// completion_tokens, latency_ms}`.
    pub llm_usage: Value,
    pub attempts: Vec<AttemptRecord>,
}

/// A notification flowrun sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub step: String,
    pub severity: String,
    pub error: String,
    /// The channels it went to, such as `stderr`, `file`, `webhook`.
    pub channels: Vec<String>,
    /// Why a webhook delivery failed, when it did.
    pub delivery_error: Option<String>,
    pub sent_at: String,
}

/// What ending a step writes, in one transaction.
#[derive(Debug, Clone)]
pub struct StepEnd<'a> {
    pub index: usize,
    pub status: StepStatus,
    pub error: Option<&'a str>,
    pub code: Option<&'a str>,
    pub attempts: &'a [AttemptRecord],
    /// Token usage of the step's model calls, a JSON array.
    pub llm_usage: &'a Value,
    pub entity: &'a Value,
    pub vars: &'a Map<String, Value>,
    /// The index of the step to run next.
    pub next_step: usize,
    pub at: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store `{path}` is locked by another process")]
    Locked { path: String },
    #[error("the store `{path}` is read-only")]
    ReadOnly { path: String },
    #[error("the store `{path}` is not a flowrun store or is damaged: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("cannot open the store `{path}`: {reason}")]
    Open { path: String, reason: String },
    #[error("execution `{id}` is not in the store")]
    NotFound { id: String },
    #[error("execution `{id}` is already in the store")]
    AlreadyExists { id: String },
    #[error("store error: {0}")]
    Other(String),
}

/// Durable state of executions. Every method that writes commits before it
/// returns, so a crash of the process after it loses nothing it wrote. In a
/// batch, [`Store::begin_step`] is written to the batch's journal before it
/// returns, with every write before it. The other writes reach the journal
/// with the next step's start, or the store with the writer's next group.
pub trait Store {
    /// Records a new execution with status `running`.
    fn begin_execution(&mut self, execution: &NewExecution<'_>) -> Result<(), StoreError>;

    /// Records that a step starts: status `running`, `runs` incremented,
    /// and the execution's `pid` and `updated_at` set.
    fn begin_step(
        &mut self,
        id: &str,
        index: usize,
        name: &str,
        methods: &[String],
        at: &str,
        pid: u32,
    ) -> Result<(), StoreError>;

    /// Records the end of a step with its attempts, and the entity,
    /// variables and next step of the execution, in one transaction.
    fn end_step(&mut self, id: &str, end: &StepEnd<'_>) -> Result<(), StoreError>;

    /// Sets the execution's status; `finished_at` is set for `succeeded`
    /// and `failed`.
    fn set_status(&mut self, id: &str, status: ExecutionStatus, at: &str) -> Result<(), StoreError>;

    /// Takes over an execution for a resume: sets it `running` in process
    /// `pid`, but only while it still has the status and process it was
    /// read with. Returns false when another process changed it first, so
    /// that two resumes cannot both run it.
    fn claim(
        &mut self,
        id: &str,
        expected: ExecutionStatus,
        expected_pid: u32,
        pid: u32,
        at: &str,
    ) -> Result<bool, StoreError>;

    /// Records the workflow a resume runs: its hashes and step names, and
    /// the index of the step to run next, which an edited workflow may have
    /// moved.
    fn rebase(
        &mut self,
        id: &str,
        workflow_hash: &str,
        step_hashes: &[String],
        step_names: &[String],
        next_step: usize,
        at: &str,
    ) -> Result<(), StoreError>;

    /// Marks a step that was `running` as `outcome_unknown`.
    fn mark_outcome_unknown(&mut self, id: &str, index: usize, at: &str) -> Result<(), StoreError>;

    fn record_notification(&mut self, id: &str, notification: &NotificationRecord) -> Result<(), StoreError>;

    fn execution(&self, id: &str) -> Result<ExecutionRecord, StoreError>;

    /// Executions, newest first, optionally only those with `status`.
    fn executions(&self, status: Option<ExecutionStatus>) -> Result<Vec<ExecutionSummary>, StoreError>;

    /// Lists the steps of an execution in order, each with its attempts.
    fn steps(&self, id: &str) -> Result<Vec<StepRecord>, StoreError>;

    fn notifications(&self, id: &str) -> Result<Vec<NotificationRecord>, StoreError>;
}
