//! Batch runs: one workflow over many records, each record its own
//! execution with its own id, state and failure behaviour.
//!
//! [`records`] reads the input ahead on its own thread. [`run`] keeps up to
//! `concurrency` executions going on one async thread and hands each
//! finished one to the caller, in input order by default. [`writer`] groups
//! the store writes of all executions into few transactions. The executions share one [`Http`], whose
//! [`crate::run::politeness::Politeness`] paces every host.

pub mod records;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::diagnostic::Diagnostic;
use crate::program::Program;
use crate::run::http::Http;
use crate::run::notify::Channels;
use crate::run::report::{Outcome, Report};
use crate::run::{self, Inputs, Options};
use crate::store::{NewExecution, Store};
use records::Record;
use writer::StoreWriter;

/// The default number of executions a batch runs at once. It hides network
/// latency and opens about as many connections to one host as a browser does.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The settings and resources every execution of a batch shares.
pub struct Batch<'a> {
    pub program: &'a Program,
    pub source: &'a str,
    /// The workflow file as the store records it, for `flowrun resume`.
    pub source_path: String,
    pub vars: Vec<(String, String)>,
    pub secrets: HashMap<String, String>,
    pub env: HashMap<String, String>,
    pub channels: Channels,
    pub http: &'a Http,
    /// How many executions run at once; at least 1.
    pub concurrency: usize,
    /// Hand finished executions over in input order.
    pub ordered: bool,
    pub store: Option<&'a StoreWriter>,
    /// The store file, for the resume hint of paused executions.
    pub store_path: Option<PathBuf>,
}

/// A record's result.
#[derive(Debug)]
pub enum Finished {
    /// The record ran as an execution.
    Ran {
        number: u64,
        /// The line of the input the record starts on, when it is known.
        line: Option<u64>,
        report: Box<Report>,
    },
    /// The record could not be read, or its execution could not start.
    Rejected {
        number: u64,
        line: Option<u64>,
        /// The id of the stored execution, in `flowrun resume --all`. Batch
        /// records leave it out.
        execution: Option<String>,
        diagnostics: Vec<Diagnostic>,
    },
    /// The execution was left alone: another process resumed or finished
    /// it after it was listed.
    Skipped {
        number: u64,
        execution: String,
        reason: String,
    },
}

impl Finished {
    pub fn number(&self) -> u64 {
        match self {
            Finished::Ran { number, .. }
            | Finished::Rejected { number, .. }
            | Finished::Skipped { number, .. } => *number,
        }
    }
}

/// Counts of a batch, for its summary and exit code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub succeeded: u64,
    pub failed: u64,
    pub paused: u64,
    /// Records that could not be read or could not start.
    pub rejected: u64,
    /// Executions that another process took over first.
    pub skipped: u64,
    /// The number of the last record taken; after an interruption, the
    /// records after it were not started.
    pub last_taken: u64,
    /// The run stopped taking records after the first interrupt.
    pub interrupted: bool,
    /// The run stopped taking records because the results could no longer
    /// be handed on, as when the reader of standard output went away.
    pub output_closed: bool,
    /// Executions abandoned in flight by a second interrupt. Their running
    /// steps stay recorded as running, so `flowrun resume` treats them as
    /// interrupted.
    pub abandoned: u64,
}

impl Totals {
    fn count(&mut self, finished: &Finished) {
        match finished {
            Finished::Ran { report, .. } => match report.outcome {
                Outcome::Succeeded => self.succeeded += 1,
                Outcome::Failed => self.failed += 1,
                Outcome::Paused => self.paused += 1,
            },
            Finished::Rejected { .. } => self.rejected += 1,
            Finished::Skipped { .. } => self.skipped += 1,
        }
    }
}

/// Runs every record from `records`, at most `batch.concurrency` at once,
/// and passes each result to `finished`, which returns whether results can
/// still be handed on. After the first message on `interrupts`, or once
/// `finished` returns false, no further record starts and the running ones
/// finish, each within its steps' timeouts. A second message abandons them
/// at once.
pub async fn run(
    batch: &Batch<'_>,
    records: mpsc::Receiver<Vec<Record>>,
    interrupts: &mut mpsc::UnboundedReceiver<()>,
    finished: &mut dyn FnMut(Finished, &Totals) -> bool,
) -> Totals {
    let step_hashes = run::step_hashes(batch.program, batch.source);
    let workflow_hash = run::sha256_hex(batch.source);
    let step_names: Vec<String> = batch.program.steps.iter().map(|step| step.name.clone()).collect();
    let shared = Shared {
        batch,
        step_hashes: &step_hashes,
        workflow_hash: &workflow_hash,
        step_names: &step_names,
    };
    let pace = Pace {
        concurrency: batch.concurrency,
        ordered: batch.ordered,
        http: batch.http,
        item: "record",
    };
    schedule(
        pace,
        records,
        interrupts,
        finished,
        |record: Record| match record.entity {
            // Boxed where it is made, so that the large future of an
            // execution is not copied on each move.
            Ok(entity) => {
                Start::Run(
                    Box::pin(shared.execute(record.number, record.line, entity)).instrument(
                        tracing::info_span!("record", record = record.number, line = record.line),
                    ),
                )
            }
            Err(diagnostic) => Start::Done(Finished::Rejected {
                number: record.number,
                line: record.line,
                execution: None,
                diagnostics: vec![diagnostic],
            }),
        },
    )
    .await
}

/// Something [`schedule`] runs, numbered from 1 in the order it arrives.
pub trait Numbered {
    fn number(&self) -> u64;
}

impl Numbered for Record {
    fn number(&self) -> u64 {
        self.number
    }
}

/// The pace of [`schedule`]: concurrency, order and the shared HTTP client.
#[derive(Clone, Copy)]
pub struct Pace<'a> {
    /// How many items run at once; at least 1.
    pub concurrency: usize,
    /// Hand finished items over in the order they arrived.
    pub ordered: bool,
    /// The client whose waits for `Retry-After` and `--rate` the first
    /// interrupt ends.
    pub http: &'a Http,
    /// The noun for an item in the message about an interrupt: `record` or
    /// `execution`.
    pub item: &'static str,
}

/// The result of starting an item: an execution to await, or a result at once.
pub enum Start<F> {
    Run(F),
    Done(Finished),
}

/// Starts each item of `items` with `start`, keeping at most
/// `pace.concurrency` running, and passes each result to `finished` as
/// [`run`] describes, Ctrl-C included. Batch runs and `flowrun resume
/// --all` share it.
pub async fn schedule<T, F>(
    pace: Pace<'_>,
    mut items: mpsc::Receiver<Vec<T>>,
    interrupts: &mut mpsc::UnboundedReceiver<()>,
    finished: &mut dyn FnMut(Finished, &Totals) -> bool,
    mut start: impl FnMut(T) -> Start<F>,
) -> Totals
where
    T: Numbered,
    F: std::future::Future<Output = Finished>,
{
    let concurrency = pace.concurrency.max(1);
    // In input order, a slow item holds back the output of those after
    // it. The window bounds how many wait, and so the memory they take.
    let window = concurrency * 8 + 64;

    let mut totals = Totals::default();
    let mut running = FuturesUnordered::new();
    let mut waiting: BTreeMap<u64, Finished> = BTreeMap::new();
    let mut next_out: Option<u64> = None;
    let mut reading = true;
    let mut signals = true;

    let mut deliver = |result: Finished,
                       totals: &mut Totals,
                       waiting: &mut BTreeMap<u64, Finished>,
                       next_out: &mut Option<u64>| {
        totals.count(&result);
        if !pace.ordered {
            if !finished(result, totals) {
                totals.output_closed = true;
            }
            return;
        }
        waiting.insert(result.number(), result);
        while let Some(entry) = waiting.first_entry() {
            if next_out.is_some_and(|next| *entry.key() != next) {
                break;
            }
            let result = entry.remove();
            *next_out = Some(result.number() + 1);
            if !finished(result, totals) {
                totals.output_closed = true;
            }
        }
    };

    // The items of the last chunk received that have not started.
    let mut received: std::vec::IntoIter<T> = Vec::new().into_iter();

    loop {
        let room = running.len() < concurrency && (!pace.ordered || running.len() + waiting.len() < window);
        let take = reading && !totals.interrupted && !totals.output_closed && room;
        if let Some(item) = take.then(|| received.next()).flatten() {
            let number = item.number();
            totals.last_taken = number;
            if next_out.is_none() {
                next_out = Some(number);
            }
            match start(item) {
                Start::Run(execution) => running.push(execution),
                Start::Done(result) => deliver(result, &mut totals, &mut waiting, &mut next_out),
            }
            continue;
        }
        if !take && running.is_empty() {
            break;
        }
        tokio::select! {
            signal = interrupts.recv(), if signals => match signal {
                None => signals = false,
                Some(()) if totals.interrupted => {
                    totals.abandoned = running.len() as u64;
                    break;
                }
                Some(()) => {
                    totals.interrupted = true;
                    pace.http.stop_waiting();
                    tracing::warn!(
                        running = running.len(),
                        "interrupted: no further {} starts, and requests waiting for a Retry-After, for \
                         --rate or for the first response from an HTTPS origin are not sent; waiting for {} \
                         running executions to finish (Ctrl-C again stops them at once)",
                        pace.item,
                        running.len()
                    );
                }
            },
            chunk = items.recv(), if take => match chunk {
                None => reading = false,
                Some(chunk) => received = chunk.into_iter(),
            },
            Some(result) = running.next(), if !running.is_empty() => {
                deliver(result, &mut totals, &mut waiting, &mut next_out);
            }
        }
    }
    // Unless executions were abandoned, every taken item has finished and
    // nothing is left waiting; this only guards the output against a gap.
    drop(running);
    for (_, result) in std::mem::take(&mut waiting) {
        if !finished(result, &totals) {
            totals.output_closed = true;
        }
    }
    totals
}

/// The parts of a batch that each execution reads.
struct Shared<'a> {
    batch: &'a Batch<'a>,
    step_hashes: &'a [String],
    workflow_hash: &'a str,
    step_names: &'a [String],
}

impl Shared<'_> {
    async fn execute(&self, number: u64, line: Option<u64>, entity: Value) -> Finished {
        let batch = self.batch;
        let inputs = Inputs {
            entity,
            vars: batch.vars.clone(),
            secrets: batch.secrets.clone(),
            execution_id: None,
            env: batch.env.clone(),
        };
        let execution = match run::prepare(batch.program, batch.source, inputs, false) {
            Ok(execution) => execution,
            Err(diagnostics) => {
                return Finished::Rejected {
                    number,
                    line,
                    execution: None,
                    diagnostics,
                }
            }
        };
        let mut handle = batch.store.map(StoreWriter::handle);
        if let Some(handle) = handle.as_mut() {
            let new = NewExecution {
                id: &execution.id,
                workflow: &batch.program.name,
                source_path: &batch.source_path,
                workflow_hash: self.workflow_hash,
                step_hashes: self.step_hashes,
                step_names: self.step_names,
                entity: &execution.entity,
                vars: &execution.stored_vars(),
                started_at: &execution.started_at,
                pid: run::pid(),
            };
            if let Err(error) = handle.begin_execution(&new) {
                return Finished::Rejected {
                    number,
                    line,
                    execution: None,
                    diagnostics: vec![Diagnostic::error(
                        crate::diagnostic::Code::StoreFailed,
                        format!("the execution store failed: {error}; the record did not run"),
                    )],
                };
            }
        }
        let options = Options {
            dry_run: false,
            sleeper: Arc::new(run::retry::TokioSleeper),
            channels: batch.channels.clone(),
            first_step: 0,
            earlier_failures: false,
            store_path: batch.store_path.clone(),
        };
        let store = handle.as_mut().map(|handle| handle as &mut dyn Store);
        let report = run::execute(
            batch.program,
            batch.source,
            execution,
            batch.http,
            &options,
            store,
        )
        .await;
        Finished::Ran {
            number,
            line,
            report: Box::new(report),
        }
    }
}
