//! Grouped store writes for a batch: one thread owns the store's connection
//! and commits the writes of many executions in one transaction.
//!
//! Each execution writes through its own [`WriterHandle`], which implements
//! [`Store`]. A step's start is the one write the interpreter waits for,
//! because its request must not leave before the store records the step as
//! running. It waits asynchronously, through [`Store::until_committed`], so
//! other executions go on and their writes join the same group. The writes
//! after a step only queue. Writes run in the order
//! they were queued, each as a savepoint, so one failed write undoes only
//! itself. When the process dies before a group commits, the executions
//! in it lose their last writes and read as running, which `flowrun resume`
//! treats as an interrupted step.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{Map, Value};

use crate::store::sqlite::SqliteStore;
use crate::store::{
    AttemptRecord, ExecutionRecord, ExecutionStatus, ExecutionSummary, NewExecution, NotificationRecord,
    StepEnd, StepRecord, StepStatus, Store, StoreError,
};

/// The maximum number of writes queued for the writer thread. An execution
/// that finds the queue full waits, so a slow disk slows the batch down
/// instead of filling memory.
const QUEUE: usize = 4096;

/// The maximum number of writes in one transaction.
const MAX_GROUP: usize = 1024;

/// A callback that runs once the group of a write has committed or failed to commit.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// One write or read, run on the writer thread.
type Job = Box<dyn FnOnce(&mut SqliteStore) -> Option<Reply> + Send>;

/// The first write that failed, shared by every handle.
type Failure = Arc<Mutex<Option<String>>>;

/// The thread that owns the store's connection.
pub struct StoreWriter {
    sender: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    failure: Failure,
}

impl StoreWriter {
    /// Starts the writer thread on `store`.
    pub fn start(store: SqliteStore) -> StoreWriter {
        let (sender, receiver) = sync_channel(QUEUE);
        let failure: Failure = Arc::default();
        let thread_failure = failure.clone();
        let thread = std::thread::Builder::new()
            .name("flowrun-store".to_string())
            .spawn(move || write_groups(store, &receiver, &thread_failure))
            .ok();
        StoreWriter {
            sender: Some(sender),
            thread,
            failure,
        }
    }

    /// A handle for one execution.
    pub fn handle(&self) -> WriterHandle {
        WriterHandle {
            sender: self.sender.clone(),
            failure: self.failure.clone(),
            pending: None,
        }
    }

    /// Waits until every queued write is committed, once every handle is
    /// dropped, and returns the first write that failed.
    pub fn finish(mut self) -> Result<(), String> {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                return Err("the store writer stopped unexpectedly".to_string());
            }
        }
        match self.failure.lock() {
            Ok(failure) => failure.clone().map_or(Ok(()), Err),
            Err(_) => Err("the store writer stopped unexpectedly".to_string()),
        }
    }
}

fn record_failure(failure: &Failure, error: &StoreError) {
    if let Ok(mut failure) = failure.lock() {
        failure.get_or_insert_with(|| error.to_string());
    }
}

fn write_groups(mut store: SqliteStore, receiver: &Receiver<Job>, failure: &Failure) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    let mut replies = Vec::with_capacity(MAX_GROUP);
    while let Ok(job) = receiver.recv() {
        jobs.push(job);
        while jobs.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Without a group, for instance when another process holds the
        // lock past the busy timeout, each write tries on its own.
        let grouped = store.begin_group().is_ok();
        replies.extend(jobs.drain(..).filter_map(|job| job(&mut store)));
        let committed = if grouped { store.commit_group() } else { Ok(()) };
        if let Err(error) = &committed {
            record_failure(failure, error);
        }
        for reply in replies.drain(..) {
            reply(committed.as_ref().err());
        }
    }
}

/// One execution's way to the writer thread.
pub struct WriterHandle {
    sender: Option<SyncSender<Job>>,
    failure: Failure,
    /// The commit of the last write that must be durable before the
    /// execution goes on.
    pending: Option<tokio::sync::oneshot::Receiver<Result<(), StoreError>>>,
}

impl WriterHandle {
    fn failed(&self) -> Result<(), StoreError> {
        match self.failure.lock().ok().and_then(|failure| failure.clone()) {
            Some(message) => Err(StoreError::Other(format!("an earlier write failed: {message}"))),
            None => Ok(()),
        }
    }

    fn queue(&self, job: Job) -> Result<(), StoreError> {
        let stopped = || StoreError::Other("the store writer has stopped".to_string());
        self.sender
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }

    /// Queues a write without waiting for it. A failure is reported by the
    /// next call of any handle, and by [`StoreWriter::finish`].
    fn write(
        &self,
        write: impl FnOnce(&mut SqliteStore) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.failed()?;
        let failure = self.failure.clone();
        self.queue(Box::new(move |store| {
            if let Err(error) = write(store) {
                record_failure(&failure, &error);
            }
            None
        }))
    }

    /// Queues a write whose commit [`Store::until_committed`] waits for.
    fn write_durable(
        &mut self,
        write: impl FnOnce(&mut SqliteStore) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.failed()?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.queue(Box::new(move |store| {
            let result = write(store);
            Some(Box::new(move |commit_error: Option<&StoreError>| {
                let result = match commit_error {
                    Some(error) => Err(StoreError::Other(format!("cannot commit: {error}"))),
                    None => result,
                };
                let _ = sender.send(result);
            }))
        }))?;
        self.pending = Some(receiver);
        Ok(())
    }

    /// Runs `call` on the writer thread and waits until its group commits.
    fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.failed()?;
        let (sender, receiver) = sync_channel(1);
        self.queue(Box::new(move |store| {
            let result = call(store);
            Some(Box::new(move |commit_error: Option<&StoreError>| {
                let result = match commit_error {
                    Some(error) => Err(StoreError::Other(format!("cannot commit: {error}"))),
                    None => result,
                };
                let _ = sender.send(result);
            }))
        }))?;
        receiver
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Other("the store writer has stopped".to_string())))
    }
}

impl Store for WriterHandle {
    fn begin_execution(&mut self, execution: &NewExecution<'_>) -> Result<(), StoreError> {
        let id = execution.id.to_string();
        let workflow = execution.workflow.to_string();
        let source_path = execution.source_path.to_string();
        let workflow_hash = execution.workflow_hash.to_string();
        let step_hashes = execution.step_hashes.to_vec();
        let step_names = execution.step_names.to_vec();
        let entity = execution.entity.clone();
        let vars = execution.vars.clone();
        let started_at = execution.started_at.to_string();
        let pid = execution.pid;
        self.write(move |store| {
            store.begin_execution(&NewExecution {
                id: &id,
                workflow: &workflow,
                source_path: &source_path,
                workflow_hash: &workflow_hash,
                step_hashes: &step_hashes,
                step_names: &step_names,
                entity: &entity,
                vars: &vars,
                started_at: &started_at,
                pid,
            })
        })
    }

    fn begin_step(
        &mut self,
        id: &str,
        index: usize,
        name: &str,
        methods: &[String],
        at: &str,
        pid: u32,
    ) -> Result<(), StoreError> {
        let (id, name, methods, at) = (id.to_string(), name.to_string(), methods.to_vec(), at.to_string());
        self.write_durable(move |store| store.begin_step(&id, index, &name, &methods, &at, pid))
    }

    fn end_step(&mut self, id: &str, end: &StepEnd<'_>) -> Result<(), StoreError> {
        let id = id.to_string();
        let owned = OwnedStepEnd {
            index: end.index,
            status: end.status,
            error: end.error.map(str::to_string),
            code: end.code.map(str::to_string),
            attempts: end.attempts.to_vec(),
            llm_usage: end.llm_usage.clone(),
            entity: end.entity.clone(),
            vars: end.vars.clone(),
            next_step: end.next_step,
            at: end.at.to_string(),
        };
        self.write(move |store| {
            store.end_step(
                &id,
                &StepEnd {
                    index: owned.index,
                    status: owned.status,
                    error: owned.error.as_deref(),
                    code: owned.code.as_deref(),
                    attempts: &owned.attempts,
                    llm_usage: &owned.llm_usage,
                    entity: &owned.entity,
                    vars: &owned.vars,
                    next_step: owned.next_step,
                    at: &owned.at,
                },
            )
        })
    }

    fn set_status(&mut self, id: &str, status: ExecutionStatus, at: &str) -> Result<(), StoreError> {
        let (id, at) = (id.to_string(), at.to_string());
        self.write(move |store| store.set_status(&id, status, &at))
    }

    fn claim(
        &mut self,
        id: &str,
        expected: ExecutionStatus,
        expected_pid: u32,
        pid: u32,
        at: &str,
    ) -> Result<bool, StoreError> {
        let (id, at) = (id.to_string(), at.to_string());
        self.call(move |store| store.claim(&id, expected, expected_pid, pid, &at))
    }

    fn rebase(
        &mut self,
        id: &str,
        workflow_hash: &str,
        step_hashes: &[String],
        step_names: &[String],
        next_step: usize,
        at: &str,
    ) -> Result<(), StoreError> {
        let (id, workflow_hash, at) = (id.to_string(), workflow_hash.to_string(), at.to_string());
        let (step_hashes, step_names) = (step_hashes.to_vec(), step_names.to_vec());
        self.call(move |store| store.rebase(&id, &workflow_hash, &step_hashes, &step_names, next_step, &at))
    }

    fn mark_outcome_unknown(&mut self, id: &str, index: usize, at: &str) -> Result<(), StoreError> {
        let (id, at) = (id.to_string(), at.to_string());
        self.call(move |store| store.mark_outcome_unknown(&id, index, &at))
    }

    fn record_notification(&mut self, id: &str, notification: &NotificationRecord) -> Result<(), StoreError> {
        let (id, notification) = (id.to_string(), notification.clone());
        self.write(move |store| store.record_notification(&id, &notification))
    }

    fn execution(&self, id: &str) -> Result<ExecutionRecord, StoreError> {
        let id = id.to_string();
        self.call(move |store| store.execution(&id))
    }

    fn executions(&self, status: Option<ExecutionStatus>) -> Result<Vec<ExecutionSummary>, StoreError> {
        self.call(move |store| store.executions(status))
    }

    fn steps(&self, id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let id = id.to_string();
        self.call(move |store| store.steps(&id))
    }

    fn notifications(&self, id: &str) -> Result<Vec<NotificationRecord>, StoreError> {
        let id = id.to_string();
        self.call(move |store| store.notifications(&id))
    }

    fn until_committed(&mut self) -> Option<crate::store::Commit> {
        let pending = self.pending.take()?;
        Some(Box::pin(async move {
            pending
                .await
                .unwrap_or_else(|_| Err(StoreError::Other("the store writer has stopped".to_string())))
        }))
    }
}

/// A [`StepEnd`] that owns its values, to cross to the writer thread.
struct OwnedStepEnd {
    index: usize,
    status: StepStatus,
    error: Option<String>,
    code: Option<String>,
    attempts: Vec<AttemptRecord>,
    llm_usage: Value,
    entity: Value,
    vars: Map<String, Value>,
    next_step: usize,
    at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new_execution<'a>(id: &'a str, entity: &'a Value, vars: &'a Map<String, Value>) -> NewExecution<'a> {
        NewExecution {
            id,
            workflow: "w",
            source_path: "/w.flow",
            workflow_hash: "h",
            step_hashes: &[],
            step_names: &[],
            entity,
            vars,
            started_at: "2026-01-01T00:00:00Z",
            pid: 7,
        }
    }

    #[test]
    fn queued_writes_are_committed_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let writer = StoreWriter::start(SqliteStore::open(&path).unwrap());
        let entity = json!({"id": "C-1"});
        let vars = Map::new();
        for index in 0..50 {
            let mut handle = writer.handle();
            let id = format!("ex-{index:02}");
            handle
                .begin_execution(&new_execution(&id, &entity, &vars))
                .unwrap();
            handle
                .begin_step(&id, 0, "send", &["POST".to_string()], "2026-01-01T00:00:01Z", 7)
                .unwrap();
            let commit = handle.until_committed().expect("a step's start is awaited");
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(commit)
                .unwrap();
            assert!(handle.until_committed().is_none());
            // Once the commit completed, another connection sees the step.
            let reader = SqliteStore::open(&path).unwrap();
            assert_eq!(reader.steps(&id).unwrap()[0].status, StepStatus::Running);
            handle
                .set_status(&id, ExecutionStatus::Succeeded, "2026-01-01T00:00:02Z")
                .unwrap();
        }
        writer.finish().unwrap();
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(
            reader.executions(Some(ExecutionStatus::Succeeded)).unwrap().len(),
            50
        );
    }

    #[test]
    fn a_failed_write_is_reported_by_the_next_call_and_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let writer = StoreWriter::start(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        let mut handle = writer.handle();
        handle
            .set_status("missing", ExecutionStatus::Failed, "2026-01-01T00:00:00Z")
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while handle.failed().is_ok() {
            assert!(std::time::Instant::now() < deadline, "the write never ran");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let next = handle.set_status("other", ExecutionStatus::Failed, "2026-01-01T00:00:00Z");
        assert_eq!(
            next.unwrap_err().to_string(),
            "store error: an earlier write failed: execution `missing` is not in the store"
        );
        drop(handle);
        assert_eq!(
            writer.finish().unwrap_err(),
            "execution `missing` is not in the store"
        );
    }
}
