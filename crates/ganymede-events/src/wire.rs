//! The published message format: ZeroMQ multipart `[topic, route_seq, payload, hmac]`.
//!
//! - `topic` is `route` (payload: a prost `RouteEvent`) or `heartbeat` (empty payload;
//!   `route_seq` is the newest route event the publisher has applied);
//! - `route_seq` is 8 bytes, big-endian;
//! - `hmac` is HMAC-SHA256 under the events key over the length-prefixed topic, the
//!   sequence number and the payload, so no frame can be moved into another.

use bytes::Bytes;
use ganymede_proto::edge::v1::RouteEvent;
use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::Sha256;

pub const TOPIC_ROUTE: &[u8] = b"route";
pub const TOPIC_HEARTBEAT: &[u8] = b"heartbeat";

/// The key that signs published events: derived from the cluster secret, so that the
/// secret itself (which also signs cookies) never leaves the hubs.
#[derive(Clone, PartialEq, Eq)]
pub struct EventsKey([u8; 32]);

impl EventsKey {
    pub fn derive(cluster_secret: &str) -> EventsKey {
        let mut mac = new_mac(cluster_secret.as_bytes());
        mac.update(b"ganymede events key v1");
        EventsKey(mac.finalize().into_bytes().into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<EventsKey> {
        Some(EventsKey(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for EventsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventsKey(<redacted>)")
    }
}

fn new_mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; the error case cannot happen.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn signature(key: &EventsKey, topic: &[u8], seq: u64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = new_mac(&key.0);
    mac.update(&(topic.len() as u32).to_be_bytes());
    mac.update(topic);
    mac.update(&seq.to_be_bytes());
    mac.update(payload);
    mac
}

/// A message as received, once verified.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Event(RouteEvent),
    Heartbeat { route_seq: u64 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("expected 4 frames, got {0}")]
    Frames(usize),
    #[error("unknown topic")]
    Topic,
    #[error("route_seq is not 8 bytes")]
    Seq,
    #[error("bad HMAC")]
    BadHmac,
    #[error("payload does not decode: {0}")]
    Payload(String),
    #[error("the frame's route_seq differs from the event's")]
    SeqMismatch,
}

fn frames(key: &EventsKey, topic: &'static [u8], seq: u64, payload: Vec<u8>) -> Vec<Bytes> {
    let mac = signature(key, topic, seq, &payload).finalize().into_bytes();
    vec![
        Bytes::from_static(topic),
        Bytes::copy_from_slice(&seq.to_be_bytes()),
        Bytes::from(payload),
        Bytes::copy_from_slice(&mac),
    ]
}

pub fn encode_event(key: &EventsKey, event: &RouteEvent) -> Vec<Bytes> {
    frames(key, TOPIC_ROUTE, event.route_seq, event.encode_to_vec())
}

pub fn encode_heartbeat(key: &EventsKey, route_seq: u64) -> Vec<Bytes> {
    frames(key, TOPIC_HEARTBEAT, route_seq, Vec::new())
}

/// Checks the signature first: nothing of an unsigned message is interpreted.
pub fn decode(key: &EventsKey, frames: &[Bytes]) -> Result<Message, WireError> {
    let [topic, seq, payload, mac] = frames else {
        return Err(WireError::Frames(frames.len()));
    };
    let seq = u64::from_be_bytes(seq.as_ref().try_into().map_err(|_| WireError::Seq)?);
    signature(key, topic, seq, payload)
        .verify_slice(mac)
        .map_err(|_| WireError::BadHmac)?;
    match topic.as_ref() {
        TOPIC_ROUTE => {
            let event = RouteEvent::decode(payload.as_ref()).map_err(|err| WireError::Payload(err.to_string()))?;
            if event.route_seq != seq {
                return Err(WireError::SeqMismatch);
            }
            Ok(Message::Event(event))
        }
        TOPIC_HEARTBEAT => Ok(Message::Heartbeat { route_seq: seq }),
        _ => Err(WireError::Topic),
    }
}

#[cfg(test)]
mod tests {
    use ganymede_proto::edge::v1::{Route, route_event::Change};
    use proptest::prelude::*;

    use super::*;

    fn event(seq: u64) -> RouteEvent {
        RouteEvent {
            route_seq: seq,
            change: Some(Change::Added(Route {
                path: "/user/alice".into(),
                target: "http://127.0.0.1:9000".into(),
            })),
        }
    }

    #[test]
    fn round_trips_events_and_heartbeats() {
        let key = EventsKey::derive("secret");
        assert_eq!(
            decode(&key, &encode_event(&key, &event(7))),
            Ok(Message::Event(event(7)))
        );
        assert_eq!(
            decode(&key, &encode_heartbeat(&key, 42)),
            Ok(Message::Heartbeat { route_seq: 42 })
        );
    }

    #[test]
    fn rejects_a_wrong_key_and_any_changed_frame() {
        let key = EventsKey::derive("secret");
        let other = EventsKey::derive("other");
        assert_eq!(decode(&other, &encode_event(&key, &event(1))), Err(WireError::BadHmac));
        for index in 0..4 {
            let mut frames = encode_event(&key, &event(1));
            let mut changed = frames[index].to_vec();
            changed[0] ^= 1;
            frames[index] = Bytes::from(changed);
            assert_eq!(decode(&key, &frames), Err(WireError::BadHmac), "frame {index}");
        }
        // A signed heartbeat's frames cannot be replayed as an event's.
        let mut frames = encode_heartbeat(&key, 1);
        frames[0] = Bytes::from_static(TOPIC_ROUTE);
        assert_eq!(decode(&key, &frames), Err(WireError::BadHmac));
        assert_eq!(decode(&key, &frames[..3]), Err(WireError::Frames(3)));
    }

    fn any_event() -> impl Strategy<Value = RouteEvent> {
        let change = prop_oneof![
            Just(None),
            ("\\PC{0,12}", "\\PC{0,12}").prop_map(|(path, target)| Some(Change::Added(Route { path, target }))),
            "\\PC{0,12}".prop_map(|path| Some(Change::Removed(path))),
        ];
        (any::<u64>(), change).prop_map(|(route_seq, change)| RouteEvent { route_seq, change })
    }

    proptest! {
        /// The properties `tests/fuzz`'s `wire_decode` target checks: what is published
        /// decodes to itself, a changed bit anywhere is refused, and signed frames
        /// decode exactly when the payload is an event of the frame's sequence number.
        #[test]
        fn published_events_decode_to_themselves_and_nothing_else(
            event in any_event(),
            heartbeat in any::<bool>(),
            frame in 0usize..4,
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let key = EventsKey::derive("secret");
            let (frames, expected) = if heartbeat {
                (encode_heartbeat(&key, event.route_seq), Message::Heartbeat { route_seq: event.route_seq })
            } else {
                (encode_event(&key, &event), Message::Event(event.clone()))
            };
            prop_assert_eq!(decode(&key, &frames), Ok(expected));
            prop_assert_eq!(decode(&EventsKey::derive("other"), &frames), Err(WireError::BadHmac));
            if !frames[frame].is_empty() {
                let mut changed = frames.clone();
                let mut bytes = changed[frame].to_vec();
                let at = at.index(bytes.len());
                bytes[at] ^= 1 << bit;
                changed[frame] = Bytes::from(bytes);
                prop_assert_eq!(decode(&key, &changed), Err(WireError::BadHmac));
            }
        }

        #[test]
        fn signed_payloads_decode_only_as_events_of_their_sequence_number(
            payload in prop::collection::vec(any::<u8>(), 0..24),
            seq in 0u64..4,
        ) {
            let key = EventsKey::derive("secret");
            let frames = frames(&key, TOPIC_ROUTE, seq, payload.clone());
            match (RouteEvent::decode(payload.as_slice()), decode(&key, &frames)) {
                (Ok(event), Ok(Message::Event(decoded))) => {
                    prop_assert_eq!(event.route_seq, seq);
                    prop_assert_eq!(&decoded, &event);
                    prop_assert_eq!(decode(&key, &encode_event(&key, &decoded)), Ok(Message::Event(event)));
                }
                (Ok(event), Err(WireError::SeqMismatch)) => prop_assert_ne!(event.route_seq, seq),
                (Err(_), Err(WireError::Payload(_))) => {}
                (payload, outcome) => prop_assert!(false, "{:?} decoded as {:?}", payload, outcome),
            }
        }
    }

    #[test]
    fn the_events_key_is_not_the_secret() {
        let key = EventsKey::derive("secret");
        assert_ne!(key.as_bytes(), b"secret");
        assert_eq!(format!("{key:?}"), "EventsKey(<redacted>)");
    }
}
