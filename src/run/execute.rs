//! Walks the steps of an execution in order, applies each step's failure
//! behaviour, sends notifications and writes the execution store before and
//! after every step.

use std::time::Instant;

use serde_json::Value;
use tracing::{error, info, info_span, warn, Instrument};

use crate::diagnostic::{Code, Diagnostic, LineIndex};
use crate::program::statement::{Branch, Statement};
use crate::program::{Action, OnError, Program, Step};
use crate::render;
use crate::run::errors::failure_diagnostic;
use crate::run::http::{self, Http};
use crate::run::notify::{self, Notification, NotificationError};
use crate::run::report::{Outcome, RenderedRequest, Report, StepReport};
use crate::run::request::{build, idempotency_key, rendered};
use crate::run::statement::{self, Effect};
use crate::run::{code, dry, llm, media, now, save, Execution, Options};
use crate::store::{AttemptRecord, ExecutionStatus, StepEnd, StepStatus, Store};

/// Runs the steps of `program` from `options.first_step` on and returns the
/// report. With a store, every step is recorded before it starts and after
/// it ends, and the execution's final status is written.
pub async fn execute(
    program: &Program,
    source: &str,
    mut execution: Execution,
    http: &Http,
    options: &Options,
    mut store: Option<&mut dyn Store>,
) -> Report {
    let lines = LineIndex::new(source);
    let mut report = Report {
        execution_id: execution.id.clone(),
        workflow: execution.workflow.clone(),
        started_at: execution.started_at.clone(),
        outcome: if options.earlier_failures {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        },
        steps: Vec::new(),
        entity: Value::Null,
        dry_run: Vec::new(),
        store_error: None,
    };
    let mut channels = options.channels.clone();
    channels.webhooks.extend(render_webhooks(program, &execution));

    let span = info_span!("execution", execution_id = %execution.id);
    async {
        for (index, step) in program.steps.iter().enumerate().skip(options.first_step) {
            // A step inside an `if` block runs only on its branch.
            if !guards_hold(step, &execution) {
                info!(step = %step.name, "skipped: its branch was not taken");
                continue;
            }
            if let Some(store) = store.as_deref_mut() {
                let methods: Vec<String> = step
                    .actions
                    .iter()
                    .map(|action| action.method_name().to_string())
                    .collect();
                let begun = store.begin_step(
                    &execution.id,
                    index,
                    &step.name,
                    &methods,
                    &now(),
                    crate::run::pid(),
                );
                if let Err(error) = begun {
                    report.store_error = Some(store_failed(&error.to_string()));
                    break;
                }
            }
            let context = StepContext {
                program,
                http,
                options,
                lines: &lines,
            };
            // A step's future is boxed: it is the largest part of an
            // execution's future, and unboxed it would be copied with it.
            // The futures of actions other than HTTP requests are boxed
            // inside it, so that boxing it copies 1.5 KB, not 10 KB.
            let step_report = Box::pin(run_step(
                &context,
                index,
                step,
                &mut execution,
                &mut report.dry_run,
            ))
            .instrument(info_span!("step", step = %step.name))
            .await;
            let failed = step_report.outcome == Outcome::Failed;
            let stop = step_report.stop;
            // A request left unsent by an interrupted batch pauses the
            // execution whatever the step's policy, so that a resume sends it.
            let interrupted = failed
                && step_report
                    .error
                    .as_ref()
                    .is_some_and(|diagnostic| diagnostic.code == Code::RunInterrupted);
            let pause = failed && !stop && (interrupted || step.policy.on_error == OnError::PauseNotify);

            if let Some(store) = store.as_deref_mut() {
                let status = match (failed, step.policy.on_error) {
                    (false, _) => StepStatus::Succeeded,
                    (true, _) if stop || interrupted => StepStatus::Failed,
                    (true, OnError::PauseNotify) => StepStatus::Failed,
                    (true, OnError::ContinueNotify) => StepStatus::FailedContinued,
                    (true, OnError::ContinueSilently) => StepStatus::FailedSilently,
                };
                let attempts = attempt_records(&step_report);
                let stored_vars = execution.stored_vars();
                let llm_usage = serde_json::to_value(&step_report.llm_usage).unwrap_or_default();
                let end = StepEnd {
                    index,
                    status,
                    error: step_report.error_message.as_deref(),
                    code: step_report
                        .error
                        .as_ref()
                        .map(|diagnostic| diagnostic.code.as_str()),
                    attempts: &attempts,
                    llm_usage: &llm_usage,
                    entity: &execution.entity,
                    vars: &stored_vars,
                    next_step: if stop {
                        program.steps.len()
                    } else if pause {
                        index
                    } else {
                        index + 1
                    },
                    at: &now(),
                };
                if let Err(error) = store.end_step(&execution.id, &end) {
                    report.steps.push(step_report);
                    report.store_error = Some(store_failed(&error.to_string()));
                    break;
                }
            }

            // The step's end is recorded before notifications go out, which
            // may take long, so that a crash meanwhile loses no known outcome.
            if failed && !interrupted && step.policy.on_error != OnError::ContinueSilently && !options.dry_run
            {
                let notification = notification(step, &step_report, stop, &execution);
                // Boxed, like a step, so that the execution's future stays small.
                let record = Box::pin(notify::send(
                    &notification,
                    &channels,
                    http,
                    options.sleeper.as_ref(),
                    &execution.redactor,
                ))
                .await;
                if let Some(store) = store.as_deref_mut() {
                    if let Err(error) = store.record_notification(&execution.id, &record) {
                        warn!(step = %step.name, "cannot record the notification: {error}");
                    }
                }
            }

            if failed && stop {
                report.outcome = Outcome::Failed;
            } else if interrupted {
                report.outcome = Outcome::Paused;
            } else if failed {
                match step.policy.on_error {
                    OnError::PauseNotify => report.outcome = Outcome::Paused,
                    OnError::ContinueNotify => report.outcome = Outcome::Failed,
                    OnError::ContinueSilently => {}
                }
            }
            report.steps.push(step_report);
            // A dry run goes on, so that it shows every request it can.
            if pause && !options.dry_run {
                warn!(step = %step.name, "execution paused at this step");
                break;
            }
            if stop {
                info!(step = %step.name, "the workflow stopped the execution");
                break;
            }
        }
    }
    .instrument(span)
    .await;

    if report.store_error.is_some() {
        report.outcome = Outcome::Failed;
    }
    if let Some(store) = store {
        let status = match report.outcome {
            Outcome::Succeeded => ExecutionStatus::Succeeded,
            Outcome::Failed => ExecutionStatus::Failed,
            Outcome::Paused => ExecutionStatus::Paused,
        };
        if report.store_error.is_none() && !options.dry_run {
            if let Err(error) = store.set_status(&execution.id, status, &now()) {
                report.store_error = Some(store_failed(&error.to_string()));
            }
        }
    }
    report.entity = execution.entity;
    report
}

fn store_failed(message: &str) -> Diagnostic {
    Diagnostic::error(
        Code::StoreFailed,
        format!("the execution store failed: {message}; the run stopped"),
    )
    .with_help(
        "free disk space or fix the store's permissions, then run `flowrun resume` with the execution id",
    )
}

/// Renders the workflow's `notify webhook` URLs. A URL that cannot be
/// rendered is logged and left out, since notifications never stop a run.
fn render_webhooks(program: &Program, execution: &Execution) -> Vec<String> {
    let scope = execution.scope();
    program
        .webhooks
        .iter()
        .filter_map(|template| match render::render(template, &scope) {
            Ok(url) => Some(url),
            Err(error) => {
                warn!("a webhook URL cannot be rendered and receives no notifications: {error:?}");
                None
            }
        })
        .collect()
}

/// Builds the notification of a failed step. `stopped` is true when the
/// step was a `stop failed`, which ends the execution as failed whatever
/// the failure behaviour.
fn notification(step: &Step, report: &StepReport, stopped: bool, execution: &Execution) -> Notification {
    let (code, message) = match &report.error {
        Some(diagnostic) => (diagnostic.code.as_str().to_string(), diagnostic.message.clone()),
        None => (String::new(), String::new()),
    };
    Notification {
        workflow: execution.workflow.clone(),
        execution_id: execution.id.clone(),
        step: step.name.clone(),
        severity: step.policy.severity,
        action: match step.policy.on_error {
            _ if stopped => "stop_failed",
            OnError::PauseNotify => "pause_notify",
            OnError::ContinueNotify | OnError::ContinueSilently => "continue_notify",
        },
        error: NotificationError {
            code,
            message: execution.redactor.redact(&message),
        },
        entity_id: execution.entity.get("id").cloned(),
        execution_started_at: execution.started_at.clone(),
        failed_at: now(),
    }
}

fn attempt_records(report: &StepReport) -> Vec<AttemptRecord> {
    report
        .attempts
        .iter()
        .map(|attempt| AttemptRecord {
            action: attempt.action,
            number: attempt.number,
            method: attempt.method.clone(),
            url: attempt.url.clone(),
            status_code: attempt.status,
            duration_ms: attempt.duration.as_millis() as u64,
            waited_ms: attempt.waited.as_millis() as u64,
            error: attempt.error.clone(),
        })
        .collect()
}

/// Whether every branch the step needs was taken.
fn guards_hold(step: &Step, execution: &Execution) -> bool {
    step.guards.iter().all(|guard| {
        execution.branches.get(&guard.condition).and_then(Value::as_str) == Some(guard.branch.as_str())
    })
}

/// The parts of an execution that every step uses.
struct StepContext<'a> {
    program: &'a Program,
    http: &'a Http,
    options: &'a Options,
    lines: &'a LineIndex<'a>,
}

/// Runs every action of a step. The step fails only when all its actions
/// fail, and a failed action beside a successful one is logged as a partial
/// failure.
async fn run_step(
    context: &StepContext<'_>,
    index: usize,
    step: &Step,
    execution: &mut Execution,
    dry_run: &mut Vec<RenderedRequest>,
) -> StepReport {
    let StepContext {
        program,
        http,
        options,
        lines,
    } = *context;
    info!(step = %step.name, "started");
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut failures: Vec<Diagnostic> = Vec::new();
    let mut successes = 0;
    let mut llm_usage = Vec::new();
    let mut provenance = Vec::new();
    let mut branch = None;
    let mut stop = false;
    let mut log = Vec::new();
    let mut not_evaluated = None;

    for (action, step_action) in step.actions.iter().enumerate() {
        let request = match step_action {
            Action::Http(request) => request,
            Action::Extract(_) | Action::Transcribe(_) => {
                let context = llm::CallContext {
                    program,
                    step,
                    action,
                    http,
                    sleeper: options.sleeper.as_ref(),
                    lines,
                    dry_run: options.dry_run,
                };
                let mut records = media::Records {
                    attempts: &mut attempts,
                    usage: &mut llm_usage,
                    provenance: &mut provenance,
                    dry_run,
                };
                if options.dry_run {
                    dry::skip_model_action(step_action, &mut execution.unknown);
                }
                match Box::pin(media::run(step_action, &context, execution, &mut records)).await {
                    Ok(()) => successes += 1,
                    Err(diagnostic) => failures.push(diagnostic),
                }
                continue;
            }
            Action::Statement(statement) => {
                if options.dry_run {
                    if let Some(read) = execution.unknown.read_by(statement) {
                        // The result would come from a placeholder: the
                        // statement is not evaluated, and what it writes is
                        // unknown too.
                        for target in dry::written_by(statement) {
                            execution.unknown.mark(&target);
                        }
                        if matches!(statement, Statement::Condition(_)) {
                            execution.branches.insert(
                                step.name.clone(),
                                Value::String(Branch::Then.as_str().to_string()),
                            );
                            branch = Some(Branch::Then);
                        }
                        not_evaluated = Some(read);
                        successes += 1;
                        continue;
                    }
                    for target in dry::written_by(statement) {
                        execution.unknown.forget(&target);
                    }
                }
                let context = llm::CallContext {
                    program,
                    step,
                    action,
                    http,
                    sleeper: options.sleeper.as_ref(),
                    lines,
                    dry_run: options.dry_run,
                };
                let mut records = statement::Records {
                    attempts: &mut attempts,
                    usage: &mut llm_usage,
                    dry_run,
                };
                match Box::pin(statement::run(statement, &context, execution, &mut records)).await {
                    Ok(Effect::None) => successes += 1,
                    Ok(Effect::Branch(taken)) => {
                        info!(step = %step.name, branch = taken.as_str(), "took the `{}` branch", taken.as_str());
                        execution
                            .branches
                            .insert(step.name.clone(), Value::String(taken.as_str().to_string()));
                        branch = Some(taken);
                        successes += 1;
                    }
                    Ok(Effect::Stop { failed: false, .. }) => {
                        stop = true;
                        successes += 1;
                    }
                    Ok(Effect::Stop {
                        failed: true,
                        message,
                    }) => {
                        stop = true;
                        let text = if message.is_empty() {
                            "the workflow stopped the execution as failed".to_string()
                        } else {
                            format!("the workflow stopped the execution as failed: {message}")
                        };
                        failures.push(
                            Diagnostic::error(Code::Stopped, text)
                                .with_label(step.span, "this `stop failed` line")
                                .with_help("this is the outcome the workflow chose; check the entity"),
                        );
                    }
                    Err(diagnostic) => failures.push(diagnostic),
                }
                continue;
            }
            Action::Code(call) => {
                if options.dry_run {
                    // A dry run starts no interpreter: the outputs are
                    // unknown.
                    dry::skip_code(call, execution);
                    successes += 1;
                    continue;
                }
                let ran = Box::pin(code::run(call, execution, step.settings.timeout)).await;
                log = ran.log;
                match ran.result {
                    Ok(()) => successes += 1,
                    Err(diagnostic) => failures.push(diagnostic),
                }
                continue;
            }
            Action::Llm(call) => {
                let context = llm::CallContext {
                    program,
                    step,
                    action,
                    http,
                    sleeper: options.sleeper.as_ref(),
                    lines,
                    dry_run: options.dry_run,
                };
                let listed = dry_run.len();
                if options.dry_run {
                    dry::skip_model_action(step_action, &mut execution.unknown);
                }
                match Box::pin(llm::run(
                    call,
                    &context,
                    execution,
                    &mut attempts,
                    &mut llm_usage,
                    dry_run,
                ))
                .await
                {
                    Ok(()) => successes += 1,
                    Err(diagnostic) => {
                        // A dry run lists every call, also one that fails
                        // before its request exists.
                        if options.dry_run && dry_run.len() == listed {
                            dry_run.push(RenderedRequest {
                                step: step.name.clone(),
                                method: "POST".to_string(),
                                url: String::new(),
                                headers: Vec::new(),
                                body: None,
                                error: Some(diagnostic.message.clone()),
                            });
                        }
                        failures.push(diagnostic);
                    }
                }
                continue;
            }
        };
        let key = idempotency_key(
            &execution.id,
            &step.name,
            action,
            request.method,
            step.settings.idempotency_key,
        );
        let outgoing = match build(request, execution, key.as_deref(), lines) {
            Ok(outgoing) => outgoing,
            Err(diagnostic) => {
                if options.dry_run {
                    dry_run.push(RenderedRequest {
                        step: step.name.clone(),
                        method: request.method.as_str().to_string(),
                        url: String::new(),
                        headers: Vec::new(),
                        body: None,
                        error: Some(diagnostic.message.clone()),
                    });
                }
                failures.push(diagnostic);
                continue;
            }
        };
        if options.dry_run {
            dry_run.push(rendered(step, &outgoing, &execution.redactor));
            save::apply_placeholders(request, execution);
            for save in &request.saves {
                execution.unknown.mark(&save.target);
            }
            successes += 1;
            continue;
        }

        let redact = |text: &str| execution.redactor.redact(text);
        let context = http::Context {
            step: &step.name,
            action,
            sleeper: options.sleeper.as_ref(),
            redact: &redact,
        };
        let exchange = match http::send(http, &outgoing, &step.settings, &context, &mut attempts).await {
            Ok(exchange) => exchange,
            Err(failure) => {
                failures.push(failure_diagnostic(
                    &failure,
                    &outgoing,
                    request,
                    &execution.redactor,
                ));
                continue;
            }
        };
        info!(
            step = %step.name,
            method = %outgoing.method,
            url = %outgoing.display_url,
            status = exchange.status.as_u16(),
            "{} {} returned {}",
            outgoing.method,
            outgoing.display_url,
            exchange.status
        );
        match save::apply_all(request, &exchange, execution) {
            Ok(()) => successes += 1,
            Err(diagnostic) => failures.push(diagnostic),
        }
    }

    let duration = started.elapsed();
    let duration_ms = duration.as_millis() as u64;
    let retries = attempts.iter().filter(|attempt| attempt.number > 1).count();
    let failed = successes == 0 && !failures.is_empty();
    let mut partial_failures = Vec::new();
    if failed {
        let code = failures[0].code;
        error!(
            step = %step.name,
            duration_ms,
            retries,
            code = %code,
            "failed in {duration_ms} ms with {retries} retries: {code}"
        );
    } else {
        for failure in &failures {
            warn!(step = %step.name, code = %failure.code, "one action failed, another succeeded: {}", failure.message);
            partial_failures.push(failure.message.clone());
        }
        info!(step = %step.name, duration_ms, retries, "succeeded in {duration_ms} ms with {retries} retries");
    }

    let error = if failed { failures.into_iter().next() } else { None };
    StepReport {
        index,
        name: step.name.clone(),
        outcome: if failed {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        },
        duration,
        attempts,
        error_message: error.as_ref().map(|diagnostic| diagnostic.message.clone()),
        error,
        partial_failures,
        llm_usage,
        provenance,
        branch,
        not_evaluated,
        log,
        stop,
    }
}
