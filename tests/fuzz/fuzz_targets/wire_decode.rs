//! The edge's decoder of published route events (`ganymede_events::decode`): frames from
//! anyone on the network, signed or not.
//!
//! Properties: unsigned or altered frames are refused before anything is interpreted;
//! frames signed as the wire format documents (HMAC-SHA256 over the length-prefixed
//! topic, the big-endian sequence number and the payload) decode exactly when the
//! payload is a `RouteEvent` of that sequence number; what decodes re-encodes to frames
//! that decode to the same message; `encode_*` produces the documented format.
//!
//! Input (binary, so that seeds can be real messages): the first byte picks the case.
//! - `R` raw frames: then frames, each a length byte and that many bytes;
//! - `S` signed: a topic byte (`r` route, `h` heartbeat, else that byte is the topic),
//!   8 bytes of sequence number, the payload;
//! - `P` published: a flags byte (1: heartbeat, 2: alter a bit), 8 bytes of sequence
//!   number, 3 bytes saying which frame, byte and bit to alter, then the event: a route
//!   added if it holds a 0 byte (path, 0, target), else a route removed (path), none if
//!   empty.

#![no_main]

use bytes::Bytes;
use ganymede_events::{EventsKey, Message, WireError, decode, encode_event, encode_heartbeat};
use ganymede_proto::edge::v1::route_event::Change;
use ganymede_proto::edge::v1::{Route, RouteEvent};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sha2::Sha256;

fn key() -> EventsKey {
    EventsKey::derive("fuzz cluster secret")
}

/// The wire format as documented in `wire.rs`, written out independently.
fn sign(key: &EventsKey, topic: &[u8], seq: u64, payload: &[u8]) -> Vec<Bytes> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(&(topic.len() as u32).to_be_bytes());
    mac.update(topic);
    mac.update(&seq.to_be_bytes());
    mac.update(payload);
    vec![
        Bytes::copy_from_slice(topic),
        Bytes::copy_from_slice(&seq.to_be_bytes()),
        Bytes::copy_from_slice(payload),
        Bytes::copy_from_slice(&mac.finalize().into_bytes()),
    ]
}

/// Whatever decoded must survive being published again.
fn assert_reencodes(key: &EventsKey, message: &Message) {
    let frames = match message {
        Message::Event(event) => encode_event(key, event),
        Message::Heartbeat { route_seq } => encode_heartbeat(key, *route_seq),
    };
    assert_eq!(decode(key, &frames).as_ref(), Ok(message));
}

fn seq_of(bytes: &[u8]) -> u64 {
    let mut seq = [0u8; 8];
    let n = bytes.len().min(8);
    seq[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(seq)
}

fn raw(key: &EventsKey, mut data: &[u8]) {
    let mut frames = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = (len as usize).min(rest.len());
        frames.push(Bytes::copy_from_slice(&rest[..len]));
        data = &rest[len..];
    }
    match decode(key, &frames) {
        // Only a copy of a signed message (a corpus seed) can pass.
        Ok(message) => assert_reencodes(key, &message),
        Err(WireError::Frames(n)) => assert!(n != 4 && n == frames.len()),
        Err(WireError::Seq) => assert!(frames.len() == 4 && frames[1].len() != 8),
        Err(WireError::BadHmac) => {}
        Err(other) => panic!("{other:?} from frames that carry no valid signature"),
    }
}

fn signed(key: &EventsKey, data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let topic: &[u8] = match kind {
        b'r' => b"route",
        b'h' => b"heartbeat",
        _ => std::slice::from_ref(&data[0]),
    };
    let seq = seq_of(rest);
    let payload = rest.get(8..).unwrap_or_default();
    let frames = sign(key, topic, seq, payload);
    let decoded = decode(key, &frames);
    match (topic, &decoded) {
        (b"heartbeat", _) => assert_eq!(decoded, Ok(Message::Heartbeat { route_seq: seq })),
        (b"route", Ok(Message::Event(event))) => {
            assert_eq!(event.route_seq, seq);
            assert_eq!(RouteEvent::decode(payload).as_ref(), Ok(event));
        }
        (b"route", Err(WireError::SeqMismatch)) => {
            let event = RouteEvent::decode(payload).expect("it decoded");
            assert_ne!(event.route_seq, seq);
        }
        (b"route", Err(WireError::Payload(_))) => assert!(RouteEvent::decode(payload).is_err()),
        (b"route", outcome) => panic!("a signed route event decodes to {outcome:?}"),
        (_, outcome) => assert_eq!(outcome, &Err(WireError::Topic)),
    }
    if let Ok(message) = &decoded {
        assert_reencodes(key, message);
    }
    // Another cluster's key never verifies.
    assert_eq!(
        decode(&EventsKey::derive("another secret"), &frames),
        Err(WireError::BadHmac)
    );
}

fn published(key: &EventsKey, data: &[u8]) {
    if data.len() < 12 {
        return;
    }
    let (flags, seq, alter, event) = (data[0], seq_of(&data[1..9]), &data[9..12], &data[12..]);
    let (mut frames, expected) = if flags & 1 == 1 {
        let frames = encode_heartbeat(key, seq);
        assert_eq!(frames, sign(key, b"heartbeat", seq, b""));
        (frames, Message::Heartbeat { route_seq: seq })
    } else {
        let change = match event.iter().position(|&b| b == 0) {
            _ if event.is_empty() => None,
            Some(at) => Some(Change::Added(Route {
                path: String::from_utf8_lossy(&event[..at]).into_owned(),
                target: String::from_utf8_lossy(&event[at + 1..]).into_owned(),
            })),
            None => Some(Change::Removed(String::from_utf8_lossy(event).into_owned())),
        };
        let event = RouteEvent { route_seq: seq, change };
        let frames = encode_event(key, &event);
        assert_eq!(frames, sign(key, b"route", seq, &event.encode_to_vec()));
        (frames, Message::Event(event))
    };
    if flags & 2 == 0 {
        assert_eq!(decode(key, &frames), Ok(expected));
        return;
    }
    let frame = alter[0] as usize % frames.len();
    if frames[frame].is_empty() {
        return;
    }
    let mut changed = frames[frame].to_vec();
    let at = alter[1] as usize % changed.len();
    changed[at] ^= 1 << (alter[2] % 8);
    frames[frame] = Bytes::from(changed);
    let outcome = decode(key, &frames);
    assert_eq!(outcome, Err(WireError::BadHmac), "an altered frame {frame} decoded");
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    match data.split_first() {
        Some((b'S', rest)) => signed(&key, rest),
        Some((b'P', rest)) => published(&key, rest),
        Some((_, rest)) => raw(&key, rest),
        None => raw(&key, data),
    }
});
