//! The record of one execution: every step, every request attempt, and the
//! entity as it ended. Failures are data here, not errors.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::diagnostic::Diagnostic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    /// A step failed. For a step, whatever its failure behaviour; for an
    /// execution, a step failed with `on error continue notify`.
    Failed,
    /// A step failed with `on error pause notify`, and the execution stopped
    /// at it.
    Paused,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub execution_id: String,
    pub workflow: String,
    pub started_at: String,
    pub outcome: Outcome,
    pub steps: Vec<StepReport>,
    /// The entity after the last step that ran.
    pub entity: Value,
    /// Requests rendered by a dry run, in order.
    pub dry_run: Vec<RenderedRequest>,
    /// Why the execution store stopped the run, if it did.
    #[serde(skip)]
    pub store_error: Option<Diagnostic>,
}

impl Report {
    /// Returns the diagnostic of the first step that failed, if one did.
    pub fn failure(&self) -> Option<&Diagnostic> {
        self.failures().next()
    }

    /// Iterates over the diagnostics of every failed step, in order.
    pub fn failures(&self) -> impl Iterator<Item = &Diagnostic> {
        self.steps.iter().filter_map(|step| step.error.as_ref())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's position in the workflow, from 0.
    pub index: usize,
    pub name: String,
    pub outcome: Outcome,
    #[serde(serialize_with = "as_millis")]
    pub duration: Duration,
    pub attempts: Vec<Attempt>,
    #[serde(skip)]
    pub error: Option<Diagnostic>,
    /// The error message, with secrets redacted.
    #[serde(rename = "error")]
    pub error_message: Option<String>,
    /// Messages of actions that failed while another action of the step
    /// succeeded.
    pub partial_failures: Vec<String>,
    /// Token usage and latency of each model call.
    pub llm_usage: Vec<LlmUsage>,
    /// For a condition step, the branch it took: `then` or `else`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<crate::program::statement::Branch>,
    /// In a dry run, the unknown value that kept a statement from being
    /// evaluated, such as `entity.risk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_evaluated: Option<String>,
    /// What a code step's script kept with `outputs.log`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    /// True when the step was a `stop`, which ends the execution.
    #[serde(skip)]
    pub stop: bool,
    /// Where each value that an `extract` action wrote came from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<Provenance>,
}

/// The source of one extracted field: the page, paragraph or row, and the
/// text around the value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    pub field: String,
    /// Such as `page 2`, `paragraph 3` or `row 4`; `None` when the value
    /// was not found as written in the document.
    pub location: Option<String>,
    /// The line of the document that holds the value, at most 200 bytes.
    pub snippet: Option<String>,
}

/// What one model call cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmUsage {
    pub provider: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
}

/// One request sent, or tried, for a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// Which action of the step sent it, from 0.
    pub action: usize,
    /// 1 for the first request of an action, 2 for its first retry, and so on.
    pub number: u32,
    pub method: String,
    /// The URL with secrets redacted.
    pub url: String,
    pub status: Option<u16>,
    #[serde(serialize_with = "as_millis")]
    pub duration: Duration,
    /// How long flowrun waited before this attempt.
    #[serde(serialize_with = "as_millis")]
    pub waited: Duration,
    pub error: Option<String>,
}

/// A request as a dry run shows it, secrets masked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedRequest {
    pub step: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Why the request could not be rendered, if it could not.
    pub error: Option<String>,
}

fn as_millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_millis() as u64)
}
