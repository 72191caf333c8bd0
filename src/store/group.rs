//! Merging a group of journal entries before they reach the tables. An
//! execution that begins in the group is built in memory from all its
//! entries there, then inserted as finished rows: one row per table and
//! record instead of an insert and several updates. Entries of executions
//! that began in an earlier group are applied one by one.
//!
//! The tables end up as if every entry had been applied in order. Only the
//! order across executions changes, and no row depends on it. When the
//! merged rows cannot be inserted, for instance because the execution id
//! is taken, the execution's entries are applied one by one instead, so
//! each fails as it would have alone.

use std::collections::HashMap;

use serde_json::Value;

use super::journal::Entry;
use super::sqlite::SqliteStore;
use super::{ExecutionRecord, ExecutionStatus, NotificationRecord, StepRecord, StepStatus, StoreError};

/// An execution that began in the current group, as its rows will be.
#[derive(Debug, Clone, PartialEq)]
pub struct FreshExecution {
    pub record: ExecutionRecord,
    /// In the order the steps began, each in its first run.
    pub steps: Vec<StepRecord>,
    pub notifications: Vec<NotificationRecord>,
}

/// An execution of the group: built in memory, or applied as it comes.
enum Member {
    Fresh {
        execution: Box<FreshExecution>,
        /// The entries it was built from, for applying one by one.
        entries: Vec<Entry>,
    },
    Applied,
}

/// The entries of one group, merged per execution.
#[derive(Default)]
pub struct Group {
    members: HashMap<String, Member>,
    /// Fresh executions in the order they began.
    order: Vec<String>,
}

impl Group {
    /// Takes one entry. An entry of an execution that did not begin in
    /// this group is applied at once through `store`; a failure goes to
    /// `failed`.
    pub fn push(&mut self, entry: Entry, store: &mut SqliteStore, failed: &mut dyn FnMut(StoreError)) {
        if let Some(execution) = fresh(&entry) {
            if !self.members.contains_key(&execution.record.id) {
                let id = execution.record.id.clone();
                self.order.push(id.clone());
                self.members.insert(
                    id,
                    Member::Fresh {
                        execution: Box::new(execution),
                        entries: vec![entry],
                    },
                );
                return;
            }
        }
        let id = entry_id(&entry).to_string();
        match self.members.get_mut(&id) {
            Some(Member::Fresh { execution, entries }) => {
                let merged = merge(execution, &entry);
                entries.push(entry);
                if !merged {
                    // Something only the tables can decide, such as a step
                    // that ends without having begun: the execution falls
                    // back to its entries, in order.
                    let Some(Member::Fresh { entries, .. }) = self.members.insert(id, Member::Applied) else {
                        return;
                    };
                    for entry in entries {
                        if let Err(error) = entry.apply(store) {
                            failed(error);
                        }
                    }
                }
            }
            Some(Member::Applied) => {
                if let Err(error) = entry.apply(store) {
                    failed(error);
                }
            }
            None => {
                self.members.insert(id, Member::Applied);
                if let Err(error) = entry.apply(store) {
                    failed(error);
                }
            }
        }
    }

    /// Inserts the fresh executions, and empties the group. A failure
    /// other than a taken id goes to `failed`, and the caller must then
    /// roll the group back.
    pub fn flush(&mut self, store: &mut SqliteStore, failed: &mut dyn FnMut(StoreError)) {
        for id in self.order.drain(..) {
            let Some(Member::Fresh { execution, entries }) = self.members.remove(&id) else {
                continue;
            };
            match store.insert_fresh(&execution) {
                Ok(()) => {}
                // Nothing was written: each entry fails as it would alone.
                Err(StoreError::AlreadyExists { .. }) => {
                    for entry in entries {
                        if let Err(error) = entry.apply(store) {
                            failed(error);
                        }
                    }
                }
                // Part of the rows may be written, so the group must not
                // commit.
                Err(error) => failed(error),
            }
        }
        self.members.clear();
    }
}

fn entry_id(entry: &Entry) -> &str {
    match entry {
        Entry::BeginExecution { id, .. }
        | Entry::BeginStep { id, .. }
        | Entry::EndStep { id, .. }
        | Entry::SetStatus { id, .. }
        | Entry::Notification { id, .. } => id,
    }
}

/// Builds the rows a `begin_execution` entry inserts.
fn fresh(entry: &Entry) -> Option<FreshExecution> {
    let Entry::BeginExecution {
        id,
        workflow,
        source_path,
        workflow_hash,
        step_hashes,
        step_names,
        entity,
        vars,
        started_at,
        pid,
    } = entry
    else {
        return None;
    };
    Some(FreshExecution {
        record: ExecutionRecord {
            id: id.clone(),
            workflow: workflow.clone(),
            source_path: source_path.clone(),
            workflow_hash: workflow_hash.clone(),
            step_hashes: step_hashes.clone(),
            step_names: step_names.clone(),
            status: ExecutionStatus::Running,
            entity_before: entity.clone(),
            entity: entity.clone(),
            vars: vars.clone(),
            next_step: 0,
            started_at: started_at.clone(),
            updated_at: started_at.clone(),
            finished_at: None,
            pid: *pid,
        },
        steps: Vec::new(),
        notifications: Vec::new(),
    })
}

/// Changes the rows of `execution` as `entry` would change the tables, and
/// returns false when the tables would fail it or it needs them to decide.
fn merge(execution: &mut FreshExecution, entry: &Entry) -> bool {
    match entry {
        // The same id begun twice fails in the tables.
        Entry::BeginExecution { .. } => false,
        Entry::BeginStep {
            index,
            name,
            methods,
            at,
            pid,
            ..
        } => {
            // A second run of a step counts runs and tags its attempts,
            // which only the tables do.
            if execution.steps.iter().any(|step| step.index == *index) {
                return false;
            }
            execution.record.pid = *pid;
            execution.record.updated_at = at.clone();
            execution.steps.push(StepRecord {
                index: *index,
                name: name.clone(),
                status: StepStatus::Running,
                runs: 1,
                started_at: at.clone(),
                finished_at: None,
                error: None,
                code: None,
                methods: methods.clone(),
                llm_usage: Value::Array(Vec::new()),
                attempts: Vec::new(),
            });
            true
        }
        Entry::EndStep {
            index,
            status,
            error,
            code,
            attempts,
            llm_usage,
            entity,
            vars,
            next_step,
            at,
            ..
        } => {
            let Some(step) = execution.steps.iter_mut().find(|step| step.index == *index) else {
                return false;
            };
            step.status = *status;
            step.finished_at = Some(at.clone());
            step.error = error.clone();
            step.code = code.clone();
            step.llm_usage = llm_usage.clone();
            step.attempts.extend(attempts.iter().cloned());
            execution.record.entity = entity.clone();
            execution.record.vars = vars.clone();
            execution.record.next_step = *next_step;
            execution.record.updated_at = at.clone();
            true
        }
        Entry::SetStatus { status, at, .. } => {
            execution.record.status = *status;
            execution.record.updated_at = at.clone();
            execution.record.finished_at =
                matches!(status, ExecutionStatus::Succeeded | ExecutionStatus::Failed).then(|| at.clone());
            true
        }
        Entry::Notification { notification, .. } => {
            execution.notifications.push(notification.clone());
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AttemptRecord, Store};
    use serde_json::{json, Map};

    fn begin_execution(id: &str) -> Entry {
        crate::store::journal::begin_execution_entry(id, &["One", "Two"])
    }

    fn begin_step(id: &str, index: usize, at: &str) -> Entry {
        Entry::BeginStep {
            id: id.to_string(),
            index,
            name: ["One", "Two"][index].to_string(),
            methods: vec!["POST".to_string()],
            at: at.to_string(),
            pid: 8,
        }
    }

    fn end_step(id: &str, index: usize, status: StepStatus, at: &str) -> Entry {
        Entry::EndStep {
            id: id.to_string(),
            index,
            status,
            error: (status != StepStatus::Succeeded).then(|| "HTTP 503".to_string()),
            code: (status != StepStatus::Succeeded).then(|| "flow::run::http_status".to_string()),
            attempts: (1..=2)
                .map(|number| AttemptRecord {
                    action: 0,
                    number,
                    method: "POST".to_string(),
                    url: format!("http://127.0.0.1:9/{id}/{index}"),
                    status_code: Some(if number == 2 { 503 } else { 429 }),
                    duration_ms: 4,
                    waited_ms: 1000,
                    error: None,
                })
                .collect(),
            llm_usage: json!([{"model": "m", "prompt_tokens": 3}]),
            entity: json!({"id": id, "step": index}),
            vars: Map::from_iter([("n".to_string(), json!(index))]),
            next_step: index + 1,
            at: at.to_string(),
        }
    }

    fn notification(id: &str) -> Entry {
        Entry::Notification {
            id: id.to_string(),
            notification: NotificationRecord {
                step: "Two".to_string(),
                severity: "error".to_string(),
                error: "HTTP 503".to_string(),
                channels: vec!["stderr".to_string()],
                delivery_error: None,
                sent_at: "2026-01-01T00:00:04Z".to_string(),
            },
        }
    }

    fn set_status(id: &str, status: ExecutionStatus, at: &str) -> Entry {
        Entry::SetStatus {
            id: id.to_string(),
            status,
            at: at.to_string(),
        }
    }

    fn life(id: &str) -> Vec<Entry> {
        vec![
            begin_execution(id),
            begin_step(id, 0, "2026-01-01T00:00:01Z"),
            end_step(id, 0, StepStatus::Succeeded, "2026-01-01T00:00:02Z"),
            begin_step(id, 1, "2026-01-01T00:00:03Z"),
            end_step(id, 1, StepStatus::Failed, "2026-01-01T00:00:04Z"),
            notification(id),
            set_status(id, ExecutionStatus::Paused, "2026-01-01T00:00:05Z"),
        ]
    }

    /// Applies `groups` of entries one by one to one store and merged to
    /// another, and returns both stores with the errors each reported.
    fn both(
        dir: &tempfile::TempDir,
        before: &[Entry],
        groups: &[Vec<Entry>],
    ) -> ((SqliteStore, Vec<String>), (SqliteStore, Vec<String>)) {
        let mut alone = SqliteStore::open(&dir.path().join("alone.db")).unwrap();
        let mut merged = SqliteStore::open(&dir.path().join("merged.db")).unwrap();
        for entry in before {
            entry.apply(&mut alone).unwrap();
            entry.apply(&mut merged).unwrap();
        }
        let mut alone_errors = Vec::new();
        let mut merged_errors = Vec::new();
        for entries in groups {
            alone.begin_group().unwrap();
            for entry in entries {
                if let Err(error) = entry.apply(&mut alone) {
                    alone_errors.push(error.to_string());
                }
            }
            alone.commit_group().unwrap();

            merged.begin_group().unwrap();
            let mut group = Group::default();
            let mut failed = |error: StoreError| merged_errors.push(error.to_string());
            for entry in entries {
                group.push(entry.clone(), &mut merged, &mut failed);
            }
            group.flush(&mut merged, &mut failed);
            merged.commit_group().unwrap();
        }
        ((alone, alone_errors), (merged, merged_errors))
    }

    fn assert_same(alone: &SqliteStore, merged: &SqliteStore, ids: &[&str]) {
        for id in ids {
            assert_eq!(
                alone.execution(id).unwrap(),
                merged.execution(id).unwrap(),
                "{id}"
            );
            assert_eq!(alone.steps(id).unwrap(), merged.steps(id).unwrap(), "{id}");
            assert_eq!(
                alone.notifications(id).unwrap(),
                merged.notifications(id).unwrap(),
                "{id}"
            );
        }
        assert_eq!(alone.executions(None).unwrap(), merged.executions(None).unwrap());
    }

    #[test]
    fn merged_life_cycle_matches_entries_applied_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ((alone, alone_errors), (merged, merged_errors)) = both(&dir, &[], &[life("ex-1")]);
        assert_same(&alone, &merged, &["ex-1"]);
        assert_eq!(merged_errors, Vec::<String>::new());
        assert_eq!(alone_errors, Vec::<String>::new());
        let steps = merged.steps("ex-1").unwrap();
        assert_eq!(steps[1].status, StepStatus::Failed);
        assert_eq!(steps[1].attempts.len(), 2);
    }

    #[test]
    fn interleaved_executions_across_groups_match() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (life("ex-a"), life("ex-b"));
        // ex-a begins in the first group and ends in the second; ex-b runs
        // inside the second, between ex-a's entries.
        let mut second: Vec<Entry> = Vec::new();
        for (index, entry) in a[3..].iter().enumerate() {
            second.push(entry.clone());
            if let Some(other) = b.get(index * 2) {
                second.push(other.clone());
            }
            if let Some(other) = b.get(index * 2 + 1) {
                second.push(other.clone());
            }
        }
        let groups = vec![a[..3].to_vec(), second];
        let ((alone, alone_errors), (merged, merged_errors)) = both(&dir, &[], &groups);
        assert_same(&alone, &merged, &["ex-a", "ex-b"]);
        assert_eq!(alone_errors, Vec::<String>::new());
        assert_eq!(merged_errors, Vec::<String>::new());
    }

    #[test]
    fn group_taken_id_fails_as_alone() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = life("ex-1");
        let ((alone, alone_errors), (merged, merged_errors)) = both(&dir, &earlier, &[life("ex-1")]);
        assert_same(&alone, &merged, &["ex-1"]);
        assert_eq!(
            alone_errors,
            vec!["execution `ex-1` is already in the store".to_string()]
        );
        assert_eq!(merged_errors, alone_errors);
        // The second life's steps ran again on the existing execution.
        assert_eq!(merged.steps("ex-1").unwrap()[0].runs, 2);
    }

    #[test]
    fn group_step_ended_unbegun_fails_as_alone() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            begin_execution("ex-1"),
            end_step("ex-1", 0, StepStatus::Succeeded, "2026-01-01T00:00:02Z"),
            set_status("ex-1", ExecutionStatus::Failed, "2026-01-01T00:00:03Z"),
        ];
        let ((alone, alone_errors), (merged, merged_errors)) = both(&dir, &[], &[entries]);
        assert_same(&alone, &merged, &["ex-1"]);
        assert_eq!(
            alone_errors,
            vec!["store error: cannot end step 0 of execution `ex-1`: the step was never begun".to_string()]
        );
        assert_eq!(merged_errors, alone_errors);
    }

    #[test]
    fn group_step_run_twice_matches() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            begin_execution("ex-1"),
            begin_step("ex-1", 0, "2026-01-01T00:00:01Z"),
            end_step("ex-1", 0, StepStatus::Failed, "2026-01-01T00:00:02Z"),
            begin_step("ex-1", 0, "2026-01-01T00:00:03Z"),
            end_step("ex-1", 0, StepStatus::Succeeded, "2026-01-01T00:00:04Z"),
        ];
        let ((alone, _), (merged, merged_errors)) = both(&dir, &[], &[entries]);
        assert_same(&alone, &merged, &["ex-1"]);
        assert_eq!(merged_errors, Vec::<String>::new());
        assert_eq!(merged.steps("ex-1").unwrap()[0].runs, 2);
    }
}
