//! The checker's entry points and its report: per-key checks with the search of
//! `search.rs`, an exhaustive reference checker for tests, and saving a failed run.

use std::collections::BTreeMap;
use std::io::Write as _;

use serde::Serialize;

use crate::search::search;
use crate::{Model, Operation};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search budget ran out before the search could decide.
    Inconclusive,
}

/// The verdict on one key's sub-history.
#[derive(Clone, Debug, Serialize)]
pub struct KeyReport {
    pub key: String,
    pub operations: usize,
    pub verdict: Verdict,
    /// For anything but `Linearizable`: the longest partial linearization the search
    /// found and the operation it could not place after it, for debugging.
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// One per key, in key order.
    pub keys: Vec<KeyReport>,
    /// Search steps spent on all keys together, for choosing budgets.
    pub steps: u64,
}

impl Report {
    pub fn anomalies(&self) -> Vec<&KeyReport> {
        self.keys
            .iter()
            .filter(|key| key.verdict == Verdict::NotLinearizable)
            .collect()
    }

    pub fn inconclusive(&self) -> Vec<&KeyReport> {
        self.keys
            .iter()
            .filter(|key| key.verdict == Verdict::Inconclusive)
            .collect()
    }

    /// No anomalies and nothing inconclusive.
    pub fn is_linearizable(&self) -> bool {
        self.keys.iter().all(|key| key.verdict == Verdict::Linearizable)
    }
}

/// Checks every key's sub-history on its own. `budget`: the most search steps per key
/// before Inconclusive.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>], budget: u64) -> Report {
    let mut by_key = BTreeMap::<&str, Vec<_>>::new();
    for operation in history {
        by_key.entry(&operation.key).or_default().push(operation);
    }
    let mut report = Report {
        keys: Vec::with_capacity(by_key.len()),
        steps: 0,
    };
    for (key, operations) in by_key {
        let search = search(model, &operations, budget);
        report.steps += search.steps;
        report.keys.push(KeyReport {
            key: key.to_owned(),
            operations: operations.len(),
            verdict: search.verdict,
            detail: search.detail,
        });
    }
    report
}

/// One key's operations (all with the same key).
pub fn check_operations<M: Model>(model: &M, operations: &[Operation<M::Input, M::Output>], budget: u64) -> Verdict {
    let operations: Vec<_> = operations.iter().collect();
    search(model, &operations, budget).verdict
}

/// Histories longer than this are too long to enumerate orders of.
const BRUTE_FORCE_LIMIT: usize = 9;

/// Exhaustive reference checker for small histories (tries every order that respects
/// real time), for cross-checking in tests: `None` above 9 operations.
pub fn check_brute_force<M: Model>(model: &M, operations: &[Operation<M::Input, M::Output>]) -> Option<bool> {
    if operations.len() > BRUTE_FORCE_LIMIT {
        return None;
    }
    let mut placed = vec![false; operations.len()];
    Some(extend_order(model, operations, &mut placed, &model.init()))
}

/// Whether the operations not yet `placed` can follow, in some order, from `state`.
fn extend_order<M: Model>(
    model: &M,
    operations: &[Operation<M::Input, M::Output>],
    placed: &mut [bool],
    state: &M::State,
) -> bool {
    if placed.iter().all(|placed| *placed) {
        return true;
    }
    for next in 0..operations.len() {
        let must_wait = (0..operations.len())
            .any(|other| !placed[other] && operations[other].return_time() < operations[next].invoked);
        if placed[next] || must_wait {
            continue;
        }
        let (after, output) = model.step(state, &operations[next].input);
        if operations[next].observed().is_some_and(|observed| *observed != output) {
            continue;
        }
        placed[next] = true;
        if extend_order(model, operations, placed, &after) {
            return true;
        }
        placed[next] = false;
    }
    false
}

/// Writes the history (and the report) as pretty JSON, for debugging a failure.
pub fn save_json<I: Serialize, O: Serialize>(
    path: &std::path::Path,
    history: &[Operation<I, O>],
    report: &Report,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Saved<'a, I, O> {
        report: &'a Report,
        history: &'a [Operation<I, O>],
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer_pretty(&mut file, &Saved { report, history }).map_err(std::io::Error::other)?;
    file.flush()
}
