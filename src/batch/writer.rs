//! Grouped store writes for a batch: one thread owns the store's connection
//! and commits the writes of many executions in one transaction.
//!
//! Each execution writes through its own [`WriterHandle`], which implements
//! [`Store`]. A write is appended to the batch's [`Journal`] and queued for
//! the writer thread, in one order for both, and no execution waits for a
//! commit. A step's start reaches the journal's file before the call
//! returns, so the step's request leaves as soon as it is there. The writer thread
//! merges the queued writes of each execution ([`Group`]), writes them,
//! and commits the group together with how far the journal is folded. When a write fails, its group is rolled back and the thread
//! writes nothing more, so the journal keeps every write from that group on.
//! When the process dies or a write failed, the next process that opens the
//! store applies the journal's remaining entries, so a sent request is never
//! missing from the store.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::store::group::Group;
use crate::store::journal::{
    BeginExecution, BeginStep, EndStep, Entry, Journal, Json, Notification, SetStatus,
};
use crate::store::sqlite::SqliteStore;
use crate::store::{
    ExecutionRecord, ExecutionStatus, ExecutionSummary, NewExecution, NotificationRecord, StepEnd,
    StepRecord, Store, StoreError,
};

/// The maximum number of writes queued for the writer thread. An execution
/// that finds the queue full waits, so a slow disk slows the batch down
/// instead of filling memory.
const QUEUE: usize = 4096;

/// The maximum number of writes in one transaction.
const MAX_GROUP: usize = 1024;

/// How long the writer thread gathers writes into a group after the first.
/// Every write is already in the journal, so waiting delays only what other
/// connections see, and larger groups write each page of the tables once
/// for many executions instead of once for each. The thread sleeps through
/// the window, and only a call wakes it early: a queued write wakes no
/// thread, which saves a system call and a context switch per write.
const GROUP_WINDOW: Duration = Duration::from_millis(10);

/// A callback that runs once the group of a call has committed or failed to commit.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A job of the writer thread.
enum Job {
    /// A journaled write: its sequence number in the journal and its line's
    /// entry, as [`Entry::encode`] made it.
    Write { seq: u64, encoded: Vec<u8> },
    /// A read, or a write a caller waits for, such as a claim.
    Call(Box<dyn FnOnce(&mut SqliteStore) -> Reply + Send>),
}

/// The first store write of a batch that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    pub message: String,
    /// Set when another process held the store's lock for too long.
    pub locked: bool,
}

impl WriteFailure {
    fn stopped() -> WriteFailure {
        WriteFailure {
            message: "the store writer stopped unexpectedly".to_string(),
            locked: false,
        }
    }
}

/// The first write that failed, shared by every handle.
type Failure = Arc<Mutex<Option<WriteFailure>>>;

/// The journal, shared by the handles that append and the thread that folds.
type SharedJournal = Arc<Mutex<Option<Journal>>>;

/// The thread that owns the store's connection.
pub struct StoreWriter {
    sender: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The writer thread, to wake it from its window.
    waker: Option<Thread>,
    failure: Failure,
    journal: SharedJournal,
}

impl StoreWriter {
    /// Creates the batch's journal beside `store` and starts the writer
    /// thread on it. Fails when the journal cannot be created, before any
    /// execution starts.
    pub fn start(store: SqliteStore) -> Result<StoreWriter, StoreError> {
        StoreWriter::with_queue(store, QUEUE)
    }

    /// Starts the writer thread with room for `queue` writes.
    fn with_queue(store: SqliteStore, queue: usize) -> Result<StoreWriter, StoreError> {
        let failure: Failure = Arc::default();
        let created = Journal::create(store.file())?;
        // The thread gets the name now: a handle may hold the journal's lock
        // while it waits for room in the queue before the thread has started.
        let name = created.name().to_string();
        let journal: SharedJournal = Arc::new(Mutex::new(Some(created)));
        let (sender, receiver) = sync_channel(queue);
        let (thread_failure, thread_journal) = (failure.clone(), journal.clone());
        let thread = std::thread::Builder::new()
            .name("flowrun-store".to_string())
            .spawn(move || write_groups(store, &receiver, &thread_failure, &thread_journal, &name))
            .ok();
        let waker = thread.as_ref().map(|thread| thread.thread().clone());
        Ok(StoreWriter {
            sender: Some(sender),
            thread,
            waker,
            failure,
            journal,
        })
    }

    /// A handle for one execution.
    pub fn handle(&self) -> WriterHandle {
        WriterHandle {
            sender: self.sender.clone(),
            waker: self.waker.clone(),
            failure: self.failure.clone(),
            journal: self.journal.clone(),
        }
    }

    /// Waits until every queued write is committed, once every handle is
    /// dropped, and returns the first write that failed. The journal is
    /// removed when no write failed. Otherwise it keeps the writes from the
    /// failed group on, for the next process that opens the store.
    pub fn finish(mut self) -> Result<(), WriteFailure> {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            // Ends the window early once the last sender is gone.
            thread.thread().unpark();
            if thread.join().is_err() {
                return Err(WriteFailure::stopped());
            }
        }
        match self.failure.lock() {
            Ok(failure) => failure.clone().map_or(Ok(()), Err),
            Err(_) => Err(WriteFailure::stopped()),
        }
    }
}

fn record_failure(failure: &Failure, error: &StoreError) {
    if let Ok(mut failure) = failure.lock() {
        failure.get_or_insert_with(|| WriteFailure {
            message: error.to_string(),
            locked: matches!(error, StoreError::Locked { .. }),
        });
    }
}

fn write_groups(
    mut store: SqliteStore,
    receiver: &Receiver<Job>,
    failure: &Failure,
    journal: &SharedJournal,
    name: &str,
) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    let mut replies = Vec::with_capacity(MAX_GROUP);
    let mut group = Group::default();
    // Any failed write rolls its whole group back, so writes need no
    // savepoint of their own. A call returns its own error to its caller,
    // and its group commits, so it keeps one.
    store.set_write_savepoints(false);
    while let Ok(job) = receiver.recv() {
        let deadline = Instant::now() + GROUP_WINDOW;
        // A call has a caller waiting for its commit, so it ends the window.
        let mut waited_for = matches!(job, Job::Call(_));
        jobs.push(job);
        while jobs.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => {
                    waited_for |= matches!(job, Job::Call(_));
                    jobs.push(job);
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if waited_for || now >= deadline {
                        break;
                    }
                    // A write does not wake this thread; a call, a full
                    // queue and `finish` do.
                    std::thread::park_timeout(deadline - now);
                }
            }
        }
        // After a failed group, nothing more is written: the journal keeps
        // every write from that group on, and the next process that opens
        // the store applies them. A dropped call returns an error to its
        // caller, saying that the writer has stopped.
        if has_failed(failure) {
            jobs.clear();
            continue;
        }
        if let Err(error) = store.begin_group() {
            record_failure(failure, &error);
            jobs.clear();
            continue;
        }
        let mut folded = None;
        let group_failed = Cell::new(false);
        let mut failed = |error: StoreError| {
            group_failed.set(true);
            record_failure(failure, &error);
        };
        for job in jobs.drain(..) {
            match job {
                Job::Write { seq, encoded } => {
                    group.push(encoded, &mut store, &mut failed);
                    folded = Some(seq);
                }
                Job::Call(call) => {
                    // The call may read what the group wrote so far.
                    group.flush(&mut store, &mut failed);
                    store.set_write_savepoints(true);
                    replies.push(call(&mut store));
                    store.set_write_savepoints(false);
                }
            }
        }
        group.flush(&mut store, &mut failed);
        if let (false, Some(seq)) = (group_failed.get(), folded) {
            if let Err(error) = store.set_journal_folded(name, seq) {
                failed(error);
            }
        }
        // A failed write rolls its whole group back, so that the journal's
        // `folded` row never passes a write that is not in the tables.
        let committed = if group_failed.get() {
            store.rollback_group();
            Err(StoreError::Other(
                "a write of its group failed, so the group was rolled back".to_string(),
            ))
        } else {
            store.commit_group()
        };
        match &committed {
            Err(error) => record_failure(failure, error),
            Ok(()) => {
                if let Some(seq) = folded {
                    rewind_if_folded(journal, seq);
                }
            }
        }
        for reply in replies.drain(..) {
            reply(committed.as_ref().err());
        }
    }
    // Every handle is gone. When every write is committed, the journal has
    // nothing left to recover; the file goes before its row, see
    // `journal::recover`. Otherwise it stays for the next process that
    // opens the store.
    if has_failed(failure) {
        return;
    }
    if let Ok(mut journal) = journal.try_lock() {
        if let Some(journal) = journal.take() {
            let name = journal.name().to_string();
            if journal.remove().is_ok() {
                let _ = store.forget_journal(&name);
            }
        }
    }
}

fn has_failed(failure: &Failure) -> bool {
    failure.lock().map_or(true, |failure| failure.is_some())
}

/// Rewinds the journal when entry `seq`, now committed, is the last one
/// appended. A handle holds the journal's lock while it waits for room in
/// the queue, so the writer thread only tries the lock: waiting for it
/// would stop the thread that makes that room.
fn rewind_if_folded(journal: &SharedJournal, seq: u64) {
    if let Ok(mut journal) = journal.try_lock() {
        if let Some(journal) = journal.as_mut().filter(|journal| journal.appended() == seq) {
            journal.rewind();
        }
    }
}

/// One execution's way to the writer thread.
pub struct WriterHandle {
    sender: Option<SyncSender<Job>>,
    waker: Option<Thread>,
    failure: Failure,
    journal: SharedJournal,
}

impl WriterHandle {
    fn failed(&self) -> Result<(), StoreError> {
        match self.failure.lock().ok().and_then(|failure| failure.clone()) {
            Some(failure) => Err(StoreError::Other(format!(
                "an earlier write failed: {}",
                failure.message
            ))),
            None => Ok(()),
        }
    }

    /// Queues `job`. A write leaves the writer thread asleep until its
    /// window ends, unless the queue is full; a call wakes it.
    fn queue(&self, job: Job) -> Result<(), StoreError> {
        let stopped = || StoreError::Other("the store writer has stopped".to_string());
        let sender = self.sender.as_ref().ok_or_else(stopped)?;
        let wake = matches!(job, Job::Call(_));
        let job = match sender.try_send(job) {
            Ok(()) => None,
            Err(TrySendError::Full(job)) => Some(job),
            Err(TrySendError::Disconnected(_)) => return Err(stopped()),
        };
        if wake || job.is_some() {
            if let Some(waker) = &self.waker {
                waker.unpark();
            }
        }
        match job {
            Some(job) => sender.send(job).map_err(|_| stopped()),
            None => Ok(()),
        }
    }

    /// Appends a write to the journal and queues its encoded entry for the
    /// writer thread, which decodes it. The entry borrows its values, so
    /// this thread copies none of them. A failure to apply it is reported
    /// by the next call of any handle, and by [`StoreWriter::finish`].
    fn write(&self, entry: Entry<'_>) -> Result<(), StoreError> {
        self.failed()?;
        let encoded = entry.encode()?;
        let stopped = || StoreError::Other("the store writer stopped unexpectedly".to_string());
        let mut journal = self.journal.lock().map_err(|_| stopped())?;
        // Only a step's start must reach the file before the call returns,
        // because the step's request follows it.
        let durable = matches!(entry, Entry::BeginStep(_));
        let seq = journal.as_mut().ok_or_else(stopped)?.append(&encoded, durable)?;
        // Queueing under the journal's lock keeps the queue in journal order.
        self.queue(Job::Write { seq, encoded })
    }

    /// Runs `call` on the writer thread and waits until its group commits.
    fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.failed()?;
        let (sender, receiver) = sync_channel(1);
        self.queue(Job::Call(Box::new(move |store| {
            let result = call(store);
            Box::new(move |commit_error: Option<&StoreError>| {
                let result = match commit_error {
                    Some(error) => Err(StoreError::Other(format!("cannot commit: {error}"))),
                    None => result,
                };
                let _ = sender.send(result);
            })
        })))?;
        receiver
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Other("the store writer has stopped".to_string())))
    }
}

impl Store for WriterHandle {
    fn begin_execution(&mut self, execution: &NewExecution<'_>) -> Result<(), StoreError> {
        self.write(Entry::BeginExecution(BeginExecution {
            id: Cow::Borrowed(execution.id),
            workflow: Cow::Borrowed(execution.workflow),
            source_path: Cow::Borrowed(execution.source_path),
            workflow_hash: Cow::Borrowed(execution.workflow_hash),
            step_hashes: Json::Borrowed(execution.step_hashes),
            step_names: Json::Borrowed(execution.step_names),
            entity: Json::Borrowed(execution.entity),
            vars: Json::Borrowed(execution.vars),
            started_at: Cow::Borrowed(execution.started_at),
            pid: execution.pid,
        }))
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
        self.write(Entry::BeginStep(BeginStep {
            id: Cow::Borrowed(id),
            index,
            name: Cow::Borrowed(name),
            methods: Json::Borrowed(methods),
            at: Cow::Borrowed(at),
            pid,
        }))
    }

    fn end_step(&mut self, id: &str, end: &StepEnd<'_>) -> Result<(), StoreError> {
        self.write(Entry::EndStep(EndStep {
            id: Cow::Borrowed(id),
            index: end.index,
            status: end.status,
            error: end.error.map(Cow::Borrowed),
            code: end.code.map(Cow::Borrowed),
            attempts: Cow::Borrowed(end.attempts),
            llm_usage: Json::Borrowed(end.llm_usage),
            entity: Json::Borrowed(end.entity),
            vars: Json::Borrowed(end.vars),
            next_step: end.next_step,
            at: Cow::Borrowed(end.at),
        }))
    }

    fn set_status(&mut self, id: &str, status: ExecutionStatus, at: &str) -> Result<(), StoreError> {
        self.write(Entry::SetStatus(SetStatus {
            id: Cow::Borrowed(id),
            status,
            at: Cow::Borrowed(at),
        }))
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
        self.write(Entry::Notification(Notification {
            id: Cow::Borrowed(id),
            notification: Cow::Borrowed(notification),
        }))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

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

    fn journals(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("store.db-batch-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn queued_writes_are_committed_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let writer = StoreWriter::start(SqliteStore::open(&path).unwrap()).unwrap();
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
            handle
                .set_status(&id, ExecutionStatus::Succeeded, "2026-01-01T00:00:02Z")
                .unwrap();
        }
        assert_eq!(journals(dir.path()).len(), 1);
        writer.finish().unwrap();
        assert_eq!(journals(dir.path()), Vec::<String>::new());
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(
            reader.executions(Some(ExecutionStatus::Succeeded)).unwrap().len(),
            50
        );
        assert_eq!(reader.journal_names().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn writer_journals_step_start_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let writer = StoreWriter::start(SqliteStore::open(&path).unwrap()).unwrap();
        let mut handle = writer.handle();
        let entity = json!({"id": "C-1"});
        handle
            .begin_execution(&new_execution("ex-1", &entity, &Map::new()))
            .unwrap();
        handle
            .begin_step(
                "ex-1",
                0,
                "send",
                &["POST".to_string()],
                "2026-01-01T00:00:01Z",
                7,
            )
            .unwrap();
        // A folded journal is rewound, not emptied, so the file contains
        // both lines whether or not the writer thread has folded them.
        let name = journals(dir.path()).pop().unwrap();
        let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        if !text.is_empty() {
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{text}");
            assert!(
                lines[0].starts_with(r#"{"seq":1,"entry":{"op":"begin_execution","id":"ex-1","#),
                "{text}"
            );
            assert_eq!(
                lines[1],
                r#"{"seq":2,"entry":{"op":"begin_step","id":"ex-1","index":0,"name":"send","methods":["POST"],"at":"2026-01-01T00:00:01Z","pid":7}}"#
            );
        }
        drop(handle);
        writer.finish().unwrap();
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(
            reader.steps("ex-1").unwrap()[0].status,
            crate::store::StepStatus::Running
        );
    }

    #[test]
    fn writer_start_fails_without_journal() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("gone");
        let path = folder.join("store.db");
        let store = SqliteStore::open(&path).unwrap();
        // The open store outlives its folder, so the journal beside it
        // cannot be created.
        std::fs::remove_dir_all(&folder).unwrap();
        let error = StoreWriter::start(store).err().expect("no journal, no writer");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot open the store `{}`: cannot create the batch journal",
                path.display()
            )),
            "{message}"
        );
    }

    #[test]
    fn writer_survives_full_queue() {
        // A handle waits for room in the queue while it holds the journal's
        // lock, and the writer thread rewinds the journal after each group.
        // With room for two writes, a writer that waited for that lock
        // would never make room again.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let writer = StoreWriter::with_queue(SqliteStore::open(&path).unwrap(), 2).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let mut handle = writer.handle();
        std::thread::spawn(move || {
            let entity = json!({"id": "C-1"});
            for index in 0..2000 {
                let id = format!("ex-{index}");
                handle
                    .begin_execution(&new_execution(&id, &entity, &Map::new()))
                    .unwrap();
                handle
                    .set_status(&id, ExecutionStatus::Succeeded, "2026-01-01T00:00:02Z")
                    .unwrap();
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the writes finished");
        writer.finish().unwrap();
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(
            reader.executions(Some(ExecutionStatus::Succeeded)).unwrap().len(),
            2000
        );
    }

    #[test]
    fn writer_keeps_uncommitted_writes_in_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let writer = StoreWriter::start(SqliteStore::open(&path).unwrap()).unwrap();
        // Another connection holds the write lock past the busy timeout.
        let blocker = rusqlite::Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut handle = writer.handle();
        let entity = json!({"id": "C-1"});
        handle
            .begin_execution(&new_execution("ex-1", &entity, &Map::new()))
            .unwrap();
        handle
            .begin_step(
                "ex-1",
                0,
                "send",
                &["POST".to_string()],
                "2026-01-01T00:00:01Z",
                7,
            )
            .unwrap();
        drop(handle);
        assert_eq!(
            writer.finish().unwrap_err(),
            WriteFailure {
                message: format!("the store `{}` is locked by another process", path.display()),
                locked: true,
            }
        );
        assert_eq!(journals(dir.path()).len(), 1);

        blocker.execute_batch("ROLLBACK").unwrap();
        drop(blocker);
        let reader = SqliteStore::open(&path).unwrap();
        let steps = reader.steps("ex-1").unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(
            (steps[0].status, steps[0].runs),
            (crate::store::StepStatus::Running, 1)
        );
        assert_eq!(journals(dir.path()), Vec::<String>::new());
        assert_eq!(reader.journal_names().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_failed_write_is_reported_by_the_next_call_and_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        let writer = StoreWriter::start(SqliteStore::open(&dir.path().join("store.db")).unwrap()).unwrap();
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
            WriteFailure {
                message: "execution `missing` is not in the store".to_string(),
                locked: false,
            }
        );
    }
}
