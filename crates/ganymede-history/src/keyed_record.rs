//! [`KeyedRecord`]: the model the cluster tests check against — one record that may or
//! may not exist, like a JupyterHub user with one field, a token, or a proxy route.

use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::Model;

/// A record that may or may not exist, holding one value of type `V`.
#[derive(Debug)]
pub struct KeyedRecord<V>(PhantomData<fn() -> V>);

/// What a client asks of the record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordInput<V> {
    /// Creates the record with this value, unless it exists.
    Create(V),
    /// Deletes the record, if it exists.
    Delete,
    /// Replaces the value of an existing record.
    Write(V),
    /// Sets the value whether or not the record exists (an upsert, like a CHP route
    /// `POST`); answered `Written`.
    Put(V),
    /// Deletes the record if it exists, answered `Deleted` either way (like a CHP route
    /// `DELETE`).
    Discard,
    Read,
}

/// What the record answers; `Exists` and `Missing` are definite failures that changed
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOutput<V> {
    Created,
    Exists,
    Deleted,
    Missing,
    Written,
    Value(Option<V>),
}

impl<V> KeyedRecord<V> {
    pub const fn new() -> Self {
        KeyedRecord(PhantomData)
    }
}

// Not derived: derives would demand the same of `V`, which the model holds none of.
impl<V> Default for KeyedRecord<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Clone for KeyedRecord<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for KeyedRecord<V> {}

impl<V: Clone + Eq + Hash + Debug + Serialize> Model for KeyedRecord<V> {
    /// The record's value, `None` while it does not exist.
    type State = Option<V>;
    type Input = RecordInput<V>;
    type Output = RecordOutput<V>;

    fn init(&self) -> Option<V> {
        None
    }

    fn step(&self, state: &Option<V>, input: &RecordInput<V>) -> (Option<V>, RecordOutput<V>) {
        match (state, input) {
            (None, RecordInput::Create(value)) => (Some(value.clone()), RecordOutput::Created),
            (Some(_), RecordInput::Create(_)) => (state.clone(), RecordOutput::Exists),
            (Some(_), RecordInput::Delete) => (None, RecordOutput::Deleted),
            (None, RecordInput::Delete | RecordInput::Write(_)) => (None, RecordOutput::Missing),
            (Some(_), RecordInput::Write(value)) => (Some(value.clone()), RecordOutput::Written),
            (_, RecordInput::Put(value)) => (Some(value.clone()), RecordOutput::Written),
            (_, RecordInput::Discard) => (None, RecordOutput::Deleted),
            (_, RecordInput::Read) => (state.clone(), RecordOutput::Value(state.clone())),
        }
    }
}
