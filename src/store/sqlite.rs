//! The embedded [`Store`]: one SQLite file in write-ahead-log mode, one
//! `BEGIN IMMEDIATE` transaction per write, so that several flowrun processes
//! can share a file and a killed process leaves only whole writes behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::group::FreshExecution;
use super::{
    AttemptRecord, ExecutionRecord, ExecutionStatus, ExecutionSummary, NewExecution, NotificationRecord,
    StepEnd, StepRecord, StepStatus, Store, StoreError,
};

/// Inserts one request attempt of a step's run.
const INSERT_ATTEMPT: &str =
    "INSERT INTO attempts (execution_id, step_idx, run, action, number, method, url, \
     status_code, duration_ms, waited_ms, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Runs [`INSERT_ATTEMPT`] for `attempt`, made in run `run` of step `index`.
fn insert_attempt_row(
    statement: &mut rusqlite::CachedStatement<'_>,
    id: &str,
    index: usize,
    run: u32,
    attempt: &AttemptRecord,
) -> rusqlite::Result<usize> {
    statement.execute(params![
        id,
        index,
        run,
        attempt.action,
        attempt.number,
        attempt.method,
        attempt.url,
        attempt.status_code,
        attempt.duration_ms,
        attempt.waited_ms,
        attempt.error,
    ])
}

/// The schema this code reads and writes, kept in `PRAGMA user_version`. A
/// file with a higher version was written by a newer flowrun and is rejected
/// rather than misread.
const SCHEMA_VERSION: i64 = 3;

/// How long a statement waits for another process's lock before failing with
/// [`StoreError::Locked`]. A write holds the lock for well under a millisecond,
/// so a wait this long means the other process holds a long transaction or is
/// stuck, and failing reports that sooner than waiting longer.
/// How long `open` keeps trying while another process initialises the store.
const OPEN_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Room for every statement this file prepares (about 35), so that none is
/// evicted and parsed again on each call.
const STATEMENT_CACHE_CAPACITY: usize = 64;

// JSON columns are TEXT in STRICT tables, because under NUMERIC affinity SQLite
// would turn a value such as `12345678901234567890123` into a lossy REAL.
// The status checks compare with `=` and `OR`: SQLite builds a temporary
// table for a list after `IN` each time a row is written, which took a
// third of the store's work in a batch.
const SCHEMA: &str = "
CREATE TABLE executions (
    id TEXT PRIMARY KEY NOT NULL,
    workflow TEXT NOT NULL,
    source_path TEXT NOT NULL,
    workflow_hash TEXT NOT NULL,
    step_hashes TEXT NOT NULL,
    step_names TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status = 'running' OR status = 'succeeded' OR status = 'failed' OR status = 'paused'),
    entity_before TEXT NOT NULL,
    entity TEXT NOT NULL,
    vars TEXT NOT NULL,
    next_step INTEGER NOT NULL CHECK (next_step >= 0),
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    pid INTEGER NOT NULL
) STRICT;
CREATE INDEX executions_by_started_at ON executions (started_at, id);
CREATE INDEX executions_by_status ON executions (status, started_at, id);

CREATE TABLE steps (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL CHECK (idx >= 0),
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (
        status = 'running' OR status = 'succeeded' OR status = 'failed_continued' OR status = 'failed_silently'
        OR status = 'failed' OR status = 'outcome_unknown'
    ),
    runs INTEGER NOT NULL CHECK (runs >= 1),
    started_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT,
    code TEXT,
    methods TEXT NOT NULL,
    llm_usage TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (execution_id, idx)
) STRICT;

CREATE TABLE attempts (
    execution_id TEXT NOT NULL,
    step_idx INTEGER NOT NULL,
    run INTEGER NOT NULL,
    action INTEGER NOT NULL,
    number INTEGER NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    status_code INTEGER,
    duration_ms INTEGER NOT NULL,
    waited_ms INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (execution_id, step_idx, run, action, number),
    FOREIGN KEY (execution_id, step_idx) REFERENCES steps (execution_id, idx) ON DELETE CASCADE
) STRICT;

CREATE TABLE notifications (
    seq INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step TEXT NOT NULL,
    severity TEXT NOT NULL,
    error TEXT NOT NULL,
    channels TEXT NOT NULL,
    delivery_error TEXT,
    sent_at TEXT NOT NULL
) STRICT;
CREATE INDEX notifications_by_execution ON notifications (execution_id, seq);
";

/// The status checks of versions 1 and 2, and what version 3 has instead.
const STATUS_CHECKS: [(&str, &str); 2] = [
    (
        "status IN ('running', 'succeeded', 'failed', 'paused')",
        "status = 'running' OR status = 'succeeded' OR status = 'failed' OR status = 'paused'",
    ),
    (
        "status IN ('running', 'succeeded', 'failed_continued', 'failed_silently', 'failed', 'outcome_unknown')",
        "status = 'running' OR status = 'succeeded' OR status = 'failed_continued' OR status = 'failed_silently'\n        \
         OR status = 'failed' OR status = 'outcome_unknown'",
    ),
];

/// The table version 2 added: how far each batch journal is folded into
/// the tables, see [`super::journal`].
const JOURNALS: &str = "
CREATE TABLE journals (
    name TEXT PRIMARY KEY NOT NULL,
    folded INTEGER NOT NULL CHECK (folded >= 0)
) STRICT;
";

const EXECUTION_COLUMNS: &str = "id, workflow, source_path, workflow_hash, step_hashes, step_names, status, \
     entity_before, entity, vars, next_step, started_at, updated_at, finished_at, pid";

/// An execution store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// The file path as shown in error messages.
    path: String,
    /// The file path as given to `open`.
    file: PathBuf,
    /// Whether each write inside a group gets a savepoint, see
    /// [`SqliteStore::set_write_savepoints`].
    write_savepoints: bool,
    /// Set when SQLite opened the file for reading only, because this
    /// process may not write it.
    read_only: bool,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file, its parent directories and
    /// the schema when missing, and checks that the file is a flowrun store of
    /// a schema version this code reads.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        // Switching a new file to WAL takes an exclusive lock that SQLite's
        // busy handler does not wait for, so two processes that open a new
        // store at once see SQLITE_BUSY; opening again succeeds once the
        // other has finished.
        let deadline = std::time::Instant::now() + OPEN_RETRY_WINDOW;
        let mut store = loop {
            match SqliteStore::open_once(path) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                result => break result?,
            }
        };
        // A read-only store cannot take the writes of a batch journal. It
        // can still be read, as of its last commit.
        if !store.read_only {
            super::journal::recover(&mut store)?;
        }
        Ok(store)
    }

    /// Opens the store at `path` as [`SqliteStore::open`] does, and fails
    /// with [`StoreError::ReadOnly`] when this process may not write it.
    pub fn open_writable(path: &Path) -> Result<SqliteStore, StoreError> {
        let store = SqliteStore::open(path)?;
        if store.read_only {
            return Err(StoreError::ReadOnly { path: store.path });
        }
        // SQLite creates `-wal` and `-shm` with the store file's mode, so a
        // read of a read-only store leaves them read-only. Only metadata is
        // read, because closing an opened copy drops SQLite's POSIX locks.
        #[cfg(unix)]
        for suffix in ["-wal", "-shm"] {
            use std::os::unix::fs::PermissionsExt;
            let mut sidecar = path.as_os_str().to_owned();
            sidecar.push(suffix);
            let sidecar = PathBuf::from(sidecar);
            let read_only =
                std::fs::metadata(&sidecar).is_ok_and(|metadata| metadata.permissions().mode() & 0o222 == 0);
            if read_only {
                return Err(StoreError::ReadOnly {
                    path: sidecar.display().to_string(),
                });
            }
        }
        Ok(store)
    }

    /// Returns whether the file is open for reading only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Returns the file path as given to [`SqliteStore::open`].
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn open_once(path: &Path) -> Result<SqliteStore, StoreError> {
        let display_path = path.display().to_string();
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                path: display_path.clone(),
                reason: format!("cannot create the directory `{}`: {err}", parent.display()),
            })?;
        }

        let mut conn = Connection::open(path).map_err(|err| open_error(&display_path, err))?;
        configure(&conn, &display_path)?;
        // No integrity check runs here: `PRAGMA quick_check` reads every page,
        // which made opening a 95 MB store take 45 ms. A damaged page fails
        // the query that reads it with SQLITE_CORRUPT, which maps to
        // `StoreError::Corrupt` like a file that is not a database at all.

        let mut version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|err| open_error(&display_path, err))?;
        if version == 0 {
            version = create_schema(&mut conn, &display_path)?;
        }
        if version == 1 {
            version = upgrade(&mut conn, &display_path, 1, add_journals)?;
        }
        if version == 2 {
            version = upgrade(&mut conn, &display_path, 2, rewrite_status_checks)?;
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Open {
                path: display_path,
                reason: format!(
                    "the store has schema version {version}, but this flowrun reads only version \
                     {SCHEMA_VERSION}; use a newer flowrun"
                ),
            });
        }
        if version < 0 {
            return Err(StoreError::Corrupt {
                path: display_path,
                reason: format!("invalid schema version {version}"),
            });
        }

        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let read_only = conn
            .is_readonly(rusqlite::DatabaseName::Main)
            .map_err(|err| open_error(&display_path, err))?;
        Ok(SqliteStore {
            conn,
            path: display_path,
            file: path.to_path_buf(),
            write_savepoints: true,
            read_only,
        })
    }

    /// Opens a group: the writes that follow share one transaction, which
    /// [`SqliteStore::commit_group`] commits. Each write still succeeds or
    /// fails as a whole, as a savepoint. Until the group commits, its writes
    /// are invisible to other connections and lost if the process dies.
    pub fn begin_group(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").at(&self.path)
    }

    /// Sets whether each write inside a group gets a savepoint, so that a
    /// failed write undoes only itself; it does by default. Without one, a
    /// failed write may leave part of its rows written, and the group must
    /// then be rolled back. A savepoint copies every page its write touches,
    /// which a writer that rolls back the whole group on any failure does
    /// not need.
    pub fn set_write_savepoints(&mut self, on: bool) {
        self.write_savepoints = on;
    }

    /// Commits the group [`SqliteStore::begin_group`] opened. When the commit
    /// fails, every write of the group is rolled back.
    pub fn commit_group(&mut self) -> Result<(), StoreError> {
        let committed = self.conn.execute_batch("COMMIT").at(&self.path);
        if committed.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        committed
    }

    /// Rolls back the group [`SqliteStore::begin_group`] opened, undoing
    /// every write in it.
    pub fn rollback_group(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Inserts executions that began in the current group as their rows
    /// are after the group's entries, preparing each statement once for
    /// all of them. Returns the positions, in `executions`, of those whose
    /// id is taken, for which nothing is written.
    ///
    /// The rows are one write: after an error, some rows may be written
    /// when the store writes without savepoints, see
    /// [`SqliteStore::set_write_savepoints`].
    pub fn insert_fresh<'e>(
        &mut self,
        executions: impl IntoIterator<Item = &'e FreshExecution>,
    ) -> Result<Vec<usize>, StoreError> {
        let path = &self.path;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        let mut taken_positions = Vec::new();
        {
            let mut insert_execution = tx
                .prepare_cached(
                    "INSERT INTO executions (id, workflow, source_path, workflow_hash, step_hashes, step_names, \
                     status, entity_before, entity, vars, next_step, started_at, updated_at, finished_at, pid) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .at(path)?;
            let mut insert_step = tx
                .prepare_cached(
                    "INSERT INTO steps (execution_id, idx, name, status, runs, started_at, finished_at, error, \
                     code, methods, llm_usage) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .at(path)?;
            let mut insert_attempt = tx.prepare_cached(INSERT_ATTEMPT).at(path)?;
            for (position, execution) in executions.into_iter().enumerate() {
                let inserted = insert_execution
                    .execute(params![
                        execution.id,
                        execution.workflow,
                        execution.source_path,
                        execution.workflow_hash,
                        execution.step_hashes.text()?,
                        execution.step_names.text()?,
                        execution.status.as_str(),
                        execution.entity_before.text()?,
                        execution.entity.text()?,
                        execution.vars.text()?,
                        execution.next_step,
                        execution.started_at,
                        execution.updated_at,
                        execution.finished_at,
                        execution.pid,
                    ])
                    .at(path)?;
                if inserted == 0 {
                    taken_positions.push(position);
                    continue;
                }
                for step in &execution.steps {
                    insert_step
                        .execute(params![
                            execution.id,
                            step.index,
                            step.name,
                            step.status.as_str(),
                            step.started_at,
                            step.finished_at,
                            step.error,
                            step.code,
                            step.methods.text()?,
                            match &step.llm_usage {
                                Some(llm_usage) => llm_usage.text()?,
                                None => "[]".into(),
                            },
                        ])
                        .at(path)?;
                    for attempt in &step.attempts {
                        insert_attempt_row(&mut insert_attempt, &execution.id, step.index, 1, attempt)
                            .at(path)?;
                    }
                }
                for notification in &execution.notifications {
                    tx.prepare_cached(
                        "INSERT INTO notifications (execution_id, step, severity, error, channels, \
                         delivery_error, sent_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .at(path)?
                    .execute(params![
                        execution.id,
                        notification.step,
                        notification.severity,
                        notification.error,
                        to_json(&notification.channels)?,
                        notification.delivery_error,
                        notification.sent_at,
                    ])
                    .at(path)?;
                }
            }
        }
        tx.commit().at(path)?;
        Ok(taken_positions)
    }

    /// Returns the sequence number of the last entry of journal `name` that
    /// is folded into the tables, or 0 when none is.
    pub fn journal_folded(&self, name: &str) -> Result<u64, StoreError> {
        let folded: Option<i64> = self
            .conn
            .prepare_cached("SELECT folded FROM journals WHERE name = ?1")
            .at(&self.path)?
            .query_row(params![name], |row| row.get(0))
            .optional()
            .at(&self.path)?;
        Ok(folded.map_or(0, |folded| folded as u64))
    }

    /// Records that journal `name` is folded up to entry `seq`. Inside a
    /// group, this commits with the writes it counts.
    pub fn set_journal_folded(&mut self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO journals (name, folded) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET folded = excluded.folded",
            )
            .at(&self.path)?
            .execute(params![name, seq as i64])
            .at(&self.path)?;
        Ok(())
    }

    /// Deletes the row of journal `name`, once its file is gone.
    pub fn forget_journal(&mut self, name: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM journals WHERE name = ?1")
            .at(&self.path)?
            .execute(params![name])
            .at(&self.path)?;
        Ok(())
    }

    /// Lists the journals that have a fold recorded.
    pub fn journal_names(&self) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT name FROM journals")
            .at(&self.path)?;
        let names = statement
            .query_map([], |row| row.get(0))
            .at(&self.path)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .at(&self.path)?;
        Ok(names)
    }
}

fn configure(conn: &Connection, path: &str) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|err| open_error(path, err))?;

    // This is the first statement that reads the file, so a file that is not a
    // database fails here with SQLITE_NOTADB.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(|err| open_error(path, err))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: path.to_string(),
            reason: format!("cannot switch to write-ahead logging, the journal mode stays `{mode}`"),
        });
    }

    // In WAL mode with synchronous=NORMAL a commit appends to the WAL without
    // an fsync, and the WAL is synced at checkpoints. A committed transaction
    // is then in the OS page cache, so it survives a crash or kill -9 of this
    // process. Only an OS crash or power loss can lose the last commits, and
    // even then the file stays consistent. FULL would add an fsync per write.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|err| open_error(path, err))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|err| open_error(path, err))?;
    Ok(())
}

/// Creates the schema in a file that has none, and returns the schema
/// version the file has afterwards.
fn create_schema(conn: &mut Connection, path: &str) -> Result<i64, StoreError> {
    // Two processes may open a new file at once: the immediate transaction
    // lets one create the schema, and the other then finds the version set.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|err| open_error(path, err))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|err| open_error(path, err))?;
    if version != 0 {
        return Ok(version);
    }

    let objects: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(|err| open_error(path, err))?;
    if objects != 0 {
        return Err(StoreError::Corrupt {
            path: path.to_string(),
            reason: "it is a SQLite database that flowrun did not create".to_string(),
        });
    }
    tx.execute_batch(SCHEMA).map_err(|err| open_error(path, err))?;
    tx.execute_batch(JOURNALS).map_err(|err| open_error(path, err))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|err| open_error(path, err))?;
    tx.commit().map_err(|err| open_error(path, err))?;
    Ok(SCHEMA_VERSION)
}

/// Upgrades the file from schema version `from` to the next one with
/// `change`, in one transaction, and returns the schema version the file
/// has afterwards. When another process upgraded the file since this one
/// read its version, nothing changes.
fn upgrade(
    conn: &mut Connection,
    path: &str,
    from: i64,
    change: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()>,
) -> Result<i64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|err| open_error(path, err))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|err| open_error(path, err))?;
    if version != from {
        return Ok(version);
    }

    change(&tx).map_err(|err| open_error(path, err))?;
    tx.pragma_update(None, "user_version", from + 1)
        .map_err(|err| open_error(path, err))?;
    tx.commit().map_err(|err| open_error(path, err))?;
    Ok(from + 1)
}

/// Adds the journal table, which version 1 lacks.
fn add_journals(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(JOURNALS)
}

/// Rewrites the status checks of version 2, which use `IN`, with `=`. The
/// checks accept the same values, so the rows stay valid and only the
/// table definitions change, as SQLite documents for changes that leave
/// the stored rows as they are.
fn rewrite_status_checks(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let schema_version: i64 = tx.pragma_query_value(None, "schema_version", |row| row.get(0))?;
    tx.pragma_update(None, "writable_schema", true)?;
    for (old, new) in STATUS_CHECKS {
        tx.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2) \
             WHERE type = 'table' AND name IN ('executions', 'steps')",
            [old, new],
        )?;
    }

    // A new schema version makes every connection read the definitions again.
    tx.pragma_update(None, "schema_version", schema_version + 1)?;
    tx.pragma_update(None, "writable_schema", false)
}

/// Maps the SQLite errors that mean the same at any time: a lock held past
/// the busy timeout, and a file that is not an intact database.
fn lock_or_corruption(path: &str, err: &rusqlite::Error) -> Option<StoreError> {
    match err.sqlite_error_code()? {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Some(StoreError::Locked {
            path: path.to_string(),
        }),
        ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => Some(StoreError::Corrupt {
            path: path.to_string(),
            reason: err.to_string(),
        }),
        _ => None,
    }
}

fn open_error(path: &str, err: rusqlite::Error) -> StoreError {
    lock_or_corruption(path, &err).unwrap_or_else(|| StoreError::Open {
        path: path.to_string(),
        reason: err.to_string(),
    })
}

fn store_error(path: &str, err: rusqlite::Error) -> StoreError {
    lock_or_corruption(path, &err).unwrap_or_else(|| StoreError::Other(format!("`{path}`: {err}")))
}

/// `.at(path)` converts a rusqlite result into a store result once the
/// store is open.
trait At<T> {
    fn at(self, path: &str) -> Result<T, StoreError>;
}

impl<T> At<T> for rusqlite::Result<T> {
    fn at(self, path: &str) -> Result<T, StoreError> {
        self.map_err(|err| store_error(path, err))
    }
}

/// Starts a transaction that takes the write lock at once, waiting up to the
/// busy timeout for it. A deferred transaction whose first statement reads
/// would start as a reader. In WAL mode, a reader whose snapshot another
/// process has since changed cannot become a writer, and SQLite fails it with
/// SQLITE_BUSY at once, without calling the busy handler.
///
/// Inside a group opened by [`SqliteStore::begin_group`] the write is a
/// savepoint instead, so that a failed write undoes only itself and the
/// group commits once for all of its writes, or, without savepoints, a
/// plain part of the group.
fn begin_write<'c>(conn: &'c mut Connection, savepoint: bool, path: &str) -> Result<Write<'c>, StoreError> {
    if conn.is_autocommit() {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .map(Write::Transaction)
            .at(path)
    } else if !savepoint {
        Ok(Write::InGroup(conn))
    } else {
        run_cached(conn, "SAVEPOINT flowrun_write").at(path)?;
        Ok(Write::Savepoint(Savepoint {
            conn,
            released: false,
        }))
    }
}

/// Runs a statement without parameters through the statement cache, so
/// that the many savepoints of a group are parsed once.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// One write: its own transaction, a savepoint inside a group, or part of
/// a group that is rolled back whole when the write fails.
enum Write<'c> {
    Transaction(Transaction<'c>),
    Savepoint(Savepoint<'c>),
    InGroup(&'c Connection),
}

/// A savepoint inside a group, rolled back when dropped unreleased.
struct Savepoint<'c> {
    conn: &'c Connection,
    released: bool,
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.released {
            // Undoes this write only; the group's earlier writes stay.
            let _ = run_cached(self.conn, "ROLLBACK TO flowrun_write");
            let _ = run_cached(self.conn, "RELEASE flowrun_write");
        }
    }
}

impl std::ops::Deref for Write<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Write::Transaction(tx) => tx,
            Write::Savepoint(savepoint) => savepoint.conn,
            Write::InGroup(conn) => conn,
        }
    }
}

impl Write<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            Write::Transaction(tx) => tx.commit(),
            Write::Savepoint(mut savepoint) => {
                run_cached(savepoint.conn, "RELEASE flowrun_write")?;
                savepoint.released = true;
                Ok(())
            }
            Write::InGroup(_) => Ok(()),
        }
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::Other(format!("cannot encode JSON: {err}")))
}

fn from_json<T: DeserializeOwned>(path: &str, column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Corrupt {
        path: path.to_string(),
        reason: format!("column `{column}` contains invalid JSON: {err}"),
    })
}

fn execution_status(path: &str, text: &str) -> Result<ExecutionStatus, StoreError> {
    ExecutionStatus::parse(text).ok_or_else(|| StoreError::Corrupt {
        path: path.to_string(),
        reason: format!("unknown execution status `{text}`"),
    })
}

fn step_status(path: &str, text: &str) -> Result<StepStatus, StoreError> {
    StepStatus::parse(text).ok_or_else(|| StoreError::Corrupt {
        path: path.to_string(),
        reason: format!("unknown step status `{text}`"),
    })
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound { id: id.to_string() }
}

fn execution_exists(conn: &Connection, path: &str, id: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM executions WHERE id = ?1")
        .at(path)?
        .exists([id])
        .at(path)
}

/// An `executions` row as SQLite returns it, before its JSON and status
/// columns are decoded.
struct RawExecution {
    id: String,
    workflow: String,
    source_path: String,
    workflow_hash: String,
    step_hashes: String,
    step_names: String,
    status: String,
    entity_before: String,
    entity: String,
    vars: String,
    next_step: usize,
    started_at: String,
    updated_at: String,
    finished_at: Option<String>,
    pid: u32,
}

impl RawExecution {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawExecution> {
        Ok(RawExecution {
            id: row.get(0)?,
            workflow: row.get(1)?,
            source_path: row.get(2)?,
            workflow_hash: row.get(3)?,
            step_hashes: row.get(4)?,
            step_names: row.get(5)?,
            status: row.get(6)?,
            entity_before: row.get(7)?,
            entity: row.get(8)?,
            vars: row.get(9)?,
            next_step: row.get(10)?,
            started_at: row.get(11)?,
            updated_at: row.get(12)?,
            finished_at: row.get(13)?,
            pid: row.get(14)?,
        })
    }

    fn decode(self, path: &str) -> Result<ExecutionRecord, StoreError> {
        Ok(ExecutionRecord {
            status: execution_status(path, &self.status)?,
            step_hashes: from_json(path, "executions.step_hashes", &self.step_hashes)?,
            step_names: from_json(path, "executions.step_names", &self.step_names)?,
            entity_before: from_json(path, "executions.entity_before", &self.entity_before)?,
            entity: from_json(path, "executions.entity", &self.entity)?,
            vars: from_json(path, "executions.vars", &self.vars)?,
            id: self.id,
            workflow: self.workflow,
            source_path: self.source_path,
            workflow_hash: self.workflow_hash,
            next_step: self.next_step,
            started_at: self.started_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            pid: self.pid,
        })
    }
}

impl Store for SqliteStore {
    fn begin_execution(&mut self, execution: &NewExecution<'_>) -> Result<(), StoreError> {
        // Encoding before the transaction keeps the write lock short.
        let step_hashes = to_json(execution.step_hashes)?;
        let step_names = to_json(execution.step_names)?;
        let entity = to_json(execution.entity)?;
        let vars = to_json(execution.vars)?;

        let path = &self.path;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        let inserted = tx
            .prepare_cached(
                "INSERT INTO executions (id, workflow, source_path, workflow_hash, step_hashes, step_names, \
                 status, entity_before, entity, vars, next_step, started_at, updated_at, finished_at, pid) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?7, ?8, 0, ?9, ?9, NULL, ?10) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .at(path)?
            .execute(params![
                execution.id,
                execution.workflow,
                execution.source_path,
                execution.workflow_hash,
                step_hashes,
                step_names,
                entity,
                vars,
                execution.started_at,
                execution.pid,
            ])
            .at(path)?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                id: execution.id.to_string(),
            });
        }
        tx.commit().at(path)
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
        let methods = to_json(methods)?;

        let path = &self.path;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        let updated = tx
            .prepare_cached("UPDATE executions SET pid = ?2, updated_at = ?3 WHERE id = ?1")
            .at(path)?
            .execute(params![id, pid, at])
            .at(path)?;
        if updated == 0 {
            return Err(not_found(id));
        }

        // A step that already has a row is being resumed: its attempts stay,
        // tagged with the run they belong to, and the new run starts clean.
        tx.prepare_cached(
            "INSERT INTO steps (execution_id, idx, name, status, runs, started_at, finished_at, error, code, methods) \
             VALUES (?1, ?2, ?3, 'running', 1, ?4, NULL, NULL, NULL, ?5) \
             ON CONFLICT (execution_id, idx) DO UPDATE SET \
                 name = excluded.name, status = 'running', runs = runs + 1, started_at = excluded.started_at, \
                 finished_at = NULL, error = NULL, code = NULL, methods = excluded.methods",
        )
        .at(path)?
        .execute(params![id, index, name, at, methods])
        .at(path)?;
        tx.commit().at(path)
    }

    fn end_step(&mut self, id: &str, end: &StepEnd<'_>) -> Result<(), StoreError> {
        let entity = to_json(end.entity)?;
        let vars = to_json(end.vars)?;

        let path = &self.path;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        let updated = tx
            .prepare_cached(
                "UPDATE executions SET entity = ?2, vars = ?3, next_step = ?4, updated_at = ?5 WHERE id = ?1",
            )
            .at(path)?
            .execute(params![id, entity, vars, end.next_step, end.at])
            .at(path)?;
        if updated == 0 {
            return Err(not_found(id));
        }

        let run: Option<u32> = tx
            .prepare_cached(
                "UPDATE steps SET status = ?3, finished_at = ?4, error = ?5, code = ?6, llm_usage = ?7 \
                 WHERE execution_id = ?1 AND idx = ?2 RETURNING runs",
            )
            .at(path)?
            .query_row(
                params![
                    id,
                    end.index,
                    end.status.as_str(),
                    end.at,
                    end.error,
                    end.code,
                    end.llm_usage.to_string()
                ],
                |row| row.get(0),
            )
            .optional()
            .at(path)?;
        let Some(run) = run else {
            return Err(StoreError::Other(format!(
                "cannot end step {} of execution `{id}`: the step was never begun",
                end.index
            )));
        };

        let mut insert = tx.prepare_cached(INSERT_ATTEMPT).at(path)?;
        for attempt in end.attempts {
            insert_attempt_row(&mut insert, id, end.index, run, attempt).at(path)?;
        }
        drop(insert);
        tx.commit().at(path)
    }

    fn set_status(&mut self, id: &str, status: ExecutionStatus, at: &str) -> Result<(), StoreError> {
        // A paused execution that resumes goes back to `running`, so only the
        // final statuses keep a finish time.
        let finished_at =
            matches!(status, ExecutionStatus::Succeeded | ExecutionStatus::Failed).then_some(at);

        let path = &self.path;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        let updated = tx
            .prepare_cached(
                "UPDATE executions SET status = ?2, updated_at = ?3, finished_at = ?4 WHERE id = ?1",
            )
            .at(path)?
            .execute(params![id, status.as_str(), at, finished_at])
            .at(path)?;
        if updated == 0 {
            return Err(not_found(id));
        }
        tx.commit().at(path)
    }

    fn claim(
        &mut self,
        id: &str,
        expected: ExecutionStatus,
        expected_pid: u32,
        pid: u32,
        at: &str,
    ) -> Result<bool, StoreError> {
        let path = &self.path;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        let updated = tx
            .prepare_cached(
                "UPDATE executions SET status = 'running', pid = ?4, updated_at = ?5, finished_at = NULL \
                 WHERE id = ?1 AND status = ?2 AND pid = ?3",
            )
            .at(path)?
            .execute(params![id, expected.as_str(), expected_pid, pid, at])
            .at(path)?;
        tx.commit().at(path)?;
        Ok(updated == 1)
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
        let path = &self.path;
        let hashes =
            serde_json::to_string(step_hashes).map_err(|error| StoreError::Other(error.to_string()))?;
        let names =
            serde_json::to_string(step_names).map_err(|error| StoreError::Other(error.to_string()))?;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        let updated = tx
            .prepare_cached(
                "UPDATE executions SET workflow_hash = ?2, step_hashes = ?3, step_names = ?4, next_step = ?5, \
                 updated_at = ?6 WHERE id = ?1",
            )
            .at(path)?
            .execute(params![id, workflow_hash, hashes, names, next_step, at])
            .at(path)?;
        if updated == 0 {
            return Err(not_found(id));
        }
        tx.commit().at(path)
    }

    fn mark_outcome_unknown(&mut self, id: &str, index: usize, at: &str) -> Result<(), StoreError> {
        let path = &self.path;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        let status: Option<String> = tx
            .prepare_cached("SELECT status FROM steps WHERE execution_id = ?1 AND idx = ?2")
            .at(path)?
            .query_row(params![id, index], |row| row.get(0))
            .optional()
            .at(path)?;
        match status.as_deref() {
            None if !execution_exists(&tx, path, id)? => return Err(not_found(id)),
            None => {
                return Err(StoreError::Other(format!(
                    "cannot mark step {index} of execution `{id}`: the step was never begun"
                )))
            }
            // Marking again, or marking a step that did finish, changes nothing.
            Some(status) if status != StepStatus::Running.as_str() => return Ok(()),
            Some(_) => {}
        }

        // `finished_at` stays NULL: whether and when the step's requests
        // finished is exactly what is unknown.
        tx.prepare_cached("UPDATE steps SET status = 'outcome_unknown' WHERE execution_id = ?1 AND idx = ?2")
            .at(path)?
            .execute(params![id, index])
            .at(path)?;
        tx.prepare_cached("UPDATE executions SET updated_at = ?2 WHERE id = ?1")
            .at(path)?
            .execute(params![id, at])
            .at(path)?;
        tx.commit().at(path)
    }

    fn record_notification(&mut self, id: &str, notification: &NotificationRecord) -> Result<(), StoreError> {
        let channels = to_json(&notification.channels)?;

        let path = &self.path;
        let tx = begin_write(&mut self.conn, self.write_savepoints, path)?;
        if !execution_exists(&tx, path, id)? {
            return Err(not_found(id));
        }
        tx.prepare_cached(
            "INSERT INTO notifications (execution_id, step, severity, error, channels, delivery_error, sent_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .at(path)?
        .execute(params![
            id,
            notification.step,
            notification.severity,
            notification.error,
            channels,
            notification.delivery_error,
            notification.sent_at,
        ])
        .at(path)?;
        tx.commit().at(path)
    }

    fn execution(&self, id: &str) -> Result<ExecutionRecord, StoreError> {
        let path = &self.path;
        let raw = self
            .conn
            .prepare_cached(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1"
            ))
            .at(path)?
            .query_row([id], RawExecution::read)
            .optional()
            .at(path)?;
        raw.ok_or_else(|| not_found(id))?.decode(path)
    }

    fn executions(&self, status: Option<ExecutionStatus>) -> Result<Vec<ExecutionSummary>, StoreError> {
        let path = &self.path;
        // Two statements rather than `?1 IS NULL OR status = ?1`, so that
        // each can walk its own index in order.
        let columns = "id, workflow, status, started_at, updated_at, next_step, step_names, pid";
        let mut statement = match status {
            Some(_) => self.conn.prepare_cached(&format!(
                "SELECT {columns} FROM executions WHERE status = ?1 ORDER BY started_at DESC, id DESC"
            )),
            None => self.conn.prepare_cached(&format!(
                "SELECT {columns} FROM executions ORDER BY started_at DESC, id DESC"
            )),
        }
        .at(path)?;
        let read = |row: &rusqlite::Row<'_>| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, usize>(5)?,
                row.get::<_, String>(6)?,
                row.get::<_, u32>(7)?,
            ))
        };
        let rows = match status {
            Some(status) => statement.query_map([status.as_str()], read),
            None => statement.query_map([], read),
        }
        .at(path)?;

        let mut summaries = Vec::new();
        for row in rows {
            let (id, workflow, status, started_at, updated_at, next_step, step_names, pid) = row.at(path)?;
            let mut step_names: Vec<String> = from_json(path, "executions.step_names", &step_names)?;
            let next_step_name = (next_step < step_names.len()).then(|| step_names.swap_remove(next_step));
            summaries.push(ExecutionSummary {
                id,
                workflow,
                status: execution_status(path, &status)?,
                started_at,
                updated_at,
                next_step_name,
                pid,
            });
        }
        Ok(summaries)
    }

    fn steps(&self, id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let path = &self.path;
        // One read transaction, so that a step and its attempts come from the
        // same commit even while another process writes.
        let tx = self.conn.unchecked_transaction().at(path)?;
        if !execution_exists(&tx, path, id)? {
            return Err(not_found(id));
        }

        let mut steps = Vec::new();
        {
            let mut statement = tx
                .prepare_cached(
                    "SELECT idx, name, status, runs, started_at, finished_at, error, code, methods, llm_usage \
                     FROM steps WHERE execution_id = ?1 ORDER BY idx",
                )
                .at(path)?;
            let mut rows = statement.query([id]).at(path)?;
            while let Some(row) = rows.next().at(path)? {
                let status: String = row.get(2).at(path)?;
                let methods: String = row.get(8).at(path)?;
                let llm_usage: String = row.get(9).at(path)?;
                steps.push(StepRecord {
                    index: row.get(0).at(path)?,
                    name: row.get(1).at(path)?,
                    status: step_status(path, &status)?,
                    runs: row.get(3).at(path)?,
                    started_at: row.get(4).at(path)?,
                    finished_at: row.get(5).at(path)?,
                    error: row.get(6).at(path)?,
                    code: row.get(7).at(path)?,
                    methods: from_json(path, "steps.methods", &methods)?,
                    llm_usage: from_json(path, "steps.llm_usage", &llm_usage)?,
                    attempts: Vec::new(),
                });
            }
        }

        {
            let mut statement = tx
                .prepare_cached(
                    "SELECT step_idx, action, number, method, url, status_code, duration_ms, waited_ms, error \
                     FROM attempts WHERE execution_id = ?1 ORDER BY step_idx, run, action, number",
                )
                .at(path)?;
            let mut rows = statement.query([id]).at(path)?;
            // Both queries are ordered by step index, so one pass pairs them.
            let mut step = 0;
            while let Some(row) = rows.next().at(path)? {
                let step_index: usize = row.get(0).at(path)?;
                while step < steps.len() && steps[step].index < step_index {
                    step += 1;
                }
                // The foreign key on attempts guarantees that the step exists.
                let Some(owner) = steps.get_mut(step).filter(|owner| owner.index == step_index) else {
                    return Err(StoreError::Corrupt {
                        path: path.to_string(),
                        reason: format!("attempts of execution `{id}` refer to missing step {step_index}"),
                    });
                };
                owner.attempts.push(AttemptRecord {
                    action: row.get(1).at(path)?,
                    number: row.get(2).at(path)?,
                    method: row.get(3).at(path)?,
                    url: row.get(4).at(path)?,
                    status_code: row.get(5).at(path)?,
                    duration_ms: row.get(6).at(path)?,
                    waited_ms: row.get(7).at(path)?,
                    error: row.get(8).at(path)?,
                });
            }
        }

        tx.commit().at(path)?;
        Ok(steps)
    }

    fn notifications(&self, id: &str) -> Result<Vec<NotificationRecord>, StoreError> {
        let path = &self.path;
        let tx = self.conn.unchecked_transaction().at(path)?;
        if !execution_exists(&tx, path, id)? {
            return Err(not_found(id));
        }

        let mut notifications = Vec::new();
        {
            let mut statement = tx
                .prepare_cached(
                    "SELECT step, severity, error, channels, delivery_error, sent_at \
                     FROM notifications WHERE execution_id = ?1 ORDER BY seq",
                )
                .at(path)?;
            let mut rows = statement.query([id]).at(path)?;
            while let Some(row) = rows.next().at(path)? {
                let channels: String = row.get(3).at(path)?;
                notifications.push(NotificationRecord {
                    step: row.get(0).at(path)?,
                    severity: row.get(1).at(path)?,
                    error: row.get(2).at(path)?,
                    channels: from_json(path, "notifications.channels", &channels)?,
                    delivery_error: row.get(4).at(path)?,
                    sent_at: row.get(5).at(path)?,
                });
            }
        }

        tx.commit().at(path)?;
        Ok(notifications)
    }
}

#[cfg(test)]
mod tests {
    static EMPTY_USAGE: std::sync::LazyLock<serde_json::Value> =
        std::sync::LazyLock::new(|| serde_json::json!([]));
    use super::*;

    use std::time::Instant;

    use serde_json::{json, Map, Value};

    /// The owned data behind a [`NewExecution`].
    struct Fixture {
        id: String,
        started_at: String,
        step_names: Vec<String>,
        step_hashes: Vec<String>,
        entity: Value,
        vars: Map<String, Value>,
    }

    impl Fixture {
        fn new(id: &str, started_at: &str) -> Fixture {
            let mut vars = Map::new();
            vars.insert("region".to_string(), json!("eu"));
            Fixture {
                id: id.to_string(),
                started_at: started_at.to_string(),
                step_names: vec!["fetch".to_string(), "notify".to_string()],
                step_hashes: vec!["aa".repeat(32), "bb".repeat(32)],
                entity: json!({"name": "Ada", "count": 1}),
                vars,
            }
        }

        fn new_execution(&self) -> NewExecution<'_> {
            NewExecution {
                id: &self.id,
                workflow: "onboarding",
                source_path: "flows/onboarding.flow",
                workflow_hash: "cc",
                step_hashes: &self.step_hashes,
                step_names: &self.step_names,
                entity: &self.entity,
                vars: &self.vars,
                started_at: &self.started_at,
                pid: 4242,
            }
        }
    }

    fn attempt(action: usize, number: u32, status_code: Option<u16>) -> AttemptRecord {
        AttemptRecord {
            action,
            number,
            method: "POST".to_string(),
            url: "https://api.example.com/users".to_string(),
            status_code,
            duration_ms: 12,
            waited_ms: 500 * u64::from(number - 1),
            error: status_code.is_none().then(|| "connection refused".to_string()),
        }
    }

    fn methods() -> Vec<String> {
        vec!["POST".to_string()]
    }

    fn store_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("state").join("flowrun.db")
    }

    #[test]
    fn life_cycle_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        store.begin_execution(&fixture.new_execution()).unwrap();

        store
            .begin_step("ex-1", 0, "fetch", &methods(), "2024-05-01T10:00:01Z", 4243)
            .unwrap();
        let attempts = vec![attempt(0, 1, None), attempt(0, 2, Some(201))];
        let entity = json!({"name": "Ada", "count": 2, "user_id": 7});
        let mut vars = fixture.vars.clone();
        vars.insert("token_id".to_string(), json!("t-1"));
        store
            .end_step(
                "ex-1",
                &StepEnd {
                    llm_usage: &EMPTY_USAGE,
                    index: 0,
                    status: StepStatus::Succeeded,
                    error: None,
                    code: None,
                    attempts: &attempts,
                    entity: &entity,
                    vars: &vars,
                    next_step: 1,
                    at: "2024-05-01T10:00:02Z",
                },
            )
            .unwrap();
        let notification = NotificationRecord {
            step: "fetch".to_string(),
            severity: "warning".to_string(),
            error: "slow answer".to_string(),
            channels: vec!["stderr".to_string(), "webhook".to_string()],
            delivery_error: Some("webhook answered 500".to_string()),
            sent_at: "2024-05-01T10:00:03Z".to_string(),
        };
        store.record_notification("ex-1", &notification).unwrap();
        store
            .set_status("ex-1", ExecutionStatus::Paused, "2024-05-01T10:00:04Z")
            .unwrap();

        let expected = ExecutionRecord {
            id: "ex-1".to_string(),
            workflow: "onboarding".to_string(),
            source_path: "flows/onboarding.flow".to_string(),
            workflow_hash: "cc".to_string(),
            step_hashes: fixture.step_hashes.clone(),
            step_names: fixture.step_names.clone(),
            status: ExecutionStatus::Paused,
            entity_before: fixture.entity.clone(),
            entity: entity.clone(),
            vars: vars.clone(),
            next_step: 1,
            started_at: "2024-05-01T10:00:00Z".to_string(),
            updated_at: "2024-05-01T10:00:04Z".to_string(),
            finished_at: None,
            pid: 4243,
        };
        assert_eq!(store.execution("ex-1").unwrap(), expected);

        let expected_steps = vec![StepRecord {
            llm_usage: serde_json::json!([]),
            index: 0,
            name: "fetch".to_string(),
            status: StepStatus::Succeeded,
            runs: 1,
            started_at: "2024-05-01T10:00:01Z".to_string(),
            finished_at: Some("2024-05-01T10:00:02Z".to_string()),
            error: None,
            code: None,
            methods: methods(),
            attempts: attempts.clone(),
        }];
        assert_eq!(store.steps("ex-1").unwrap(), expected_steps);

        let expected_summary = ExecutionSummary {
            id: "ex-1".to_string(),
            workflow: "onboarding".to_string(),
            status: ExecutionStatus::Paused,
            started_at: "2024-05-01T10:00:00Z".to_string(),
            updated_at: "2024-05-01T10:00:04Z".to_string(),
            next_step_name: Some("notify".to_string()),
            pid: 4243,
        };
        assert_eq!(store.executions(None).unwrap(), vec![expected_summary]);
        assert_eq!(store.notifications("ex-1").unwrap(), vec![notification]);

        store
            .set_status("ex-1", ExecutionStatus::Succeeded, "2024-05-01T10:00:05Z")
            .unwrap();
        let finished = store.execution("ex-1").unwrap();
        assert_eq!(finished.status, ExecutionStatus::Succeeded);
        assert_eq!(finished.finished_at.as_deref(), Some("2024-05-01T10:00:05Z"));
        assert_eq!(finished.updated_at, "2024-05-01T10:00:05Z");
    }

    #[test]
    fn failed_step_keeps_error_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        store.begin_execution(&fixture.new_execution()).unwrap();
        store.begin_step("ex-1", 0, "fetch", &methods(), "t1", 1).unwrap();
        store
            .end_step(
                "ex-1",
                &StepEnd {
                    llm_usage: &EMPTY_USAGE,
                    index: 0,
                    status: StepStatus::Failed,
                    error: Some("the server answered 503"),
                    code: Some("flow::run::http_status"),
                    attempts: &[attempt(0, 1, Some(503))],
                    entity: &fixture.entity,
                    vars: &fixture.vars,
                    next_step: 0,
                    at: "t2",
                },
            )
            .unwrap();

        let steps = store.steps("ex-1").unwrap();
        assert_eq!(steps[0].status, StepStatus::Failed);
        assert_eq!(steps[0].error.as_deref(), Some("the server answered 503"));
        assert_eq!(steps[0].code.as_deref(), Some("flow::run::http_status"));
        assert_eq!(
            store.executions(None).unwrap()[0].next_step_name.as_deref(),
            Some("fetch")
        );
    }

    #[test]
    fn resumed_step_counts_runs_and_keeps_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        store.begin_execution(&fixture.new_execution()).unwrap();

        store.begin_step("ex-1", 0, "fetch", &methods(), "t1", 1).unwrap();
        let first_run = vec![attempt(0, 1, Some(500)), attempt(0, 2, Some(503))];
        store
            .end_step(
                "ex-1",
                &StepEnd {
                    llm_usage: &EMPTY_USAGE,
                    index: 0,
                    status: StepStatus::Failed,
                    error: Some("server error"),
                    code: Some("flow::run::http_status"),
                    attempts: &first_run,
                    entity: &fixture.entity,
                    vars: &fixture.vars,
                    next_step: 0,
                    at: "t2",
                },
            )
            .unwrap();

        store.begin_step("ex-1", 0, "fetch", &methods(), "t3", 2).unwrap();
        let resumed = &store.steps("ex-1").unwrap()[0];
        assert_eq!(resumed.runs, 2);
        assert_eq!(resumed.status, StepStatus::Running);
        assert_eq!(resumed.started_at, "t3");
        assert_eq!(resumed.finished_at, None);
        assert_eq!(resumed.error, None);
        assert_eq!(resumed.code, None);
        assert_eq!(resumed.attempts, first_run);

        // The second run numbers its attempts from 1 again: the run keeps
        // them apart from the first run's.
        let second_run = vec![attempt(0, 1, Some(200))];
        store
            .end_step(
                "ex-1",
                &StepEnd {
                    llm_usage: &EMPTY_USAGE,
                    index: 0,
                    status: StepStatus::Succeeded,
                    error: None,
                    code: None,
                    attempts: &second_run,
                    entity: &fixture.entity,
                    vars: &fixture.vars,
                    next_step: 1,
                    at: "t4",
                },
            )
            .unwrap();
        let step = &store.steps("ex-1").unwrap()[0];
        let all_attempts: Vec<AttemptRecord> = first_run.iter().chain(&second_run).cloned().collect();
        assert_eq!(step.runs, 2);
        assert_eq!(step.status, StepStatus::Succeeded);
        assert_eq!(step.attempts, all_attempts);
        assert_eq!(store.execution("ex-1").unwrap().pid, 2);
    }

    #[test]
    fn attempts_stay_with_their_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        store.begin_execution(&fixture.new_execution()).unwrap();
        for (index, name) in ["fetch", "notify"].into_iter().enumerate() {
            store.begin_step("ex-1", index, name, &methods(), "t", 1).unwrap();
            let attempts = vec![attempt(0, 1, Some(200)), attempt(1, 1, Some(200 + index as u16))];
            store
                .end_step(
                    "ex-1",
                    &StepEnd {
                        llm_usage: &EMPTY_USAGE,
                        index,
                        status: StepStatus::Succeeded,
                        error: None,
                        code: None,
                        attempts: &attempts,
                        entity: &fixture.entity,
                        vars: &fixture.vars,
                        next_step: index + 1,
                        at: "t",
                    },
                )
                .unwrap();
        }
        // A step without attempts between steps with attempts.
        store.begin_step("ex-1", 2, "log", &[], "t", 1).unwrap();

        let steps = store.steps("ex-1").unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].attempts[1].status_code, Some(200));
        assert_eq!(steps[1].attempts[1].status_code, Some(201));
        assert!(steps[2].attempts.is_empty());
        assert_eq!(store.executions(None).unwrap()[0].next_step_name, None);
    }

    #[test]
    fn outcome_unknown_marks_only_running_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        store.begin_execution(&fixture.new_execution()).unwrap();
        store.begin_step("ex-1", 0, "fetch", &methods(), "t1", 1).unwrap();

        store.mark_outcome_unknown("ex-1", 0, "t2").unwrap();
        let step = &store.steps("ex-1").unwrap()[0];
        assert_eq!(step.status, StepStatus::OutcomeUnknown);
        assert_eq!(step.finished_at, None);
        assert_eq!(store.execution("ex-1").unwrap().updated_at, "t2");

        // A second mark leaves the step and the execution as they are.
        store.mark_outcome_unknown("ex-1", 0, "t3").unwrap();
        assert_eq!(store.steps("ex-1").unwrap()[0].status, StepStatus::OutcomeUnknown);
        assert_eq!(store.execution("ex-1").unwrap().updated_at, "t2");

        let missing_step = store.mark_outcome_unknown("ex-1", 5, "t4").unwrap_err();
        assert!(matches!(missing_step, StoreError::Other(_)), "{missing_step:?}");
    }

    #[test]
    fn entity_json_round_trips_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let text = r#"{"zeta":123456789012345678901234567890,"alpha":-98765432109876543210.000000000000000000001,"mid":{"b":1e400,"a":[18446744073709551617,0.1]},"small":3}"#;
        let mut fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        fixture.entity = serde_json::from_str(text).unwrap();
        fixture.vars = serde_json::from_str(r#"{"z":99999999999999999999999,"a":1}"#).unwrap();
        store.begin_execution(&fixture.new_execution()).unwrap();

        // serde_json itself normalizes a few spellings, such as `1e400` to
        // `1e+400`, so the store must reproduce its output, not the input text.
        let entity_text = serde_json::to_string(&fixture.entity).unwrap();
        let vars_text = serde_json::to_string(&fixture.vars).unwrap();
        assert!(entity_text.starts_with(r#"{"zeta":123456789012345678901234567890,"alpha":"#));

        let record = store.execution("ex-1").unwrap();
        assert_eq!(serde_json::to_string(&record.entity_before).unwrap(), entity_text);
        assert_eq!(serde_json::to_string(&record.entity).unwrap(), entity_text);
        assert_eq!(serde_json::to_string(&record.vars).unwrap(), vars_text);
    }

    #[test]
    fn executions_filter_by_status_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let cases = [
            ("a", "2024-05-01T10:00:00Z", ExecutionStatus::Succeeded),
            ("b", "2024-05-03T10:00:00Z", ExecutionStatus::Failed),
            ("c", "2024-05-02T10:00:00Z", ExecutionStatus::Succeeded),
            ("d", "2024-05-02T10:00:00Z", ExecutionStatus::Paused),
            ("e", "2024-05-04T10:00:00Z", ExecutionStatus::Running),
        ];
        for (id, started_at, status) in cases {
            let fixture = Fixture::new(id, started_at);
            store.begin_execution(&fixture.new_execution()).unwrap();
            if status != ExecutionStatus::Running {
                store.set_status(id, status, started_at).unwrap();
            }
        }

        let ids = |summaries: Vec<ExecutionSummary>| summaries.into_iter().map(|s| s.id).collect::<Vec<_>>();
        // `c` and `d` started at the same time: the larger id comes first.
        assert_eq!(ids(store.executions(None).unwrap()), ["e", "b", "d", "c", "a"]);
        assert_eq!(
            ids(store.executions(Some(ExecutionStatus::Succeeded)).unwrap()),
            ["c", "a"]
        );
        assert_eq!(
            ids(store.executions(Some(ExecutionStatus::Failed)).unwrap()),
            ["b"]
        );
        assert_eq!(
            ids(store.executions(Some(ExecutionStatus::Paused)).unwrap()),
            ["d"]
        );
        assert_eq!(
            ids(store.executions(Some(ExecutionStatus::Running)).unwrap()),
            ["e"]
        );
        for summary in store.executions(Some(ExecutionStatus::Succeeded)).unwrap() {
            assert_eq!(summary.status, ExecutionStatus::Succeeded);
        }
    }

    #[test]
    fn writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        let (execution, steps) = {
            let mut store = SqliteStore::open(&path).unwrap();
            store.begin_execution(&fixture.new_execution()).unwrap();
            store.begin_step("ex-1", 0, "fetch", &methods(), "t1", 1).unwrap();
            store
                .end_step(
                    "ex-1",
                    &StepEnd {
                        llm_usage: &EMPTY_USAGE,
                        index: 0,
                        status: StepStatus::Succeeded,
                        error: None,
                        code: None,
                        attempts: &[attempt(0, 1, Some(200))],
                        entity: &json!({"done": true}),
                        vars: &fixture.vars,
                        next_step: 1,
                        at: "t2",
                    },
                )
                .unwrap();
            store
                .begin_step("ex-1", 1, "notify", &methods(), "t3", 1)
                .unwrap();
            (store.execution("ex-1").unwrap(), store.steps("ex-1").unwrap())
        };

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.execution("ex-1").unwrap(), execution);
        assert_eq!(store.steps("ex-1").unwrap(), steps);
        assert_eq!(store.execution("ex-1").unwrap().entity, json!({"done": true}));
        assert_eq!(store.steps("ex-1").unwrap()[1].status, StepStatus::Running);
    }

    #[test]
    fn garbage_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flowrun.db");
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&path, garbage).unwrap();

        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn foreign_database_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE executions (x INTEGER);")
            .unwrap();

        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn locked_store_fails_within_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut store = SqliteStore::open(&path).unwrap();
        let earlier = Fixture::new("ex-0", "2024-05-01T09:00:00Z");
        store.begin_execution(&earlier.new_execution()).unwrap();

        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

        let started = Instant::now();
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        let err = store.begin_execution(&fixture.new_execution()).unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert!(elapsed < Duration::from_secs(5), "waited {elapsed:?}");

        // In WAL mode the lock blocks writers only: opening and reading go on.
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(reader.executions(None).unwrap().len(), 1);

        holder.execute_batch("ROLLBACK").unwrap();
        store.begin_execution(&fixture.new_execution()).unwrap();
        assert_eq!(reader.executions(None).unwrap().len(), 2);
    }

    fn run_one_execution(store: &mut SqliteStore, id: &str, started_at: &str) {
        let fixture = Fixture::new(id, started_at);
        store.begin_execution(&fixture.new_execution()).unwrap();
        store
            .begin_step(id, 0, "fetch", &methods(), started_at, 1)
            .unwrap();
        store
            .end_step(
                id,
                &StepEnd {
                    llm_usage: &EMPTY_USAGE,
                    index: 0,
                    status: StepStatus::Succeeded,
                    error: None,
                    code: None,
                    attempts: &[attempt(0, 1, Some(200))],
                    entity: &fixture.entity,
                    vars: &fixture.vars,
                    next_step: 1,
                    at: started_at,
                },
            )
            .unwrap();
        store
            .set_status(id, ExecutionStatus::Succeeded, started_at)
            .unwrap();
    }

    #[test]
    fn group_commits_once_and_a_failed_write_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut store = SqliteStore::open(&path).unwrap();
        let reader = SqliteStore::open(&path).unwrap();

        store.begin_group().unwrap();
        run_one_execution(&mut store, "ex-1", "2024-05-01T10:00:01Z");
        let missing = store.begin_step("ex-none", 0, "fetch", &methods(), "2024-05-01T10:00:02Z", 1);
        assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
        run_one_execution(&mut store, "ex-2", "2024-05-01T10:00:03Z");
        // Nothing is visible to another connection before the group commits.
        assert_eq!(reader.executions(None).unwrap().len(), 0);
        store.commit_group().unwrap();

        let ids: Vec<String> = reader
            .executions(Some(ExecutionStatus::Succeeded))
            .unwrap()
            .into_iter()
            .map(|summary| summary.id)
            .collect();
        assert_eq!(ids, ["ex-2", "ex-1"]);
        assert_eq!(reader.steps("ex-2").unwrap()[0].attempts.len(), 1);
        // Outside a group every write commits on its own again.
        run_one_execution(&mut store, "ex-3", "2024-05-01T10:00:04Z");
        assert_eq!(reader.executions(None).unwrap().len(), 3);
    }

    #[test]
    fn two_handles_interleave_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut first = SqliteStore::open(&path).unwrap();
        let mut second = SqliteStore::open(&path).unwrap();

        for i in 0..20 {
            let store = if i % 2 == 0 { &mut first } else { &mut second };
            run_one_execution(store, &format!("ex-{i:02}"), &format!("2024-05-01T10:00:{i:02}Z"));
        }

        for store in [&first, &second] {
            let summaries = store.executions(Some(ExecutionStatus::Succeeded)).unwrap();
            assert_eq!(summaries.len(), 20);
            for i in 0..20 {
                let steps = store.steps(&format!("ex-{i:02}")).unwrap();
                assert_eq!(steps.len(), 1);
                assert_eq!(steps[0].attempts.len(), 1);
            }
        }
    }

    #[test]
    fn concurrent_writers_serialize() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        SqliteStore::open(&path).unwrap();

        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|writer| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut store = SqliteStore::open(&path).unwrap();
                    for i in 0..50 {
                        run_one_execution(&mut store, &format!("{writer}-{i:02}"), "2024-05-01T10:00:00Z");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.executions(None).unwrap().len(), 100);
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        store.begin_execution(&fixture.new_execution()).unwrap();

        let is_not_found = |result: Result<(), StoreError>| matches!(result, Err(StoreError::NotFound { ref id }) if id == "nope");
        assert!(is_not_found(store.execution("nope").map(drop)));
        assert!(is_not_found(store.steps("nope").map(drop)));
        assert!(is_not_found(store.notifications("nope").map(drop)));
        assert!(is_not_found(store.begin_step(
            "nope",
            0,
            "fetch",
            &methods(),
            "t",
            1
        )));
        assert!(is_not_found(store.set_status(
            "nope",
            ExecutionStatus::Failed,
            "t"
        )));
        assert!(is_not_found(store.mark_outcome_unknown("nope", 0, "t")));
        let end = StepEnd {
            llm_usage: &EMPTY_USAGE,
            index: 0,
            status: StepStatus::Succeeded,
            error: None,
            code: None,
            attempts: &[],
            entity: &fixture.entity,
            vars: &fixture.vars,
            next_step: 1,
            at: "t",
        };
        assert!(is_not_found(store.end_step("nope", &end)));
        let notification = NotificationRecord {
            step: "fetch".to_string(),
            severity: "error".to_string(),
            error: "failed".to_string(),
            channels: vec![],
            delivery_error: None,
            sent_at: "t".to_string(),
        };
        assert!(is_not_found(store.record_notification("nope", &notification)));

        assert_eq!(store.steps("ex-1").unwrap(), vec![]);
        assert_eq!(store.notifications("ex-1").unwrap(), vec![]);
    }

    #[test]
    fn misuse_fails_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&store_path(&dir)).unwrap();
        let fixture = Fixture::new("ex-1", "2024-05-01T10:00:00Z");
        store.begin_execution(&fixture.new_execution()).unwrap();

        let duplicate = store.begin_execution(&fixture.new_execution()).unwrap_err();
        assert!(
            matches!(duplicate, StoreError::AlreadyExists { ref id } if id == "ex-1"),
            "{duplicate:?}"
        );

        // Ending a step that never began rolls back the execution update too.
        let end = StepEnd {
            llm_usage: &EMPTY_USAGE,
            index: 0,
            status: StepStatus::Succeeded,
            error: None,
            code: None,
            attempts: &[attempt(0, 1, Some(200))],
            entity: &json!({"changed": true}),
            vars: &fixture.vars,
            next_step: 1,
            at: "t",
        };
        let never_begun = store.end_step("ex-1", &end).unwrap_err();
        assert!(matches!(never_begun, StoreError::Other(_)), "{never_begun:?}");
        let record = store.execution("ex-1").unwrap();
        assert_eq!(record.entity, fixture.entity);
        assert_eq!(record.next_step, 0);
    }

    #[test]
    fn newer_schema_version_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 4)
            .unwrap();

        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("version 4"), "{message}");
        assert!(message.contains("version 3"), "{message}");
    }

    #[test]
    fn a_version_1_store_gains_the_journal_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        {
            let mut store = SqliteStore::open(&path).unwrap();
            let fixture = Fixture::new("ex-1", "2026-01-01T00:00:00Z");
            store.begin_execution(&fixture.new_execution()).unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE journals; PRAGMA user_version = 1;")
            .unwrap();
        drop(conn);

        let mut store = SqliteStore::open(&path).unwrap();
        store.set_journal_folded("store.db-batch-1-2", 4).unwrap();
        assert_eq!(store.journal_folded("store.db-batch-1-2").unwrap(), 4);
        assert_eq!(store.execution("ex-1").unwrap().id, "ex-1");
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 3);
    }

    fn table_definitions(path: &Path) -> Vec<(String, String)> {
        let conn = Connection::open(path).unwrap();
        let mut statement = conn
            .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<Vec<(String, String)>>>()
            .unwrap();
        rows
    }

    #[test]
    fn version_2_upgrade_rewrites_status_checks() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        drop(SqliteStore::open(&fresh).unwrap());
        let path = store_path(&dir);
        {
            let mut store = SqliteStore::open(&path).unwrap();
            let fixture = Fixture::new("ex-1", "2026-01-01T00:00:00Z");
            store.begin_execution(&fixture.new_execution()).unwrap();
        }
        // Turns the file back into a version 2 store, with `IN` checks.
        let conn = Connection::open(&path).unwrap();
        let schema_version: i64 = conn
            .pragma_query_value(None, "schema_version", |row| row.get(0))
            .unwrap();
        conn.pragma_update(None, "writable_schema", true).unwrap();
        for (old, new) in STATUS_CHECKS {
            let changed = conn
                .execute(
                    "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2) WHERE instr(sql, ?1)",
                    [new, old],
                )
                .unwrap();
            assert_eq!(changed, 1, "{new}");
        }
        conn.pragma_update(None, "schema_version", schema_version + 1)
            .unwrap();
        conn.pragma_update(None, "writable_schema", false).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        drop(conn);
        assert_ne!(table_definitions(&path), table_definitions(&fresh));

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.execution("ex-1").unwrap().id, "ex-1");
        drop(store);
        assert_eq!(table_definitions(&path), table_definitions(&fresh));
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 3);
        let check: String = conn
            .pragma_query_value(None, "integrity_check", |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let invalid = conn
            .execute("UPDATE executions SET status = 'done' WHERE id = 'ex-1'", [])
            .unwrap_err();
        assert_eq!(
            invalid.sqlite_error_code(),
            Some(ErrorCode::ConstraintViolation),
            "{invalid}"
        );
    }

    #[test]
    fn status_checks_build_no_temporary_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&store_path(&dir)).unwrap();
        for (table, status) in [("executions", "running"), ("steps", "succeeded")] {
            let opcodes: Vec<String> = store
                .conn
                .prepare(&format!("EXPLAIN UPDATE {table} SET status = ?1"))
                .unwrap()
                .query_map([status], |row| row.get(1))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(opcodes.iter().any(|opcode| opcode == "Halt"), "{opcodes:?}");
            assert!(
                !opcodes.iter().any(|opcode| opcode == "OpenEphemeral"),
                "{table}: {opcodes:?}"
            );
        }
    }

    #[test]
    fn open_sets_wal_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let store = SqliteStore::open(&path).unwrap();
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        let foreign_keys: i64 = store
            .conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(foreign_keys, 1);

        // Opening an existing store again must not recreate the schema.
        drop(store);
        SqliteStore::open(&path).unwrap();
    }
}
