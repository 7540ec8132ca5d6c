//! Command and event decoding: the Raft log, the forward queue and snapshots carry
//! `Command`s, `Sequenced` events and the `State` as JSON, and every replica must read
//! the same bytes into the same values.
//!
//! Properties: whatever decodes re-encodes to bytes that decode to an equal value, and
//! those bytes are a fixed point (the state digest is a hash of them); a decoded batch of
//! commands applies without panicking on every replica alike, with events numbered 1, 2,
//! 3, … (route events contiguously too), replaying the events alone reproduces the
//! state, and a snapshot of it reads back equal.

#![no_main]

use ganymede_model::{Command, Sequenced, State, apply, evolve};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decoded once, the value is stable: encode → decode gives it back, and encoding is
/// canonical from then on.
fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) -> Vec<u8> {
    let bytes = serde_json::to_vec(value).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
        panic!(
            "re-encoded bytes do not decode: {err}: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(&again, value, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(serde_json::to_vec(&again).expect("encodes"), bytes);
    bytes
}

fuzz_target!(|data: &[u8]| {
    if let Ok(sequenced) = serde_json::from_slice::<Sequenced>(data) {
        round_trips(&sequenced);
    }
    if let Ok(state) = serde_json::from_slice::<State>(data) {
        round_trips(&state);
    }
    let commands: Vec<Command> = match serde_json::from_slice::<Vec<Command>>(data) {
        Ok(commands) => commands,
        Err(_) => match serde_json::from_slice::<Command>(data) {
            Ok(command) => vec![command],
            Err(_) => return,
        },
    };
    let mut first = State::default();
    let mut second = State::default();
    let mut log: Vec<Sequenced> = Vec::new();
    for command in &commands {
        let bytes = round_trips(command);
        // The follower applies what it read from the log, the leader what it proposed.
        let read_back: Command = serde_json::from_slice(&bytes).expect("round-tripped");
        let a = apply(&mut first, command);
        let b = apply(&mut second, &read_back);
        assert_eq!(a, b, "{command:?}");
        if let Ok(events) = a {
            for event in &events {
                round_trips(event);
            }
            log.extend(events);
        }
    }
    assert_eq!(first, second);
    let mut replayed = State::default();
    let mut route_seq = 0;
    for (index, sequenced) in log.iter().enumerate() {
        assert_eq!(sequenced.seq, index as u64 + 1);
        if let Some(seq) = sequenced.route_seq {
            route_seq += 1;
            assert_eq!(seq, route_seq);
        }
        evolve(&mut replayed, sequenced);
    }
    assert_eq!(replayed, first);
    round_trips(&first);
});
