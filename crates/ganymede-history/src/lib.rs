//! Operation histories from concurrent clients, and a checker that decides whether a
//! history is linearizable, for the Jepsen-style fault tests (issue 7).
//!
//! Clients record each operation with a [`Recorder`]: [`Recorder::invoke`] before the
//! request goes out, then [`Recorder::returned`] with the answer, or [`Recorder::unknown`]
//! when no answer came (timeout, reset connection, 5xx). [`check`] splits the history by
//! key — linearizability is compositional, so each key can be checked on its own — and
//! searches for a linearization of each key's operations against a [`Model`], a
//! deterministic sequential specification such as [`KeyedRecord`].
//!
//! The search is Wing & Gong's with Lowe's memoization, as in the `porcupine` checker:
//! calls and returns sit in one doubly-linked list in time order; the search walks it
//! from the front, tentatively linearizing each call it meets whose model output matches
//! what the client saw, and backtracks when it meets the return of an operation it has
//! not linearized yet (that operation would have to take effect after its own return).
//! A cache of (linearized operations, model state) pairs prunes every subtree that has
//! been explored before, since what can follow depends only on that pair.
//!
//! An operation that got no answer may have taken effect at any point after its
//! invocation, or never: it is checked as one that returns at +infinity with any output.
//! Taking effect after everything else is indistinguishable from never taking effect,
//! so once only such operations remain the history is linearizable. Each one would
//! double the positions to explore, so the search prunes them harder than porcupine
//! does (see `search.rs`): unanswered operations with the same input are taken in
//! invocation order, and a position is skipped when one with fewer of them linearized
//! has been explored.

mod check;
mod keyed_record;
mod recorder;
mod search;

pub use check::{KeyReport, Report, Verdict, check, check_brute_force, check_operations, save_json};
pub use keyed_record::{KeyedRecord, RecordInput, RecordOutput};
pub use recorder::{OpId, Recorder};

use serde::{Deserialize, Serialize};

/// A deterministic sequential specification of one key's object.
pub trait Model {
    type State: Clone + Eq + std::hash::Hash + std::fmt::Debug;
    /// Two inputs that serialize to the same JSON must be the same input: the checker
    /// treats unanswered operations with such inputs as interchangeable.
    type Input: Clone + std::fmt::Debug + Serialize;
    type Output: Clone + PartialEq + std::fmt::Debug + Serialize;
    fn init(&self) -> Self::State;
    /// Applies `input` to `state` sequentially: the new state and what the op returns.
    fn step(&self, state: &Self::State, input: &Self::Input) -> (Self::State, Self::Output);
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<O> {
    /// The client got an answer: `output` (which may be a definite failure such as
    /// "already exists" — the model's outputs say which), at `returned` ns.
    Returned { output: O, returned: u64 },
    /// No answer (timeout, connection reset, 5xx): it may or may not have taken effect,
    /// at any time after its invocation.
    Unknown,
}

/// One client operation on one key, with its real-time interval.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Operation<I, O> {
    pub client: u64,
    pub key: String,
    pub input: I,
    /// Nanoseconds since the recorder started.
    pub invoked: u64,
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// When the operation returned, +infinity (`u64::MAX`) if it never did. A return
    /// before the invocation can only come from a hand-made history (the recorder's clock
    /// is monotonic); it is read as a return at the invocation, so that it is still an
    /// interval.
    pub(crate) fn return_time(&self) -> u64 {
        match self.outcome {
            Outcome::Returned { returned, .. } => returned.max(self.invoked),
            Outcome::Unknown => u64::MAX,
        }
    }

    /// What the client saw, if it saw anything: what the model's output must equal.
    pub(crate) fn observed(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }
}
