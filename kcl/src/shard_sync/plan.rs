//! Which leases shard sync creates: the Java KCL's `HierarchicalShardSyncer` rules, as a pure
//! function of the stream's shards and the table's leases ([`new_leases`]).
//!
//! # Empty table (the application's first start)
//!
//! A lease for every shard at the initial position, with the initial position as checkpoint:
//! for `TRIM_HORIZON` the oldest shards still in the stream (those whose parents are gone),
//! for `LATEST` the open shards, for `AT_TIMESTAMP` the shards open at that time (ListShards'
//! `AT_TIMESTAMP` filter). Their descendants get leases when they end (from GetRecords'
//! `ChildShards`), so history is read parents first.
//!
//! # Table with leases
//!
//! Only open shards without a lease are looked at, never closed ones on their own: a closed
//! shard whose lease was finished and deleted by lease cleanup must never be leased again.
//! For each such open shard:
//!
//! - if it descends from a shard that has a lease (or that gets one now, see below), it gets
//!   no lease now: it will get one when its parents end. Its parents that have no lease get
//!   one if they must still be processed: a parent that descends from a leased shard does not
//!   (its own parents' end creates it), a parent that does not gets one (the oldest shard of
//!   that line without a leased ancestor: the other parent of a merge, say), at
//!   `TRIM_HORIZON` (`AT_TIMESTAMP` when that is the initial position) if it is the way to
//!   the leased line, else at the initial position;
//! - otherwise it is new to the application: with `TRIM_HORIZON` or `AT_TIMESTAMP` its oldest
//!   ancestors in the stream get leases (history first, as above) and it waits; with `LATEST`
//!   it gets a lease at `LATEST` itself.
//!
//! Open shards whose parent is still open (a listing taken in the middle of a reshard) are
//! skipped until a later sync sees the parent closed. Leases are returned parents first (in
//! shard id order, which follows creation order), so a sync interrupted half-way leaves no
//! child without its parents.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kinesis_common::Shard as ShardSummary;

use crate::InitialPosition;
use crate::lease::{Checkpoint, Lease};

/// The leases shard sync should create (see the [module docs](self)).
///
/// `shards` is every shard ListShards returned; `at_initial` the shards at the initial
/// position (only used when `leases` is empty; `None` computes them from `shards`, which is
/// exact for `TRIM_HORIZON` and `LATEST`); `leases` the application's leases.
pub(crate) fn new_leases(
    shards: &[ShardSummary],
    at_initial: Option<&[ShardSummary]>,
    leases: &[Lease],
    initial: &InitialPosition,
) -> Vec<Lease> {
    let mut created = if leases.is_empty() {
        let computed;
        let at_initial = match at_initial {
            Some(listed) => listed,
            None => {
                computed = shards_at_initial_position(shards, initial);
                &computed
            }
        };
        at_initial
            .iter()
            .map(|shard| lease_for(shard, checkpoint_of(initial)))
            .collect::<Vec<_>>()
    } else {
        NonEmpty::new(shards, leases, initial).plan()
    };
    created.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
    created
}

/// The shards at the initial position, from the full listing: for `TRIM_HORIZON` and
/// `AT_TIMESTAMP` the shards none of whose parents is listed (the oldest ones left; for
/// `AT_TIMESTAMP` an approximation that reads more shards than needed), for `LATEST` the open
/// ones.
pub(crate) fn shards_at_initial_position(
    shards: &[ShardSummary],
    initial: &InitialPosition,
) -> Vec<ShardSummary> {
    let listed: BTreeSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    shards
        .iter()
        .filter(|shard| match initial {
            InitialPosition::Latest => shard.open,
            InitialPosition::TrimHorizon | InitialPosition::AtTimestamp(_) => {
                shard.parents().all(|parent| !listed.contains(parent))
            }
        })
        .cloned()
        .collect()
}

fn checkpoint_of(initial: &InitialPosition) -> Checkpoint {
    match initial {
        InitialPosition::Latest => Checkpoint::Latest,
        InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
        InitialPosition::AtTimestamp(_) => Checkpoint::AtTimestamp,
    }
}

/// A new lease for `shard`: unowned, counter 0, the shard's parents and hash range.
pub(crate) fn lease_for(shard: &ShardSummary, checkpoint: Checkpoint) -> Lease {
    let mut lease = Lease::new(shard.shard_id.clone(), checkpoint);
    lease.parent_shard_ids = shard.parents().map(str::to_owned).collect();
    lease.hash_key_range = Some((
        shard.hash_range.start().to_string(),
        shard.hash_range.end().to_string(),
    ));
    lease
}

/// The non-empty table traversal, memoized over the shard graph.
struct NonEmpty<'a> {
    shards: HashMap<&'a str, &'a ShardSummary>,
    leased: BTreeSet<&'a str>,
    initial: &'a InitialPosition,
    /// Whether a shard descends from a leased shard (or one that gets a lease now).
    descendant: HashMap<&'a str, bool>,
    /// Shards with no leased ancestor that must be read anyway (TRIM_HORIZON, AT_TIMESTAMP).
    should_create: BTreeSet<&'a str>,
    created: BTreeMap<&'a str, Lease>,
}

impl<'a> NonEmpty<'a> {
    fn new(shards: &'a [ShardSummary], leases: &'a [Lease], initial: &'a InitialPosition) -> Self {
        Self {
            shards: shards.iter().map(|s| (s.shard_id.as_str(), s)).collect(),
            leased: leases.iter().map(|l| l.lease_key.as_str()).collect(),
            initial,
            descendant: HashMap::new(),
            should_create: BTreeSet::new(),
            created: BTreeMap::new(),
        }
    }

    fn plan(mut self) -> Vec<Lease> {
        let open: Vec<&'a ShardSummary> =
            self.shards.values().copied().filter(|s| s.open).collect();
        for shard in open {
            let id = shard.shard_id.as_str();
            if self.leased.contains(id) || self.has_open_parent(shard) {
                continue;
            }
            if !self.is_descendant(id) {
                self.created
                    .insert(id, lease_for(shard, checkpoint_of(self.initial)));
            }
        }
        self.created.into_values().collect()
    }

    /// The shard's parents that are still listed.
    fn listed_parents(&self, shard: &'a ShardSummary) -> Vec<&'a str> {
        shard
            .parents()
            .filter(|parent| self.shards.contains_key(parent))
            .collect()
    }

    fn has_open_parent(&self, shard: &'a ShardSummary) -> bool {
        shard
            .parents()
            .any(|parent| self.shards.get(parent).is_some_and(|p| p.open))
    }

    /// Whether `id` descends from a leased shard, creating leases for the parents that must
    /// be processed on the way.
    fn is_descendant(&mut self, id: &'a str) -> bool {
        if let Some(&known) = self.descendant.get(id) {
            return known;
        }
        let Some(&shard) = self.shards.get(id) else {
            return false;
        };
        if self.leased.contains(id) {
            self.descendant.insert(id, true);
            return true;
        }
        let parents = self.listed_parents(shard);
        let mut descendant = false;
        let mut leading_parents = BTreeSet::new();
        for &parent in &parents {
            if self.is_descendant(parent) || self.should_create.contains(parent) {
                descendant = true;
                leading_parents.insert(parent);
            }
        }
        if descendant {
            for &parent in &parents {
                if self.leased.contains(parent) {
                    continue;
                }
                let needs_lease =
                    self.should_create.contains(parent) || !leading_parents.contains(parent);
                if !self.created.contains_key(parent) && !needs_lease {
                    continue;
                }
                let checkpoint = if leading_parents.contains(parent)
                    && !matches!(self.initial, InitialPosition::AtTimestamp(_))
                {
                    Checkpoint::TrimHorizon
                } else {
                    checkpoint_of(self.initial)
                };
                if let Some(&parent_shard) = self.shards.get(parent) {
                    self.created
                        .entry(parent)
                        .and_modify(|lease| lease.checkpoint = checkpoint.clone())
                        .or_insert_with(|| lease_for(parent_shard, checkpoint));
                }
            }
        } else if !matches!(self.initial, InitialPosition::Latest) {
            self.should_create.insert(id);
        }
        self.descendant.insert(id, descendant);
        descendant
    }
}

#[cfg(test)]
mod tests;
