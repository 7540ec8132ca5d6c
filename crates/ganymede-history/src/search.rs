//! The search for a linearization of one key's operations: Wing & Gong's, with Lowe's
//! cache of explored positions, and two prunings for unanswered operations.
//!
//! Answered operations are calls and returns in one doubly-linked list, in time order.
//! At each position the search may linearize any remaining operation invoked before the
//! first remaining return; when none is left that works, the operation of that return
//! would have to take effect after its own return, and the search backtracks.
//!
//! Unanswered operations never return, so they stay candidates from their invocation
//! on, and without care each one multiplies the positions to explore. They are kept
//! out of the list, grouped by input ("twins"), and pruned twice:
//! - Twins are interchangeable once both are invoked: a linearization that uses a later
//!   one while an earlier one is unused works as well with the earlier one in its place.
//!   So each group is linearized in invocation order, and a position is the answered
//!   operations linearized, the state, and how many of each group are used.
//! - A position is skipped if one explored before had the same answered operations and
//!   state and used no more of any group: whatever completes from here completes from
//!   there too, the extra unanswered operations taking effect after everything else.
//!   (That the search stays complete follows by induction on the answered operations
//!   left, then on the unanswered ones a completion places before the last answered.)
//!
//! A step, what the budget counts, is one candidate tried or one backtrack.

use std::collections::HashMap;

use crate::{Model, Operation, Verdict};

/// Where the search ended for one key.
pub(crate) struct Search {
    pub verdict: Verdict,
    pub steps: u64,
    pub detail: Option<String>,
}

/// Ends the list of call and return entries.
const END: usize = usize::MAX;

/// Which answered operations a position has linearized.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(bits: usize) -> Self {
        Bitset(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, bit: usize, value: bool) {
        let mask = 1u64 << (bit % 64);
        if value {
            self.0[bit / 64] |= mask;
        } else {
            self.0[bit / 64] &= !mask;
        }
    }
}

/// The calls and returns of answered operations not yet linearized, in time order, as a
/// doubly-linked list over arrays. Entry 0 is the head sentinel.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    time: Vec<u64>,
    /// Which operation each entry belongs to (unused for the sentinel).
    operation: Vec<usize>,
    is_call: Vec<bool>,
    /// By operation: its call and return entries, lifted out together.
    call_of: Vec<usize>,
    return_of: Vec<usize>,
}

impl Entries {
    fn new<I, O>(operations: &[&Operation<I, O>], answered: &[usize]) -> Self {
        // At equal times calls go first: an operation returning at t and one invoked at t
        // are concurrent, since real-time order needs `returned < invoked`.
        let mut events: Vec<(u64, bool, usize)> = answered
            .iter()
            .flat_map(|&index| {
                [
                    (operations[index].invoked, false, index),
                    (operations[index].return_time(), true, index),
                ]
            })
            .collect();
        events.sort_unstable();
        let count = events.len() + 1;
        let mut entries = Entries {
            next: (1..=count).map(|next| if next == count { END } else { next }).collect(),
            prev: (0..count).map(|entry| entry.wrapping_sub(1)).collect(),
            time: vec![0; count],
            operation: vec![0; count],
            is_call: vec![false; count],
            call_of: vec![0; operations.len()],
            return_of: vec![0; operations.len()],
        };
        for (position, (time, is_return, operation)) in events.into_iter().enumerate() {
            let entry = position + 1;
            (entries.time[entry], entries.operation[entry], entries.is_call[entry]) = (time, operation, !is_return);
            let ends = if is_return {
                &mut entries.return_of
            } else {
                &mut entries.call_of
            };
            ends[operation] = entry;
        }
        entries
    }

    fn first(&self) -> usize {
        self.next[0]
    }

    /// The first remaining return; there is one while an answered operation remains.
    fn first_return(&self) -> usize {
        let mut entry = self.first();
        while entry != END && self.is_call[entry] {
            entry = self.next[entry];
        }
        entry
    }

    fn lift(&mut self, operation: usize) {
        for entry in [self.call_of[operation], self.return_of[operation]] {
            let (prev, next) = (self.prev[entry], self.next[entry]);
            self.next[prev] = next;
            if next != END {
                self.prev[next] = prev;
            }
        }
    }

    /// Undoes `lift(operation)`: the lifted entries kept their own links for this.
    fn unlift(&mut self, operation: usize) {
        for entry in [self.return_of[operation], self.call_of[operation]] {
            let (prev, next) = (self.prev[entry], self.next[entry]);
            self.next[prev] = entry;
            if next != END {
                self.prev[next] = entry;
            }
        }
    }
}

/// How an operation counts in a position.
#[derive(Clone, Copy)]
enum Slot {
    /// Its bit in the position's bitset of answered operations.
    Answered(usize),
    /// Its group of unanswered twins.
    Unanswered(usize),
}

/// A search position, without its state: what has been linearized.
struct Position {
    answered: Bitset,
    /// For each group of twins, how many (the earliest invoked) are linearized.
    twins_used: Vec<usize>,
}

/// The positions explored so far (Lowe's cache), by answered operations and state: the
/// least `twins_used` vectors explored with them.
type Explored<S> = HashMap<(Bitset, S), Vec<Vec<usize>>>;

impl Position {
    fn set(&mut self, slot: Slot, linearized: bool) {
        match slot {
            Slot::Answered(bit) => self.answered.set(bit, linearized),
            Slot::Unanswered(group) if linearized => self.twins_used[group] += 1,
            Slot::Unanswered(group) => self.twins_used[group] -= 1,
        }
    }

    /// Whether this position, reaching `state`, is worth exploring; records it if so.
    fn is_new<S: Clone + Eq + std::hash::Hash>(&self, explored: &mut Explored<S>, state: &S) -> bool {
        let at_most = |lower: &Vec<usize>, upper: &Vec<usize>| lower.iter().zip(upper).all(|(low, up)| low <= up);
        let seen = explored.entry((self.answered.clone(), state.clone())).or_default();
        if seen.iter().any(|seen| at_most(seen, &self.twins_used)) {
            return false;
        }
        // Those this position subsumes need no keeping: whatever they would skip, it does.
        seen.retain(|seen| !at_most(&self.twins_used, seen));
        seen.push(self.twins_used.clone());
        true
    }
}

/// Where the walk for the next candidate operation is.
#[derive(Clone, Copy)]
enum Cursor {
    /// At this entry of the list.
    Answered(usize),
    /// At this group of twins, taking those invoked by `horizon`, the first return.
    Unanswered { group: usize, horizon: u64 },
}

pub(crate) fn search<M: Model>(model: &M, operations: &[&Operation<M::Input, M::Output>], budget: u64) -> Search {
    let answered: Vec<usize> = (0..operations.len())
        .filter(|&index| operations[index].observed().is_some())
        .collect();
    let mut slots = vec![Slot::Answered(0); operations.len()];
    for (bit, &index) in answered.iter().enumerate() {
        slots[index] = Slot::Answered(bit);
    }
    let twins = group_twins(operations);
    for (group, members) in twins.iter().enumerate() {
        for &index in members {
            slots[index] = Slot::Unanswered(group);
        }
    }
    let mut entries = Entries::new(operations, &answered);
    let mut position = Position {
        answered: Bitset::new(answered.len()),
        twins_used: vec![0; twins.len()],
    };
    let mut explored: Explored<M::State> = HashMap::new();
    let mut state = model.init();
    // The linearization so far: each operation and the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut answered_left = answered.len();
    let mut longest = Longest {
        answered: 0,
        operations: Vec::new(),
        state: state.clone(),
        blocked_by: None,
    };
    let mut steps = 0;
    let mut cursor = Cursor::Answered(entries.first());
    let verdict = loop {
        // Operations without an answer can all take effect after everything else.
        if answered_left == 0 {
            break Verdict::Linearizable;
        }
        if steps >= budget {
            break Verdict::Inconclusive;
        }
        steps += 1;
        let candidate = match cursor {
            Cursor::Answered(entry) if entries.is_call[entry] => {
                cursor = Cursor::Answered(entries.next[entry]);
                Some(entries.operation[entry])
            }
            // An answered operation remains, so the walk meets a return before the end.
            Cursor::Answered(entry) => {
                cursor = Cursor::Unanswered {
                    group: 0,
                    horizon: entries.time[entry],
                };
                continue;
            }
            Cursor::Unanswered { group, horizon } => (group..twins.len()).find_map(|group| {
                let next = twins[group].get(position.twins_used[group])?;
                (operations[*next].invoked <= horizon).then(|| {
                    cursor = Cursor::Unanswered {
                        group: group + 1,
                        horizon,
                    };
                    *next
                })
            }),
        };
        if let Some(operation) = candidate {
            let (after, output) = model.step(&state, &operations[operation].input);
            if operations[operation]
                .observed()
                .is_some_and(|observed| *observed != output)
            {
                continue;
            }
            position.set(slots[operation], true);
            if !position.is_new(&mut explored, &after) {
                position.set(slots[operation], false);
                continue;
            }
            stack.push((operation, std::mem::replace(&mut state, after)));
            if let Slot::Answered(_) = slots[operation] {
                entries.lift(operation);
                answered_left -= 1;
            }
            longest.record(answered.len() - answered_left, &stack, &state);
            cursor = Cursor::Answered(entries.first());
            continue;
        }
        // Nothing invoked before the first return can go next: that return's operation
        // would take effect after it. Undo the last step and try what comes after it.
        longest
            .blocked_by
            .get_or_insert(entries.operation[entries.first_return()]);
        let Some((undone, before)) = stack.pop() else {
            break Verdict::NotLinearizable;
        };
        state = before;
        position.set(slots[undone], false);
        cursor = match slots[undone] {
            Slot::Answered(_) => {
                entries.unlift(undone);
                answered_left += 1;
                Cursor::Answered(entries.next[entries.call_of[undone]])
            }
            Slot::Unanswered(group) => Cursor::Unanswered {
                group: group + 1,
                horizon: entries.time[entries.first_return()],
            },
        };
    };
    let detail = match verdict {
        Verdict::Linearizable => None,
        Verdict::NotLinearizable => Some(longest.describe(model, operations)),
        Verdict::Inconclusive => Some(format!(
            "search budget of {budget} steps exhausted; {}",
            longest.describe(model, operations)
        )),
    };
    Search { verdict, steps, detail }
}

/// The unanswered operations grouped by input, each group in invocation order. Inputs
/// are the same when they serialize the same: the saved history could not tell them
/// apart either.
fn group_twins<I: serde::Serialize, O>(operations: &[&Operation<I, O>]) -> Vec<Vec<usize>> {
    let mut unanswered: Vec<usize> = (0..operations.len())
        .filter(|&index| operations[index].observed().is_none())
        .collect();
    unanswered.sort_by_key(|&index| (operations[index].invoked, index));
    let mut group_of_input: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for index in unanswered {
        // An input that does not serialize has no twins: less pruning, still correct.
        let group = match serde_json::to_string(&operations[index].input) {
            Ok(input) => *group_of_input.entry(input).or_insert(groups.len()),
            Err(_) => groups.len(),
        };
        if group == groups.len() {
            groups.push(Vec::new());
        }
        groups[group].push(index);
    }
    groups
}

/// The partial linearization with the most answered operations the search reached, for
/// the report's detail. (Unanswered ones can always be added; they explain nothing.)
struct Longest<S> {
    answered: usize,
    operations: Vec<usize>,
    state: S,
    /// The first return the search met after reaching it: the operation that could not
    /// be placed next (no answered operation was placed in between, or that would be the
    /// longest, and unanswered ones do not move the first return).
    blocked_by: Option<usize>,
}

impl<S: Clone + std::fmt::Debug> Longest<S> {
    fn record(&mut self, answered: usize, stack: &[(usize, S)], state: &S) {
        if answered > self.answered {
            self.answered = answered;
            self.operations = stack.iter().map(|(operation, _)| *operation).collect();
            self.state = state.clone();
            self.blocked_by = None;
        }
    }

    fn describe<M: Model<State = S>>(&self, model: &M, operations: &[&Operation<M::Input, M::Output>]) -> String {
        // The last steps are what explains a failure; the rest is in the saved history.
        const SHOWN: usize = 8;
        let mut detail = format!(
            "longest partial linearization: {} of {} answered operations, ending",
            self.answered,
            operations
                .iter()
                .filter(|operation| operation.observed().is_some())
                .count()
        );
        if self.operations.len() > SHOWN {
            detail += " …";
        }
        for &index in &self.operations[self.operations.len().saturating_sub(SHOWN)..] {
            let operation = operations[index];
            detail += &match operation.observed() {
                Some(output) => format!(" [client {} {:?} → {output:?}]", operation.client, operation.input),
                None => format!(" [client {} {:?} → no answer]", operation.client, operation.input),
            };
        }
        detail += &format!(" in state {:?}", self.state);
        if let Some(operation) = self.blocked_by.map(|index| operations[index]) {
            let (_, expected) = model.step(&self.state, &operation.input);
            detail += &format!(
                "; then client {} {:?} (invoked {} ns, returned {} ns) must take effect: it observed {:?}, \
                 the model gives {expected:?} there",
                operation.client,
                operation.input,
                operation.invoked,
                operation.return_time(),
                operation.observed().unwrap_or(&expected),
            );
        }
        detail
    }
}
