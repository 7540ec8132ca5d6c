//! Recording operations as concurrent clients invoke and complete them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::{Operation, Outcome};

/// Which recorded operation a completion belongs to: its index in the recorder's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(usize);

/// Records operations from many concurrent tasks (Send + Sync, cheap to clone: clones
/// share one log).
pub struct Recorder<I, O> {
    /// Every timestamp is measured from here, so all clients share one clock.
    started: Instant,
    log: Arc<Mutex<Log<I, O>>>,
}

struct Log<I, O> {
    /// In invocation order; an operation's outcome stays `Unknown` until it completes.
    operations: Vec<Operation<I, O>>,
    /// Whether each operation has completed, so a second completion is caught.
    completed: Vec<bool>,
}

impl<I, O> Recorder<I, O> {
    pub fn new() -> Self {
        Recorder {
            started: Instant::now(),
            log: Arc::new(Mutex::new(Log {
                operations: Vec::new(),
                completed: Vec::new(),
            })),
        }
    }

    /// Records that `client` is about to send `input` for `key`: call it before the
    /// request goes out, so that the recorded interval contains the real one.
    pub fn invoke(&self, client: u64, key: &str, input: I) -> OpId {
        let mut log = self.lock();
        let invoked = self.now();
        log.operations.push(Operation {
            client,
            key: key.to_owned(),
            input,
            invoked,
            outcome: Outcome::Unknown,
        });
        log.completed.push(false);
        OpId(log.operations.len() - 1)
    }

    /// Records the answer to operation `id`: call it after the answer has arrived.
    ///
    /// # Panics
    /// If `id` is from another recorder or the operation has already completed: the
    /// history would no longer say what happened.
    pub fn returned(&self, id: OpId, output: O) {
        let returned = self.now();
        self.complete(id, Outcome::Returned { output, returned });
    }

    /// Records that operation `id` got no answer: it may or may not have taken effect.
    ///
    /// # Panics
    /// As [`Recorder::returned`].
    pub fn unknown(&self, id: OpId) {
        self.complete(id, Outcome::Unknown);
    }

    fn complete(&self, OpId(index): OpId, outcome: Outcome<O>) {
        let mut log = self.lock();
        let Log { operations, completed } = &mut *log;
        let (Some(operation), Some(completed)) = (operations.get_mut(index), completed.get_mut(index)) else {
            panic!("operation {index} was not invoked on this recorder");
        };
        assert!(!*completed, "operation {index} completed twice");
        *completed = true;
        operation.outcome = outcome;
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The log stays consistent even if a holder panicked: every update is one
    /// assignment or push made after all checks.
    fn lock(&self) -> std::sync::MutexGuard<'_, Log<I, O>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<I: Clone, O: Clone> Recorder<I, O> {
    /// Every operation; ones invoked but never completed count as Unknown.
    pub fn history(&self) -> Vec<Operation<I, O>> {
        self.lock().operations.clone()
    }
}

impl<I, O> Default for Recorder<I, O> {
    fn default() -> Self {
        Self::new()
    }
}

// Not derived: a derive would demand `I: Clone, O: Clone`, which sharing the log does not need.
impl<I, O> Clone for Recorder<I, O> {
    fn clone(&self) -> Self {
        Recorder {
            started: self.started,
            log: Arc::clone(&self.log),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_clients_share_one_log_and_unfinished_operations_are_unknown() {
        let recorder: Recorder<u32, u32> = Recorder::default();
        let threads: Vec<_> = (0..4u64)
            .map(|client| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    for n in 0..10 {
                        let id = recorder.invoke(client, "k", n);
                        match n % 3 {
                            0 => recorder.returned(id, n * 2),
                            1 => recorder.unknown(id),
                            _ => {} // never completes, like a client that crashed
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }

        let history = recorder.history();
        assert_eq!(history.len(), 40);
        for operation in &history {
            match &operation.outcome {
                Outcome::Returned { output, returned } => {
                    assert_eq!(operation.input % 3, 0);
                    assert_eq!(*output, operation.input * 2);
                    assert!(*returned >= operation.invoked);
                }
                Outcome::Unknown => assert_ne!(operation.input % 3, 0),
            }
        }
    }

    #[test]
    #[should_panic(expected = "completed twice")]
    fn a_second_completion_is_refused() {
        let recorder: Recorder<u32, u32> = Recorder::new();
        let id = recorder.invoke(1, "k", 7);
        recorder.returned(id, 7);
        recorder.unknown(id);
    }
}
