//! The edge's view of the route log: applies events strictly in `route_seq` order, drops
//! duplicates, holds early arrivals until the gap before them is repaired. Pure: the
//! subscriber feeds it from every hub's stream and from gRPC repairs.

use std::collections::BTreeMap;

use ganymede_proto::edge::v1::{RouteEvent, route_event::Change};

use crate::table::{RouteEntry, RouteTable};

/// Events that arrived ahead of a gap are held up to this many, and up to this many
/// bytes of paths and targets; beyond, the oldest are dropped (the repair fetches them
/// again). The byte bound keeps a paused or slow edge small when events are large.
const MAX_PENDING: usize = 100_000;
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

/// What holding `event` costs, near enough: its strings and the map's own overhead.
fn held_size(event: &RouteEvent) -> usize {
    let strings = match &event.change {
        Some(Change::Added(route)) => route.path.len() + route.target.len(),
        Some(Change::Removed(path)) => path.len(),
        None => 0,
    };
    strings + 64
}

#[derive(Debug, Default)]
pub struct Follower {
    table: RouteTable,
    pending: BTreeMap<u64, RouteEvent>,
    /// [`held_size`] of everything in `pending`.
    pending_bytes: usize,
    /// The newest `route_seq` any hub has announced.
    newest_seen: u64,
    loaded: bool,
}

/// What offering one event did.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Applied, with this many held events after it.
    Applied(usize),
    Duplicate,
    /// Held: events after `route_seq()` are missing.
    Gap,
}

impl Follower {
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    pub fn route_seq(&self) -> u64 {
        self.table.route_seq()
    }

    pub fn newest_seen(&self) -> u64 {
        self.newest_seen.max(self.route_seq())
    }

    /// Whether a snapshot has been loaded (before that, nothing can be applied).
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// Whether events are known to be missing: a gap before held events, or a
    /// heartbeat ahead of what was applied.
    pub fn behind(&self) -> bool {
        !self.loaded || self.newest_seen > self.route_seq() || !self.pending.is_empty()
    }

    /// Replaces the table with a snapshot taken at `route_seq`, then applies the held
    /// events that follow it.
    pub fn load_snapshot(&mut self, route_seq: u64, routes: impl IntoIterator<Item = RouteEntry>) {
        self.table = RouteTable::new(route_seq, routes);
        self.loaded = true;
        self.pending = self.pending.split_off(&(route_seq + 1));
        self.pending_bytes = self.pending.values().map(held_size).sum();
        self.newest_seen = self.newest_seen.max(route_seq);
        self.drain();
    }

    /// Drops the promise of events no hub can deliver (their announcer is gone).
    pub fn forget_newest(&mut self) {
        self.newest_seen = self.route_seq();
    }

    pub fn heartbeat(&mut self, route_seq: u64) {
        self.newest_seen = self.newest_seen.max(route_seq);
    }

    pub fn offer(&mut self, event: RouteEvent) -> Offer {
        let seq = event.route_seq;
        self.newest_seen = self.newest_seen.max(seq);
        if self.loaded && seq <= self.route_seq() {
            return Offer::Duplicate;
        }
        if !self.loaded || seq != self.route_seq() + 1 {
            let bytes = held_size(&event);
            while !self.pending.is_empty()
                && (self.pending.len() >= MAX_PENDING || self.pending_bytes + bytes > MAX_PENDING_BYTES)
            {
                self.pop_held();
            }
            if let Some(replaced) = self.pending.insert(seq, event) {
                self.pending_bytes -= held_size(&replaced);
            }
            self.pending_bytes += bytes;
            return Offer::Gap;
        }
        self.apply(event);
        Offer::Applied(self.drain())
    }

    fn apply(&mut self, event: RouteEvent) {
        match event.change {
            Some(Change::Added(route)) => self.table.insert(RouteEntry::new(&route.path, &route.target)),
            Some(Change::Removed(path)) => self.table.remove(&path),
            // A change kind this edge does not know: skip it, keep the order.
            None => {}
        }
        self.table.set_route_seq(event.route_seq);
    }

    fn pop_held(&mut self) -> Option<RouteEvent> {
        let (_, event) = self.pending.pop_first()?;
        self.pending_bytes -= held_size(&event);
        Some(event)
    }

    /// Bytes held ahead of a gap (see [`MAX_PENDING_BYTES`]).
    pub fn held_bytes(&self) -> usize {
        self.pending_bytes
    }

    fn drain(&mut self) -> usize {
        let mut applied = 0;
        while let Some((&seq, _)) = self.pending.first_key_value() {
            let current = self.route_seq();
            if seq > current + 1 {
                break;
            }
            let Some(event) = self.pop_held() else {
                break;
            };
            if seq == current + 1 {
                self.apply(event);
                applied += 1;
            }
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ganymede_proto::edge::v1::Route;
    use proptest::prelude::*;

    use super::*;

    /// A log of route events over a few paths, and the table it leads to.
    fn history(ops: &[(u8, bool)]) -> (Vec<RouteEvent>, BTreeMap<String, String>) {
        let mut table = BTreeMap::new();
        let mut events = Vec::new();
        for (index, (path, add)) in ops.iter().enumerate() {
            let seq = index as u64 + 1;
            let path = format!("/user/u{path}");
            let change = if *add {
                let target = format!("http://127.0.0.1:{}", 9000 + seq);
                table.insert(path.clone(), target.clone());
                Change::Added(Route { path, target })
            } else {
                table.remove(&path);
                Change::Removed(path)
            };
            events.push(RouteEvent {
                route_seq: seq,
                change: Some(change),
            });
        }
        (events, table)
    }

    fn contents(follower: &Follower) -> BTreeMap<String, String> {
        follower
            .table()
            .iter()
            .map(|entry| (entry.path.to_string(), entry.target.to_string()))
            .collect()
    }

    #[test]
    fn applies_in_order_and_drops_duplicates() {
        let (events, expected) = history(&[(1, true), (2, true), (1, false)]);
        let mut follower = Follower::default();
        follower.load_snapshot(0, []);
        assert_eq!(follower.offer(events[1].clone()), Offer::Gap);
        assert!(follower.behind());
        assert_eq!(follower.offer(events[0].clone()), Offer::Applied(1));
        assert_eq!(follower.offer(events[0].clone()), Offer::Duplicate);
        assert_eq!(follower.offer(events[2].clone()), Offer::Applied(0));
        assert!(!follower.behind());
        assert_eq!(contents(&follower), expected);
        follower.heartbeat(4);
        assert!(follower.behind());
    }

    #[test]
    fn events_before_the_snapshot_are_held_then_trimmed() {
        let (events, expected) = history(&[(1, true), (2, true), (3, true)]);
        let mut follower = Follower::default();
        for event in &events {
            assert_eq!(follower.offer(event.clone()), Offer::Gap);
        }
        let (_, at_two) = history(&[(1, true), (2, true)]);
        follower.load_snapshot(2, at_two.iter().map(|(p, t)| RouteEntry::new(p, t)));
        assert_eq!(follower.route_seq(), 3);
        assert_eq!(contents(&follower), expected);
        assert!(!follower.behind());
    }

    #[test]
    fn large_early_events_are_held_within_the_byte_bound_and_repair_still_converges() {
        let padding = "x".repeat(4096);
        let events: Vec<RouteEvent> = (1..=5_000u64)
            .map(|seq| RouteEvent {
                route_seq: seq,
                change: Some(Change::Added(Route {
                    path: format!("/user/u{}", seq % 100),
                    target: format!("http://127.0.0.1:{seq}/{padding}"),
                })),
            })
            .collect();
        let mut follower = Follower::default();
        follower.load_snapshot(0, []);
        // Event 1 is lost: everything after it is held, some 20 MB offered.
        for event in &events[1..] {
            assert_eq!(follower.offer(event.clone()), Offer::Gap);
            assert!(follower.held_bytes() <= MAX_PENDING_BYTES, "{}", follower.held_bytes());
        }
        assert!(follower.held_bytes() > MAX_PENDING_BYTES / 2);
        // The repair fetches from route_seq on, as the subscriber does.
        for event in &events {
            follower.offer(event.clone());
        }
        assert_eq!(follower.route_seq(), 5_000);
        assert_eq!(follower.held_bytes(), 0);
        assert!(!follower.behind());
        assert_eq!(follower.table().len(), 100);
    }

    proptest! {
        /// Whatever the streams lose, repeat or reorder, once the missing events are
        /// repaired (here: fetched from the log after `route_seq`) the table is exactly
        /// the log's.
        #[test]
        fn converges_under_loss_duplication_and_reordering(
            ops in proptest::collection::vec((0u8..6, any::<bool>()), 1..60),
            deliveries in proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..150),
            snapshot_at in any::<prop::sample::Index>(),
        ) {
            let (events, expected) = history(&ops);
            let snapshot_seq = snapshot_at.index(events.len() + 1);
            let (_, at_snapshot) = history(&ops[..snapshot_seq]);
            let mut follower = Follower::default();
            for (which, before_snapshot) in &deliveries {
                if *before_snapshot && !follower.loaded() {
                    follower.load_snapshot(
                        snapshot_seq as u64,
                        at_snapshot.iter().map(|(p, t)| RouteEntry::new(p, t)),
                    );
                }
                follower.offer(events[which.index(events.len())].clone());
            }
            if !follower.loaded() {
                follower.load_snapshot(snapshot_seq as u64, at_snapshot.iter().map(|(p, t)| RouteEntry::new(p, t)));
            }
            follower.heartbeat(events.len() as u64);
            // Repair: what the gRPC call returns.
            while follower.behind() {
                let from = follower.route_seq() as usize;
                for event in &events[from..] {
                    follower.offer(event.clone());
                }
            }
            prop_assert_eq!(follower.route_seq(), events.len() as u64);
            prop_assert_eq!(contents(&follower), expected);
        }
    }
}
