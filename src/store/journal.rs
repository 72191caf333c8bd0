//! The journal of a batch: each write of the batch's executions is appended
//! to a file beside the store, one JSON line, before it is queued for the
//! writer thread. A step's start is written to the file at once, with every
//! entry before it, in one `write` to the operating system. Other entries
//! wait in memory for the next step's start. A write to the operating system
//! survives a crash of the process, like a commit in WAL mode with
//! `synchronous=NORMAL`, so a step's request can leave right after its start
//! is appended, without waiting for a commit.
//!
//! The writer thread folds entries into the tables in groups. Each group
//! records, in the same transaction, the sequence number of the last entry
//! it holds, so an entry is in the tables exactly when its number is at most
//! the journal's `folded` row. When every appended entry is folded, writing
//! starts again at the start of the file. The bytes left after the new
//! entries belong to folded entries, and recovery stops at the first line
//! that does not parse, so they are never applied. The file is not
//! truncated, because freeing and allocating its blocks over and over costs
//! the file system more than overwriting them. At the end of the batch the
//! file is removed.
//!
//! The owner holds an exclusive lock on its journal for its whole life. Any
//! process that opens the store looks for journals beside it whose lock it
//! can take: their owner died, and the entries after `folded` are applied in
//! one transaction before the store is used. A journal is named
//! `STORE-batch-PID-NANOS`, so that a locked journal whose process is gone is
//! recognised as one that another opener is recovering, and waited for.

use std::borrow::Cow;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::sqlite::SqliteStore;
use super::{
    AttemptRecord, ExecutionStatus, NewExecution, NotificationRecord, StepEnd, StepStatus, Store, StoreError,
};

/// One write of an execution, with the values it writes. A handle builds it
/// from borrowed values, so encoding its journal line copies none of them.
/// The writer thread decodes the line into an entry that owns its values,
/// and keeps the JSON text of its JSON columns unparsed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry<'a> {
    BeginExecution(BeginExecution<'a>),
    BeginStep(BeginStep<'a>),
    EndStep(EndStep<'a>),
    SetStatus(SetStatus<'a>),
    Notification(Notification<'a>),
}

/// The values of [`Store::begin_execution`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeginExecution<'a> {
    pub id: Cow<'a, str>,
    pub workflow: Cow<'a, str>,
    pub source_path: Cow<'a, str>,
    pub workflow_hash: Cow<'a, str>,
    pub step_hashes: Json<'a, [String]>,
    pub step_names: Json<'a, [String]>,
    pub entity: Json<'a, Value>,
    pub vars: Json<'a, Map<String, Value>>,
    pub started_at: Cow<'a, str>,
    pub pid: u32,
}

/// The values of [`Store::begin_step`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeginStep<'a> {
    pub id: Cow<'a, str>,
    pub index: usize,
    pub name: Cow<'a, str>,
    pub methods: Json<'a, [String]>,
    pub at: Cow<'a, str>,
    pub pid: u32,
}

/// The values of [`Store::end_step`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndStep<'a> {
    pub id: Cow<'a, str>,
    pub index: usize,
    pub status: StepStatus,
    pub error: Option<Cow<'a, str>>,
    pub code: Option<Cow<'a, str>>,
    pub attempts: Cow<'a, [AttemptRecord]>,
    pub llm_usage: Json<'a, Value>,
    pub entity: Json<'a, Value>,
    pub vars: Json<'a, Map<String, Value>>,
    pub next_step: usize,
    pub at: Cow<'a, str>,
}

/// The values of [`Store::set_status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetStatus<'a> {
    pub id: Cow<'a, str>,
    pub status: ExecutionStatus,
    pub at: Cow<'a, str>,
}

/// The values of [`Store::record_notification`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification<'a> {
    pub id: Cow<'a, str>,
    pub notification: Cow<'a, NotificationRecord>,
}

/// A JSON value of an entry: borrowed, to be encoded, or the JSON text that
/// decoding read, parsed only when a write needs the value. The text is
/// the value's compact JSON, as a column of the tables stores it.
pub enum Json<'a, T: ?Sized> {
    Borrowed(&'a T),
    Text(Box<RawValue>),
}

impl<T: Serialize + ?Sized> Json<'_, T> {
    /// Returns the compact JSON text of the value.
    pub fn text(&self) -> Result<Cow<'_, str>, StoreError> {
        match self {
            Json::Borrowed(value) => serde_json::to_string(value)
                .map(Cow::Owned)
                .map_err(|err| StoreError::Other(format!("cannot encode JSON: {err}"))),
            Json::Text(text) => Ok(Cow::Borrowed(text.get())),
        }
    }

    /// Returns the JSON text of `value`, as decoding reads it.
    #[cfg(test)]
    pub fn encoded(value: &T) -> Json<'static, T> {
        Json::Text(RawValue::from_string(serde_json::to_string(value).unwrap()).unwrap())
    }
}

impl<T: ToOwned + ?Sized> Json<'_, T>
where
    T::Owned: DeserializeOwned,
{
    /// Returns the value, parsed from the text that decoding read.
    pub fn value(&self) -> Result<Cow<'_, T>, StoreError> {
        match self {
            Json::Borrowed(value) => Ok(Cow::Borrowed(*value)),
            Json::Text(text) => serde_json::from_str(text.get())
                .map(Cow::Owned)
                .map_err(|err| StoreError::Other(format!("cannot decode a journal entry: {err}"))),
        }
    }
}

impl<T: Serialize + ?Sized> Serialize for Json<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Borrowed(value) => value.serialize(serializer),
            Json::Text(text) => text.serialize(serializer),
        }
    }
}

impl<'de, T: ?Sized> Deserialize<'de> for Json<'_, T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Json::Text)
    }
}

impl<T: ?Sized> Clone for Json<'_, T> {
    fn clone(&self) -> Self {
        match self {
            Json::Borrowed(value) => Json::Borrowed(*value),
            Json::Text(text) => Json::Text(text.clone()),
        }
    }
}

impl<T: std::fmt::Debug + ?Sized> std::fmt::Debug for Json<'_, T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Json::Borrowed(value) => value.fmt(formatter),
            Json::Text(text) => text.fmt(formatter),
        }
    }
}

/// Compares the values, so that a borrowed value equals its decoded text.
impl<T: PartialEq + ToOwned + ?Sized> PartialEq for Json<'_, T>
where
    T::Owned: DeserializeOwned,
{
    fn eq(&self, other: &Self) -> bool {
        match (self.value(), other.value()) {
            (Ok(value), Ok(other)) => value == other,
            _ => false,
        }
    }
}

impl Entry<'_> {
    /// Writes the entry through `store`.
    pub fn apply(&self, store: &mut SqliteStore) -> Result<(), StoreError> {
        match self {
            Entry::BeginExecution(entry) => store.begin_execution(&NewExecution {
                id: &entry.id,
                workflow: &entry.workflow,
                source_path: &entry.source_path,
                workflow_hash: &entry.workflow_hash,
                step_hashes: &entry.step_hashes.value()?,
                step_names: &entry.step_names.value()?,
                entity: &*entry.entity.value()?,
                vars: &*entry.vars.value()?,
                started_at: &entry.started_at,
                pid: entry.pid,
            }),
            Entry::BeginStep(entry) => store.begin_step(
                &entry.id,
                entry.index,
                &entry.name,
                &entry.methods.value()?,
                &entry.at,
                entry.pid,
            ),
            Entry::EndStep(entry) => store.end_step(
                &entry.id,
                &StepEnd {
                    index: entry.index,
                    status: entry.status,
                    error: entry.error.as_deref(),
                    code: entry.code.as_deref(),
                    attempts: &entry.attempts,
                    llm_usage: &*entry.llm_usage.value()?,
                    entity: &*entry.entity.value()?,
                    vars: &*entry.vars.value()?,
                    next_step: entry.next_step,
                    at: &entry.at,
                },
            ),
            Entry::SetStatus(entry) => store.set_status(&entry.id, entry.status, &entry.at),
            Entry::Notification(entry) => store.record_notification(&entry.id, &entry.notification),
        }
    }

    /// Encodes the entry as the JSON text of one journal line: its fields
    /// after its `op`.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self)
            .map_err(|err| StoreError::Other(format!("cannot encode a journal entry: {err}")))
    }

    /// Returns the id of the execution the entry writes.
    pub fn id(&self) -> &str {
        match self {
            Entry::BeginExecution(BeginExecution { id, .. })
            | Entry::BeginStep(BeginStep { id, .. })
            | Entry::EndStep(EndStep { id, .. })
            | Entry::SetStatus(SetStatus { id, .. })
            | Entry::Notification(Notification { id, .. }) => id,
        }
    }
}

impl Entry<'static> {
    /// Decodes the JSON text of [`Entry::encode`] into an entry that owns
    /// its values. `encode` writes the `op` first, so the fields are read
    /// straight into the variant it names, which skips the `op`. The
    /// general reader of an internally tagged enum buffers every value
    /// until it finds the tag, and cannot keep the text of a [`Json`].
    pub fn decode(encoded: &[u8]) -> Result<Entry<'static>, StoreError> {
        let op = encoded
            .strip_prefix(b"{\"op\":\"")
            .and_then(|rest| rest.iter().position(|&byte| byte == b'"').map(|end| &rest[..end]));
        let decoded = match op {
            Some(b"begin_execution") => serde_json::from_slice(encoded).map(Entry::BeginExecution),
            Some(b"begin_step") => serde_json::from_slice(encoded).map(Entry::BeginStep),
            Some(b"end_step") => serde_json::from_slice(encoded).map(Entry::EndStep),
            Some(b"set_status") => serde_json::from_slice(encoded).map(Entry::SetStatus),
            Some(b"notification") => serde_json::from_slice(encoded).map(Entry::Notification),
            _ => {
                return Err(StoreError::Other(
                    "cannot decode a journal entry: it does not start with a known `op`".to_string(),
                ))
            }
        };
        decoded.map_err(|err| StoreError::Other(format!("cannot decode a journal entry: {err}")))
    }
}

/// One line of a journal file.
#[derive(Deserialize)]
struct Line {
    seq: u64,
    /// The entry, for [`Entry::decode`].
    entry: Box<RawValue>,
}

/// The journal a batch appends to; see the module documentation.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// The file name, which keys its row in the store.
    name: String,
    /// The sequence number of the last entry appended.
    appended: u64,
    /// The file offset that the entries in `buffer` are written at.
    offset: u64,
    /// Lines appended but not yet written to the file.
    buffer: Vec<u8>,
    /// Set when an append failed part way: the file may end in a partial
    /// line, so nothing more is appended.
    broken: Option<String>,
}

impl Journal {
    /// Creates and locks a new journal beside the store file `store`.
    pub fn create(store: &Path) -> Result<Journal, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let base = resolved(store);
        let name = format!("{}{}-{nanos}", prefix(&base), std::process::id());
        let path = base.with_file_name(&name);
        let failed = |err: std::io::Error| StoreError::Open {
            path: store.display().to_string(),
            reason: format!("cannot create the batch journal `{}`: {err}", path.display()),
        };
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            // Entities may hold personal data: only the owner reads the journal.
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        // Another opener recovers every unlocked journal it finds, so the
        // file takes its journal name only once it is locked.
        let unlocked = base.with_file_name(format!("{name}{UNLOCKED}"));
        let file = options.open(&unlocked).map_err(failed)?;
        let locked = file
            .try_lock()
            .map_err(std::io::Error::from)
            .and_then(|()| std::fs::rename(&unlocked, &path));
        if let Err(err) = locked {
            let _ = std::fs::remove_file(&unlocked);
            return Err(failed(err));
        }
        Ok(Journal {
            file,
            path,
            name,
            appended: 0,
            offset: 0,
            buffer: Vec::new(),
            broken: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the sequence number of the last entry appended, 0 before the first.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Appends an entry [`Entry::encode`] encoded, and returns its sequence
    /// number. A `durable` entry is written to the file, with every entry
    /// before it, before this returns. The others wait in memory for the
    /// next durable one, because the writer thread commits them to the
    /// store within a group's window anyway.
    pub fn append(&mut self, encoded: &[u8], durable: bool) -> Result<u64, StoreError> {
        if let Some(reason) = &self.broken {
            return Err(StoreError::Other(format!(
                "the batch journal is unusable: {reason}"
            )));
        }
        let seq = self.appended + 1;
        self.buffer.extend_from_slice(b"{\"seq\":");
        self.buffer.extend_from_slice(seq.to_string().as_bytes());
        self.buffer.extend_from_slice(b",\"entry\":");
        self.buffer.extend_from_slice(encoded);
        self.buffer.extend_from_slice(b"}\n");
        self.appended = seq;
        if durable {
            self.flush()?;
        }
        Ok(seq)
    }

    /// Writes the entries waiting in memory to the file.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if let Err(err) = self.file.write_all_at(&self.buffer, self.offset) {
            let reason = format!("cannot append to `{}`: {err}", self.path.display());
            self.broken = Some(reason.clone());
            return Err(StoreError::Other(reason));
        }
        self.offset += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Writes the next entry at the start of the file, once every entry
    /// appended so far is folded. Entries still in memory are folded too,
    /// so they are dropped.
    pub fn rewind(&mut self) {
        self.offset = 0;
        self.buffer.clear();
    }

    /// Removes the file, once every entry in it is folded.
    pub fn remove(mut self) -> Result<(), StoreError> {
        self.buffer.clear();
        std::fs::remove_file(&self.path)
            .map_err(|err| StoreError::Other(format!("cannot remove `{}`: {err}", self.path.display())))
    }
}

impl Drop for Journal {
    /// Writes what is still in memory, for a journal that is kept.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Returns the store file `store` with every symbolic link resolved, where
/// SQLite also puts the store's WAL file, so that every path to one store
/// puts its journals in one folder under one name.
fn resolved(store: &Path) -> PathBuf {
    std::fs::canonicalize(store).unwrap_or_else(|_| store.to_path_buf())
}

/// The suffix of a journal file's name until its lock is taken.
const UNLOCKED: &str = ".new";

/// Returns the folder of the store file `store`, where its journals are.
fn folder(store: &Path) -> PathBuf {
    match store.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Returns the start of the name of every journal of the store file `store`.
fn prefix(store: &Path) -> String {
    let file_name = store
        .file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    format!("{file_name}-batch-")
}

/// Counts the journals beside the store file `store`, those of live
/// processes included.
pub fn count(store: &Path) -> usize {
    let store_file = resolved(store);
    let prefix = prefix(&store_file);
    let directory = folder(&store_file);
    std::fs::read_dir(directory).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.strip_prefix(&prefix).and_then(owner_pid).is_some()
            })
            .count()
    })
}

/// Applies the journals beside the store whose owner died, and deletes the
/// rows of journals whose file is gone. Returns how many entries it applied.
pub fn recover(store: &mut SqliteStore) -> Result<usize, StoreError> {
    let store_file = resolved(store.file());
    let prefix = prefix(&store_file);
    let directory = folder(&store_file);
    let mut applied = 0;
    if let Ok(entries) = std::fs::read_dir(&directory) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(owner) = owner_pid(rest) {
                applied += recover_one(store, &entry.path(), &name, owner)?;
            } else if let Some(owner) = rest.strip_suffix(UNLOCKED).and_then(owner_pid) {
                // A creator died before locking its journal, so nothing
                // was written to it.
                if !process_alive(owner) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    for name in store.journal_names()? {
        if !store_file.with_file_name(&name).exists() {
            store.forget_journal(&name)?;
        }
    }
    Ok(applied)
}

/// Reads the owner's process id from the rest of a journal name, `PID-NANOS`.
fn owner_pid(rest: &str) -> Option<u32> {
    let (pid, nanos) = rest.split_once('-')?;
    nanos.bytes().all(|byte| byte.is_ascii_digit()).then_some(())?;
    pid.parse().ok()
}

fn recover_one(store: &mut SqliteStore, path: &Path, name: &str, owner: u32) -> Result<usize, StoreError> {
    // Journals are regular files. A symbolic link, a named pipe or a device
    // with a journal's name is left alone: reading it could block, never
    // end, or apply writes from a file elsewhere.
    if !std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_file()) {
        return Ok(0);
    }
    let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
        return Ok(0);
    };
    recover_opened(store, &file, path, name, owner)
}

/// Applies the journal `file`, opened from `path`, once its lock is taken.
fn recover_opened(
    store: &mut SqliteStore,
    file: &File,
    path: &Path,
    name: &str,
    owner: u32,
) -> Result<usize, StoreError> {
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) if process_alive(owner) => return Ok(0),
        // Its owner is gone, so another opener is recovering it: wait for
        // that one to finish, which takes milliseconds. A lock held longer
        // belongs to something else, and is reported rather than waited for.
        Err(TryLockError::WouldBlock) => wait_for_lock(file, path)?,
        Err(TryLockError::Error(_)) => return Ok(0),
    }
    // Another opener may have applied and removed the journal between the
    // open and the lock. Its row is gone too, so applying the file again
    // would repeat every entry: the file must still be the one at `path`.
    if !still_at(file, path) {
        return Ok(0);
    }

    let folded = store.journal_folded(name)?;
    let mut last = folded;
    let mut applied = 0;
    store.begin_group()?;
    // Entries are applied as they are read, so memory does not grow with
    // the journal.
    for line in BufReader::new(file).split(b'\n') {
        let Ok(line) = line else { break };
        // A line that does not parse was cut short by the crash, and its
        // request was never sent, because sending waits for the append.
        let Some((seq, entry)) = serde_json::from_slice::<Line>(&line)
            .ok()
            .and_then(|line| Some((line.seq, Entry::decode(line.entry.get().as_bytes()).ok()?)))
        else {
            break;
        };
        if seq > last {
            last = seq;
            applied += 1;
            // An entry that fails here failed in the writer thread as well,
            // so it is skipped as it was there.
            let _ = entry.apply(store);
        }
    }
    store.set_journal_folded(name, last)?;
    store.commit_group()?;
    // Removing the file before the row: a row without a file is forgotten
    // later, but a file without its row would be applied again.
    let _ = std::fs::remove_file(path);
    store.forget_journal(name)?;
    Ok(applied)
}

/// How long an opener waits for a journal whose owner is gone.
const JOURNAL_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits up to [`JOURNAL_LOCK_WAIT`] for the lock on `file`, and fails
/// with [`StoreError::Locked`] naming `path` after that.
fn wait_for_lock(file: &File, path: &Path) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + JOURNAL_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(_) => {
                return Err(StoreError::Locked {
                    path: path.display().to_string(),
                })
            }
        }
    }
}

/// Checks whether `file` is the regular file that `path` names.
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(opened), Ok(named)) => {
            named.file_type().is_file() && opened.dev() == named.dev() && opened.ino() == named.ino()
        }
        _ => false,
    }
}

/// Checks whether `file` is the regular file that `path` names. Without
/// inode numbers, it checks whether a regular file is still there.
#[cfg(not(unix))]
fn still_at(file: &File, path: &Path) -> bool {
    file.metadata().is_ok_and(|metadata| metadata.is_file())
        && std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_file())
}

/// Checks whether process `pid` exists. Where `/proc` is missing, every process
/// counts as alive, so a locked journal is left to its owner.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.exists() || proc.join(pid.to_string()).exists()
}

/// Builds the `begin_execution` entry of a test execution of workflow
/// `claims` with steps `step_names`, its entity `{"id": ID}`.
#[cfg(test)]
pub(super) fn begin_execution_entry(id: &str, step_names: &[&str]) -> Entry<'static> {
    Entry::BeginExecution(BeginExecution {
        id: id.to_string().into(),
        workflow: "claims".into(),
        source_path: "/claims.flow".into(),
        workflow_hash: "h".into(),
        step_hashes: Json::encoded(
            &step_names
                .iter()
                .map(|name| format!("hash of {name}"))
                .collect::<Vec<_>>()[..],
        ),
        step_names: Json::encoded(&step_names.iter().map(|name| name.to_string()).collect::<Vec<_>>()[..]),
        entity: Json::encoded(&serde_json::json!({ "id": id })),
        vars: Json::encoded(&Map::new()),
        started_at: "2026-01-01T00:00:00Z".into(),
        pid: 7,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn begin_execution(id: &str) -> Entry<'static> {
        begin_execution_entry(id, &["send"])
    }

    fn begin_step(id: &str) -> Entry<'static> {
        Entry::BeginStep(BeginStep {
            id: id.to_string().into(),
            index: 0,
            name: "send".into(),
            methods: Json::encoded(&["POST".to_string()][..]),
            at: "2026-01-01T00:00:01Z".into(),
            pid: 7,
        })
    }

    fn end_step(id: &str) -> Entry<'static> {
        Entry::EndStep(EndStep {
            id: id.to_string().into(),
            index: 0,
            status: StepStatus::Succeeded,
            error: None,
            code: None,
            attempts: Cow::Owned(vec![AttemptRecord {
                action: 0,
                number: 1,
                method: "POST".to_string(),
                url: "http://127.0.0.1:9/claims".to_string(),
                status_code: Some(201),
                duration_ms: 3,
                waited_ms: 0,
                error: None,
            }]),
            llm_usage: Json::encoded(&json!([])),
            entity: Json::encoded(&json!({"id": id, "sent": true})),
            vars: Json::encoded(&Map::new()),
            next_step: 1,
            at: "2026-01-01T00:00:02Z".into(),
        })
    }

    fn append(journal: &mut Journal, entry: &Entry<'_>) -> u64 {
        journal.append(&entry.encode().unwrap(), true).unwrap()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("-batch-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn entries_round_trip_through_a_line() {
        for entry in [begin_execution("ex-1"), begin_step("ex-1"), end_step("ex-1")] {
            let text = format!(
                r#"{{"seq":4,"entry":{}}}"#,
                String::from_utf8(entry.encode().unwrap()).unwrap()
            );
            let line: Line = serde_json::from_str(&text).unwrap();
            let decoded = Entry::decode(line.entry.get().as_bytes()).unwrap();
            assert_eq!((line.seq, decoded), (4, entry));
        }
    }

    /// Journal lines written by the build before entries were encoded from
    /// borrowed values, copied from a batch killed while it ran.
    const EARLIER_LINES: [&str; 4] = [
        r#"{"seq":1,"entry":{"op":"begin_execution","id":"e1b410f6-3352-42da-85e7-32a7ca4a1cac","workflow":"Batch benchmark","source_path":"/work/main/target/bench-batch/claims.flow","workflow_hash":"677f7f5e606cb94b0ea12120da01552097876a34dc1665ef90b2ba582de546b0","step_hashes":["e6ebef88aae4a98dfed172bb21d06c5dc2933c4b41df16412a1315655df69117"],"step_names":["Send claim"],"entity":{"id":"C-0","source":"batch","amount":0.0,"holder":"Holder 0"},"vars":{"base":"http://127.0.0.1:44903"},"started_at":"2026-12-05T10:56:01.259980301Z","pid":29095}}"#,
        r#"{"seq":2,"entry":{"op":"begin_step","id":"e1b410f6-3352-42da-85e7-32a7ca4a1cac","index":0,"name":"Send claim","methods":["POST"],"at":"2026-12-05T10:56:01.260004976Z","pid":29095}}"#,
        r#"{"seq":3,"entry":{"op":"end_step","id":"e1b410f6-3352-42da-85e7-32a7ca4a1cac","index":0,"status":"succeeded","error":null,"code":null,"attempts":[{"action":0,"number":1,"method":"POST","url":"http://127.0.0.1:44903/claims/C-0?source=batch","status_code":200,"duration_ms":0,"waited_ms":0,"error":null}],"llm_usage":[],"entity":{"id":"C-0","source":"batch","amount":0.0,"holder":"Holder 0","status":"ok"},"vars":{"base":"http://127.0.0.1:44903"},"next_step":1,"at":"2026-12-05T10:56:01.260409842Z"}}"#,
        r#"{"seq":4,"entry":{"op":"set_status","id":"e1b410f6-3352-42da-85e7-32a7ca4a1cac","status":"succeeded","at":"2026-12-05T10:56:01.260418777Z"}}"#,
    ];

    #[test]
    fn earlier_journal_lines_decode_unchanged() {
        let id = "e1b410f6-3352-42da-85e7-32a7ca4a1cac";
        let vars = json!({"base": "http://127.0.0.1:44903"})
            .as_object()
            .unwrap()
            .clone();
        let step_hashes = ["e6ebef88aae4a98dfed172bb21d06c5dc2933c4b41df16412a1315655df69117".to_string()];
        let step_names = ["Send claim".to_string()];
        let methods = ["POST".to_string()];
        let entity = json!({"id": "C-0", "source": "batch", "amount": 0.0, "holder": "Holder 0"});
        let entity_after =
            json!({"id": "C-0", "source": "batch", "amount": 0.0, "holder": "Holder 0", "status": "ok"});
        let llm_usage = json!([]);
        // Built from borrowed values, as a handle builds them.
        let expected = [
            Entry::BeginExecution(BeginExecution {
                id: id.into(),
                workflow: "Batch benchmark".into(),
                source_path: "/work/main/target/bench-batch/claims.flow".into(),
                workflow_hash: "677f7f5e606cb94b0ea12120da01552097876a34dc1665ef90b2ba582de546b0".into(),
                step_hashes: Json::Borrowed(&step_hashes),
                step_names: Json::Borrowed(&step_names),
                entity: Json::Borrowed(&entity),
                vars: Json::Borrowed(&vars),
                started_at: "2026-12-05T10:56:01.259980301Z".into(),
                pid: 29095,
            }),
            Entry::BeginStep(BeginStep {
                id: id.into(),
                index: 0,
                name: "Send claim".into(),
                methods: Json::Borrowed(&methods),
                at: "2026-12-05T10:56:01.260004976Z".into(),
                pid: 29095,
            }),
            Entry::EndStep(EndStep {
                id: id.into(),
                index: 0,
                status: StepStatus::Succeeded,
                error: None,
                code: None,
                attempts: Cow::Owned(vec![AttemptRecord {
                    action: 0,
                    number: 1,
                    method: "POST".to_string(),
                    url: "http://127.0.0.1:44903/claims/C-0?source=batch".to_string(),
                    status_code: Some(200),
                    duration_ms: 0,
                    waited_ms: 0,
                    error: None,
                }]),
                llm_usage: Json::Borrowed(&llm_usage),
                entity: Json::Borrowed(&entity_after),
                vars: Json::Borrowed(&vars),
                next_step: 1,
                at: "2026-12-05T10:56:01.260409842Z".into(),
            }),
            Entry::SetStatus(SetStatus {
                id: id.into(),
                status: ExecutionStatus::Succeeded,
                at: "2026-12-05T10:56:01.260418777Z".into(),
            }),
        ];
        for (seq, (text, expected)) in EARLIER_LINES.iter().zip(expected).enumerate() {
            let line: Line = serde_json::from_str(text).unwrap();
            let decoded = Entry::decode(line.entry.get().as_bytes()).unwrap();
            assert_eq!((line.seq, &decoded), (seq as u64 + 1, &expected));
            let encoded = expected.encode().unwrap();
            let prefix = format!(r#"{{"seq":{},"entry":"#, seq + 1);
            assert_eq!(
                String::from_utf8(encoded.clone()).unwrap(),
                text[prefix.len()..text.len() - 1]
            );
            assert_eq!(Entry::decode(&encoded).unwrap(), expected);
        }
    }

    #[test]
    fn every_entry_variant_round_trips() {
        let notification = NotificationRecord {
            step: "send".to_string(),
            severity: "error".to_string(),
            error: "HTTP 503".to_string(),
            channels: vec!["stderr".to_string(), "webhook".to_string()],
            delivery_error: Some("connection refused".to_string()),
            sent_at: "2026-01-01T00:00:03Z".to_string(),
        };
        let failed_end = match end_step("ex-1") {
            Entry::EndStep(end) => Entry::EndStep(EndStep {
                status: StepStatus::Failed,
                error: Some("HTTP 503".into()),
                code: Some("flow::run::http_status".into()),
                llm_usage: Json::encoded(&json!([{"model": "m", "prompt_tokens": 3}])),
                ..end
            }),
            other => other,
        };
        let entries = [
            begin_execution("ex-1"),
            begin_step("ex-1"),
            end_step("ex-1"),
            failed_end,
            Entry::SetStatus(SetStatus {
                id: "ex-1".into(),
                status: ExecutionStatus::Paused,
                at: "2026-01-01T00:00:04Z".into(),
            }),
            Entry::Notification(Notification {
                id: "ex-1".into(),
                notification: Cow::Borrowed(&notification),
            }),
        ];
        for entry in entries {
            let encoded = entry.encode().unwrap();
            let decoded = Entry::decode(&encoded).unwrap();
            assert_eq!(decoded, entry);
            assert_eq!(decoded.encode().unwrap(), encoded);
        }
    }

    #[test]
    fn decoded_json_keeps_encoded_text() {
        let text = r#"{"id":"C-1","amount":1.250,"note":"a\"b\u00e9"}"#;
        let entity: Value = serde_json::from_str(text).unwrap();
        let (names, vars) = (["send".to_string()], Map::new());
        let entry = Entry::BeginExecution(BeginExecution {
            id: "ex-1".into(),
            workflow: "claims".into(),
            source_path: "/claims.flow".into(),
            workflow_hash: "h".into(),
            step_hashes: Json::Borrowed(&names),
            step_names: Json::Borrowed(&names),
            entity: Json::Borrowed(&entity),
            vars: Json::Borrowed(&vars),
            started_at: "2026-01-01T00:00:00Z".into(),
            pid: 7,
        });
        let Entry::BeginExecution(decoded) = Entry::decode(&entry.encode().unwrap()).unwrap() else {
            panic!("not a begin_execution entry");
        };
        let decoded_text = decoded.entity.text().unwrap();
        assert!(matches!(decoded_text, Cow::Borrowed(_)));
        assert_eq!(decoded_text, r#"{"id":"C-1","amount":1.250,"note":"a\"bé"}"#);
        assert_eq!(decoded.vars.text().unwrap(), "{}");
        assert_eq!(decoded.step_names.text().unwrap(), r#"["send"]"#);
        assert_eq!(*decoded.entity.value().unwrap(), entity);
    }

    #[test]
    fn entry_without_leading_op_rejected() {
        let text = r#"{"id":"ex-1","status":"failed","at":"2026-01-01T00:00:04Z","op":"set_status"}"#;
        assert_eq!(
            Entry::decode(text.as_bytes()).unwrap_err().to_string(),
            "store error: cannot decode a journal entry: it does not start with a known `op`"
        );
    }

    #[test]
    fn abandoned_journal_applies_entries_after_folded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let mut journal = Journal::create(&path).unwrap();
        let first = begin_execution("ex-1");
        assert_eq!(append(&mut journal, &first), 1);
        assert_eq!(append(&mut journal, &begin_step("ex-1")), 2);
        assert_eq!(append(&mut journal, &end_step("ex-1")), 3);
        // The writer thread folded the first entry before the process died.
        first.apply(&mut store).unwrap();
        store.set_journal_folded(journal.name(), 1).unwrap();
        let name = journal.name().to_string();
        drop(journal);
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        let steps = store.steps("ex-1").unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].status, StepStatus::Succeeded);
        assert_eq!(steps[0].runs, 1);
        assert_eq!(steps[0].attempts.len(), 1);
        assert_eq!(steps[0].attempts[0].status_code, Some(201));
        let record = store.execution("ex-1").unwrap();
        assert_eq!(record.entity, json!({"id": "ex-1", "sent": true}));
        assert_eq!(record.next_step, 1);
        assert!(!dir.path().join(&name).exists());
        assert_eq!(store.journal_names().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn journal_partial_last_line_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteStore::open(&path).unwrap());
        let mut journal = Journal::create(&path).unwrap();
        append(&mut journal, &begin_execution("ex-1"));
        append(&mut journal, &begin_step("ex-1"));
        let end = String::from_utf8(end_step("ex-1").encode().unwrap()).unwrap();
        let partial = format!(r#"{{"seq":3,"entry":{}"#, &end[..end.len() / 2]);
        journal
            .file
            .write_all_at(partial.as_bytes(), journal.offset)
            .unwrap();
        drop(journal);

        let store = SqliteStore::open(&path).unwrap();
        let steps = store.steps("ex-1").unwrap();
        assert_eq!(steps[0].status, StepStatus::Running);
        assert_eq!(steps[0].attempts, Vec::new());
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn journal_step_start_writes_earlier_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("store.db")).unwrap();
        let path = journal.path.clone();
        let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
        let encoded = |entry: Entry<'_>| entry.encode().unwrap();

        journal.append(&encoded(begin_execution("ex-1")), false).unwrap();
        assert_eq!(lines(), 0);
        journal.append(&encoded(begin_step("ex-1")), true).unwrap();
        assert_eq!(lines(), 2);
        journal.append(&encoded(end_step("ex-1")), false).unwrap();
        assert_eq!(lines(), 2);
        // A journal that is dropped, not removed, keeps what was in memory.
        drop(journal);
        assert_eq!(lines(), 3);
    }

    #[test]
    fn rewound_journal_applies_new_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let mut journal = Journal::create(&path).unwrap();
        let name = journal.name().to_string();
        for entry in life_of("ex-1") {
            append(&mut journal, &entry);
            entry.apply(&mut store).unwrap();
        }
        store.set_journal_folded(&name, 3).unwrap();
        journal.rewind();
        // The new entry is shorter than the folded ones it overwrites.
        let status = Entry::SetStatus(SetStatus {
            id: "ex-1".into(),
            status: ExecutionStatus::Paused,
            at: "2026-01-01T00:00:09Z".into(),
        });
        assert_eq!(append(&mut journal, &status), 4);
        drop(journal);
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        let record = store.execution("ex-1").unwrap();
        assert_eq!(record.status, ExecutionStatus::Paused);
        assert_eq!(record.updated_at, "2026-01-01T00:00:09Z");
        let steps = store.steps("ex-1").unwrap();
        assert_eq!(steps[0].runs, 1);
        assert_eq!(steps[0].attempts.len(), 1);
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    fn life_of(id: &str) -> Vec<Entry<'static>> {
        vec![begin_execution(id), begin_step(id), end_step(id)]
    }

    #[test]
    fn journal_lock_after_dead_owner_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteStore::open(&path).unwrap());
        // No process has this id: Linux allocates ids below 4,194,304.
        let journal = dir.path().join("store.db-batch-4194304-1");
        std::fs::write(&journal, "").unwrap();
        let holder = File::open(&journal).unwrap();
        holder.lock().unwrap();

        let started = std::time::Instant::now();
        let error = SqliteStore::open(&path).unwrap_err();
        assert!(started.elapsed() >= JOURNAL_LOCK_WAIT);
        assert_eq!(
            error.to_string(),
            format!("the store `{}` is locked by another process", journal.display())
        );
        drop(holder);
        assert!(SqliteStore::open(&path).is_ok());
    }

    #[test]
    fn journal_of_live_owner_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteStore::open(&path).unwrap());
        let mut journal = Journal::create(&path).unwrap();
        append(&mut journal, &begin_execution("ex-1"));

        let store = SqliteStore::open(&path).unwrap();
        assert!(matches!(
            store.execution("ex-1"),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(files(dir.path()), vec![journal.name().to_string()]);
    }

    #[test]
    fn journal_being_created_left_to_its_creator() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteStore::open(&path).unwrap());
        // Set on the way out of the scope, panicking or not, to end the
        // other opener before the scope waits for it.
        struct SetOnDrop<'a>(&'a AtomicBool);
        impl Drop for SetOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let _done = SetOnDrop(&done);
            // Another opener keeps looking for journals to recover while
            // this one creates its own.
            scope.spawn(|| {
                let mut store = SqliteStore::open(&path).unwrap();
                while !done.load(Ordering::Relaxed) {
                    recover(&mut store).unwrap();
                }
            });
            for _ in 0..500 {
                let created: Vec<Journal> = (0..8).map(|_| Journal::create(&path).unwrap()).collect();
                for journal in created {
                    assert!(journal.path.exists(), "{} was removed", journal.name());
                    journal.remove().unwrap();
                }
            }
        });
    }

    #[test]
    fn unlocked_journal_of_dead_creator_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let dead = dir.path().join("store.db-batch-4194304-1.new");
        let live = dir
            .path()
            .join(format!("store.db-batch-{}-1.new", std::process::id()));
        std::fs::write(&dead, "").unwrap();
        std::fs::write(&live, "").unwrap();

        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(
            files(dir.path()),
            vec![format!("store.db-batch-{}-1.new", std::process::id())]
        );
    }

    #[test]
    fn journal_applied_by_another_opener_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteStore::open(&path).unwrap());
        let mut journal = Journal::create(&path).unwrap();
        append(&mut journal, &begin_execution("ex-1"));
        append(&mut journal, &begin_step("ex-1"));
        let (name, journal_path) = (journal.name().to_string(), journal.path.clone());
        drop(journal);
        // This opener opens the file; another applies and removes it
        // before this one takes the lock.
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&journal_path)
            .unwrap();
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.steps("ex-1").unwrap()[0].runs, 1);

        assert_eq!(
            recover_opened(&mut store, &opened, &journal_path, &name, 7).unwrap(),
            0
        );
        let steps = store.steps("ex-1").unwrap();
        assert_eq!((steps.len(), steps[0].runs), (1, 1));
        assert_eq!(store.journal_names().unwrap(), Vec::<String>::new());
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_link_named_like_journal_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(SqliteStore::open(&path).unwrap());
        let elsewhere = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&elsewhere.path().join("store.db")).unwrap();
        append(&mut journal, &begin_execution("ex-1"));
        let target = journal.path.clone();
        drop(journal);
        let link = dir.path().join("store.db-batch-1-2");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let store = SqliteStore::open(&path).unwrap();
        assert!(matches!(
            store.execution("ex-1"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn journal_of_linked_store_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let path = dir.path().join("data").join("store.db");
        drop(SqliteStore::open(&path).unwrap());
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let mut journal = Journal::create(&link).unwrap();
        append(&mut journal, &begin_execution("ex-1"));
        assert!(
            journal.name().starts_with("store.db-batch-"),
            "{}",
            journal.name()
        );
        drop(journal);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.execution("ex-1").unwrap().entity, json!({"id": "ex-1"}));
        assert_eq!(files(&dir.path().join("data")), Vec::<String>::new());
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn journal_row_without_file_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.set_journal_folded("store.db-batch-1-2", 9).unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.journal_names().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn names_carry_the_owner_process() {
        assert_eq!(owner_pid("123-456"), Some(123));
        assert_eq!(owner_pid("123-45x"), None);
        assert_eq!(owner_pid("abc-456"), None);
        assert_eq!(owner_pid("123"), None);
    }

    #[cfg(unix)]
    #[test]
    fn only_the_owner_reads_a_journal() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::create(&dir.path().join("store.db")).unwrap();
        let mode = std::fs::metadata(&journal.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
