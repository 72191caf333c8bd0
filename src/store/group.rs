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
//!
//! Entries arrive encoded, as in the journal. The rows of a fresh
//! execution take the values of its decoded entries without copying them,
//! and its JSON columns take the entries' JSON text without parsing it. The
//! group keeps the encoded entries, which it decodes again only to apply
//! them one by one.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::journal::{BeginExecution, BeginStep, EndStep, Entry, Json, Notification, SetStatus};
use super::sqlite::SqliteStore;
use super::{AttemptRecord, ExecutionStatus, NotificationRecord, StepStatus, StoreError};

/// An execution that began in the current group, as its rows will be. Its
/// JSON columns keep the text its entries were decoded from.
#[derive(Debug)]
pub struct FreshExecution {
    pub id: String,
    pub workflow: String,
    pub source_path: String,
    pub workflow_hash: String,
    pub step_hashes: Json<'static, [String]>,
    pub step_names: Json<'static, [String]>,
    pub status: ExecutionStatus,
    pub entity_before: Json<'static, Value>,
    pub entity: Json<'static, Value>,
    pub vars: Json<'static, Map<String, Value>>,
    pub next_step: usize,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub pid: u32,
    /// In the order the steps began, each in its first run.
    pub steps: Vec<FreshStep>,
    pub notifications: Vec<NotificationRecord>,
}

/// A step of a [`FreshExecution`], in its first run, as its row will be.
#[derive(Debug)]
pub struct FreshStep {
    pub index: usize,
    pub name: String,
    pub status: StepStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub code: Option<String>,
    pub methods: Json<'static, [String]>,
    /// `None` until the step ends, for an empty array.
    pub llm_usage: Option<Json<'static, Value>>,
    pub attempts: Vec<AttemptRecord>,
}

/// A fresh execution with the encoded entries it was built from.
struct Fresh {
    execution: FreshExecution,
    /// For applying one by one, as [`Entry::encode`] made them.
    entries: Vec<Vec<u8>>,
}

/// An execution of the group: built in memory, or applied as it comes.
enum Member {
    /// Built in memory, at this index of [`Group::fresh`].
    Fresh(usize),
    Applied,
}

/// The entries of one group, merged per execution.
#[derive(Default)]
pub struct Group {
    members: HashMap<String, Member>,
    /// Fresh executions in the order they began, `None` for one that fell
    /// back to its entries.
    fresh: Vec<Option<Fresh>>,
}

impl Group {
    /// Takes one entry, as [`Entry::encode`] made it. An entry of an
    /// execution that did not begin in this group is applied at once
    /// through `store`, and a failure goes to `failed`.
    pub fn push(&mut self, encoded: Vec<u8>, store: &mut SqliteStore, failed: &mut dyn FnMut(StoreError)) {
        let entry = match Entry::decode(&encoded) {
            Ok(entry) => entry,
            Err(error) => return failed(error),
        };
        match self.members.get(entry.id()) {
            Some(Member::Fresh(index)) => {
                let index = *index;
                let Some(fresh) = self.fresh[index].as_mut() else {
                    return;
                };
                match merge(&mut fresh.execution, entry) {
                    Ok(()) => fresh.entries.push(encoded),
                    // Something only the tables can decide, such as a step
                    // that ends without having begun: the execution falls
                    // back to its entries, in order.
                    Err(entry) => {
                        let earlier = self.fresh[index]
                            .take()
                            .map_or_else(Vec::new, |fresh| fresh.entries);
                        self.members.insert(entry.id().to_string(), Member::Applied);
                        apply_encoded(earlier, store, failed);
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
            None => match fresh(entry) {
                Ok(execution) => {
                    self.members
                        .insert(execution.id.clone(), Member::Fresh(self.fresh.len()));
                    self.fresh.push(Some(Fresh {
                        execution,
                        entries: vec![encoded],
                    }));
                }
                Err(entry) => {
                    self.members.insert(entry.id().to_string(), Member::Applied);
                    if let Err(error) = entry.apply(store) {
                        failed(error);
                    }
                }
            },
        }
    }

    /// Inserts the fresh executions, and empties the group. A failure
    /// other than a taken id goes to `failed`, and the caller must then
    /// roll the group back.
    pub fn flush(&mut self, store: &mut SqliteStore, failed: &mut dyn FnMut(StoreError)) {
        let fresh: Vec<Fresh> = self.fresh.drain(..).flatten().collect();
        self.members.clear();
        if fresh.is_empty() {
            return;
        }
        match store.insert_fresh(fresh.iter().map(|fresh| &fresh.execution)) {
            // Nothing was written for a taken id: each of its entries fails
            // as it would alone.
            Ok(taken_positions) => {
                let mut duplicates = taken_positions.into_iter().peekable();
                for (position, fresh) in fresh.into_iter().enumerate() {
                    if duplicates.next_if_eq(&position).is_some() {
                        apply_encoded(fresh.entries, store, failed);
                    }
                }
            }
            // Part of the rows may be written, so the group must not
            // commit.
            Err(error) => failed(error),
        }
    }
}

/// Decodes and applies `entries` in order, and passes each failure to `failed`.
fn apply_encoded(entries: Vec<Vec<u8>>, store: &mut SqliteStore, failed: &mut dyn FnMut(StoreError)) {
    for encoded in entries {
        if let Err(error) = Entry::decode(&encoded).and_then(|entry| entry.apply(store)) {
            failed(error);
        }
    }
}

/// Builds the rows a `begin_execution` entry inserts, taking its values.
/// Gives any other entry back.
fn fresh(entry: Entry<'static>) -> Result<FreshExecution, Entry<'static>> {
    let Entry::BeginExecution(BeginExecution {
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
    }) = entry
    else {
        return Err(entry);
    };
    let started_at = started_at.into_owned();
    Ok(FreshExecution {
        id: id.into_owned(),
        workflow: workflow.into_owned(),
        source_path: source_path.into_owned(),
        workflow_hash: workflow_hash.into_owned(),
        step_hashes,
        step_names,
        status: ExecutionStatus::Running,
        entity_before: entity.clone(),
        entity,
        vars,
        next_step: 0,
        updated_at: started_at.clone(),
        started_at,
        finished_at: None,
        pid,
        steps: Vec::new(),
        notifications: Vec::new(),
    })
}

/// Changes the rows of `execution` as `entry` would change the tables,
/// taking its values. Gives the entry back, with `execution` unchanged,
/// when the tables would fail it or it needs them to decide.
fn merge(execution: &mut FreshExecution, entry: Entry<'static>) -> Result<(), Entry<'static>> {
    let position = match &entry {
        Entry::BeginStep(BeginStep { index, .. }) | Entry::EndStep(EndStep { index, .. }) => {
            execution.steps.iter().position(|step| step.index == *index)
        }
        _ => None,
    };
    match (entry, position) {
        // The same id begun twice fails in the tables.
        (entry @ Entry::BeginExecution(_), _) => Err(entry),
        // A second run of a step counts runs and tags its attempts, which
        // only the tables do.
        (entry @ Entry::BeginStep(_), Some(_)) => Err(entry),
        (
            Entry::BeginStep(BeginStep {
                index,
                name,
                methods,
                at,
                pid,
                ..
            }),
            None,
        ) => {
            let at = at.into_owned();
            execution.pid = pid;
            execution.updated_at = at.clone();
            execution.steps.push(FreshStep {
                index,
                name: name.into_owned(),
                status: StepStatus::Running,
                started_at: at,
                finished_at: None,
                error: None,
                code: None,
                methods,
                llm_usage: None,
                attempts: Vec::new(),
            });
            Ok(())
        }
        // A step that ends without having begun fails in the tables.
        (entry @ Entry::EndStep(_), None) => Err(entry),
        (
            Entry::EndStep(EndStep {
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
            }),
            Some(position),
        ) => {
            let at = at.into_owned();
            let step = &mut execution.steps[position];
            step.status = status;
            step.finished_at = Some(at.clone());
            step.error = error.map(Cow::into_owned);
            step.code = code.map(Cow::into_owned);
            step.llm_usage = Some(llm_usage);
            step.attempts.extend(attempts.into_owned());
            execution.entity = entity;
            execution.vars = vars;
            execution.next_step = next_step;
            execution.updated_at = at;
            Ok(())
        }
        (Entry::SetStatus(SetStatus { status, at, .. }), _) => {
            let at = at.into_owned();
            execution.status = status;
            execution.finished_at =
                matches!(status, ExecutionStatus::Succeeded | ExecutionStatus::Failed).then(|| at.clone());
            execution.updated_at = at;
            Ok(())
        }
        (Entry::Notification(Notification { notification, .. }), _) => {
            execution.notifications.push(notification.into_owned());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AttemptRecord, Store};
    use serde_json::json;

    fn begin_execution(id: &str) -> Entry<'static> {
        crate::store::journal::begin_execution_entry(id, &["One", "Two"])
    }

    fn begin_step(id: &str, index: usize, at: &str) -> Entry<'static> {
        Entry::BeginStep(BeginStep {
            id: id.to_string().into(),
            index,
            name: ["One", "Two"][index].into(),
            methods: Json::encoded(&["POST".to_string()][..]),
            at: at.to_string().into(),
            pid: 8,
        })
    }

    fn end_step(id: &str, index: usize, status: StepStatus, at: &str) -> Entry<'static> {
        Entry::EndStep(EndStep {
            id: id.to_string().into(),
            index,
            status,
            error: (status != StepStatus::Succeeded).then_some("HTTP 503".into()),
            code: (status != StepStatus::Succeeded).then_some("flow::run::http_status".into()),
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
            llm_usage: Json::encoded(&json!([{"model": "m", "prompt_tokens": 3}])),
            entity: Json::encoded(&json!({"id": id, "step": index})),
            vars: Json::encoded(&Map::from_iter([("n".to_string(), json!(index))])),
            next_step: index + 1,
            at: at.to_string().into(),
        })
    }

    fn notification(id: &str) -> Entry<'static> {
        Entry::Notification(Notification {
            id: id.to_string().into(),
            notification: Cow::Owned(NotificationRecord {
                step: "Two".to_string(),
                severity: "error".to_string(),
                error: "HTTP 503".to_string(),
                channels: vec!["stderr".to_string()],
                delivery_error: None,
                sent_at: "2026-01-01T00:00:04Z".to_string(),
            }),
        })
    }

    fn set_status(id: &str, status: ExecutionStatus, at: &str) -> Entry<'static> {
        Entry::SetStatus(SetStatus {
            id: id.to_string().into(),
            status,
            at: at.to_string().into(),
        })
    }

    fn life(id: &str) -> Vec<Entry<'static>> {
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
        before: &[Entry<'static>],
        groups: &[Vec<Entry<'static>>],
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
                group.push(entry.encode().unwrap(), &mut merged, &mut failed);
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
        let mut second: Vec<Entry<'static>> = Vec::new();
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
    fn group_taken_id_among_fresh_matches() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = life("ex-1");
        let entries: Vec<Entry<'static>> = [life("ex-a"), life("ex-1"), life("ex-b")].concat();
        let ((alone, alone_errors), (merged, merged_errors)) = both(&dir, &earlier, &[entries]);
        assert_same(&alone, &merged, &["ex-a", "ex-1", "ex-b"]);
        assert_eq!(
            alone_errors,
            vec!["execution `ex-1` is already in the store".to_string()]
        );
        assert_eq!(merged_errors, alone_errors);
        assert_eq!(merged.steps("ex-1").unwrap()[0].runs, 2);
        assert_eq!(merged.steps("ex-a").unwrap()[0].runs, 1);
        assert_eq!(merged.steps("ex-b").unwrap()[1].attempts.len(), 2);
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
