//! A deterministic simulation of the lease protocol.
//!
//! 3 to 8 workers (each a [`LeaseCoordinator`]) share the in-memory lease table, each through
//! its own [fault layer](faults) that delays requests, applies writes and loses their answers,
//! answers errors and throttles, and stops the process for a while (a stopped process, a long
//! GC pause); sometimes two of them are wrongly started with one worker id. The clock is tokio's
//! paused clock, and every random choice comes from one seeded generator, so a seed replays
//! exactly. The stream is modelled here: every open shard produces a record every
//! [`RECORD_EVERY`]; shards are split and merged at random while faults last. Each holding gets
//! a simulated consumer that delivers records only while its holding is valid, checkpoints at
//! random points through the holding's [`Checkpointer`], hands the lease over when asked, and at
//! a closed shard's end creates the children's leases and checkpoints `SHARD_END` (retried until
//! stored). Shard sync (leases for new open shards) is played by the simulation itself.
//!
//! Worker processes also crash now and then (their requests already sent still land) and
//! restart with the same id after up to twice the failover time.
//!
//! Checked after every step (and at every delivery and every checkpoint reported stored):
//!
//! - never two holdings delivering one shard at overlapping times: per shard, at most one
//!   delivering consumer whose holding is valid, and no holding delivers again once another
//!   holding of the shard delivered;
//! - every checkpoint reported stored is the stored one or superseded by a later one, and the
//!   stored checkpoint never moves back;
//! - duplicates only after the last stored checkpoint: a holding starts at or after every
//!   checkpoint reported stored before its first delivery;
//! - children only after their parents' end: a child delivers only once every record of its
//!   parents was delivered and their leases are at `SHARD_END`;
//! - once the faults stop, every lease progresses within a bound: each unfinished lease is
//!   held by a valid holding and its checkpoint moved in the last [`PROGRESS_WINDOW`]; every
//!   record of a finished shard was delivered.
//!
//! `KCL_SIM_SEEDS=n` runs n seeds (default [`DEFAULT_SEEDS`]); `KCL_SIM_SEED=s` runs seed s
//! alone. A failing seed prints the command that reruns it, and its last events
//! (`KCL_SIM_TRACE=n`: the last n, default 400).
//!
//! Graceful handoffs are on (the default): a 2.x-style steal (`graceful_handoff(false)`) takes a
//! lease from a live holder at once and overlaps its delivery by design (as the Java KCL 2.x's).

mod faults;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, sleep};

use self::faults::{FaultPlan, FaultyStore};
use super::{CoordinatorConfig, HeldRef, LeaseCoordinator, LeaseCoordinatorBuilder};
use crate::checkpointer::{CheckpointError, Checkpointer};
use crate::lease::memory::MemoryStore;
use crate::lease::store::LeaseStore;
use crate::lease::{Checkpoint, Lease};

/// Seeds run by default (about 0.3 s of CPU each in a debug build: well under a minute).
const DEFAULT_SEEDS: u64 = 120;
/// How often an open shard produces a record.
const RECORD_EVERY: Duration = Duration::from_millis(100);
/// The simulation's step: faults, resharding, shard sync and the checks run once a step.
const STEP: Duration = Duration::from_millis(50);
/// How long faults last.
const FAULT_PHASE: Duration = Duration::from_secs(40);
/// How long the run goes on without faults.
const CALM_PHASE: Duration = Duration::from_secs(40);
/// Once faults stopped, every unfinished lease's checkpoint moves within this window, at the
/// end of the run.
const PROGRESS_WINDOW: Duration = Duration::from_secs(10);
/// At most this many open shards.
const MAX_OPEN_SHARDS: usize = 12;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A position in a shard, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pos {
    Start,
    Seq(u64),
    End,
}

impl Pos {
    fn of(checkpoint: &Checkpoint) -> Self {
        match checkpoint {
            Checkpoint::ShardEnd => Self::End,
            Checkpoint::Sequence {
                sequence_number, ..
            } => Self::Seq(sequence_number.parse().unwrap_or(0)),
            _ => Self::Start,
        }
    }
}

#[derive(Debug)]
struct Shard {
    parents: Vec<String>,
    created: Instant,
    /// The last record, once the shard is closed.
    end: Option<u64>,
}

impl Shard {
    fn produced(&self, now: Instant) -> u64 {
        self.end.unwrap_or_else(|| {
            (now.saturating_duration_since(self.created).as_millis() / RECORD_EVERY.as_millis())
                as u64
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Delivering,
    Leaving,
    Done,
}

/// A holding: worker index, lease key, epoch.
type HoldingId = (usize, String, u64);

#[derive(Debug)]
struct ConsumerEntry {
    held: HeldRef,
    generation: u64,
    phase: Phase,
    start: Pos,
    delivered_any: bool,
}

/// What the checks look at, shared by the driver and the consumers.
#[derive(Debug, Default)]
struct World {
    shards: BTreeMap<String, Shard>,
    next_shard: u32,
    paused: Vec<bool>,
    /// Per worker: whether its process is down (crashed, not restarted yet), and which run of
    /// it is the current one.
    down: Vec<bool>,
    generation: Vec<u64>,
    consumers: BTreeMap<HoldingId, ConsumerEntry>,
    /// Per shard: the holding delivering last, and the holdings that delivered before it.
    current: BTreeMap<String, HoldingId>,
    retired: BTreeSet<HoldingId>,
    /// Per shard: the largest checkpoint reported stored.
    reported: BTreeMap<String, Pos>,
    /// Per shard: the stored checkpoint at the last step.
    stored: BTreeMap<String, Pos>,
    /// Per shard: when the stored checkpoint last moved.
    moved_at: BTreeMap<String, Instant>,
    delivered: BTreeMap<String, BTreeSet<u64>>,
    duplicates: u64,
    checkpoints: u64,
    crashes: u64,
    violations: Vec<String>,
    /// Whether events are kept (a failing seed is replayed with them).
    tracing: bool,
    trace: VecDeque<String>,
}

impl World {
    fn event(&mut self, at: Instant, origin: Instant, what: String) {
        if !self.tracing {
            return;
        }
        if self.trace.len() >= trace_length() {
            self.trace.pop_front();
        }
        self.trace.push_back(format!(
            "{:>8.3}s {what}",
            at.saturating_duration_since(origin).as_secs_f64()
        ));
    }

    fn violation(&mut self, what: String) {
        if self.violations.is_empty() {
            self.violations.push(what);
        }
    }
}

/// One simulated run.
struct Sim {
    origin: Instant,
    rng: Arc<Mutex<StdRng>>,
    table: MemoryStore,
    world: Arc<Mutex<World>>,
    workers: Vec<Worker>,
    config: CoordinatorConfig,
    tracing: bool,
}

struct Worker {
    id: String,
    coordinator: LeaseCoordinator,
    store: Arc<FaultyStore>,
    running: BTreeSet<(String, u64)>,
    /// Which run of the process this is (a crashed process restarts with the same id).
    generation: u64,
    /// When a crashed process restarts.
    down_until: Option<Instant>,
    /// The fault plan while faults last (switched on and off at random).
    profile: FaultPlan,
}

/// What a run produced.
#[derive(Debug, Default)]
struct Outcome {
    workers: usize,
    twins: bool,
    shards: usize,
    deliveries: u64,
    duplicates: u64,
    checkpoints: u64,
    crashes: u64,
    taken: u64,
    lost: u64,
    duplicate_detections: u64,
}

impl Sim {
    fn rng<T>(&self, draw: impl FnOnce(&mut StdRng) -> T) -> T {
        draw(&mut lock(&self.rng))
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        lock(&self.world)
    }

    fn new_shard(&self, parents: Vec<String>) -> String {
        let mut world = self.world();
        let id = format!("shard-{:03}", world.next_shard);
        world.next_shard += 1;
        world.shards.insert(
            id.clone(),
            Shard {
                parents,
                created: Instant::now(),
                end: None,
            },
        );
        id
    }

    fn build(seed: u64, tracing: bool) -> Self {
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let (workers, shards, twins, failover, take) = {
            let mut rng = lock(&rng);
            (
                rng.random_range(3..=8usize),
                rng.random_range(2..=8usize),
                rng.random_bool(0.25),
                Duration::from_secs(rng.random_range(2..=5)),
                Duration::from_millis([250, 500, 1000][rng.random_range(0..3)]),
            )
        };
        let config = CoordinatorConfig::builder()
            .failover_time(failover)
            .renew_interval(failover / 3)
            .take_interval(take)
            .build()
            .expect("a valid configuration");
        let mut sim = Sim {
            origin: Instant::now(),
            rng,
            table: MemoryStore::default(),
            world: Arc::default(),
            workers: Vec::new(),
            config,
            tracing,
        };
        for _ in 0..shards {
            let id = sim.new_shard(Vec::new());
            sim.table.insert([Lease::new(id, Checkpoint::TrimHorizon)]);
        }
        for index in 0..workers {
            let id = if twins && index == 1 {
                "worker-0".to_owned()
            } else {
                format!("worker-{index}")
            };
            let (store, coordinator) = sim.process(index, &id);
            let profile = sim.rng(|rng| FaultPlan {
                p_delay: rng.random_range(0.0..0.3),
                max_delay: Duration::from_millis(
                    rng.random_range(10..=failover.as_millis() as u64),
                ),
                p_lost_answer: rng.random_range(0.0..0.1),
                p_error: rng.random_range(0.0..0.1),
                p_throttle: rng.random_range(0.0..0.1),
                paused_until: None,
            });
            sim.workers.push(Worker {
                id,
                coordinator,
                store,
                running: BTreeSet::new(),
                generation: 0,
                down_until: None,
                profile,
            });
        }
        {
            let mut world = sim.world();
            world.paused = vec![false; workers];
            world.down = vec![false; workers];
            world.generation = vec![0; workers];
            world.tracing = tracing;
        }
        sim
    }

    /// A process of worker `index`: its own view of the table behind its fault layer, and its
    /// coordinator (not started).
    fn process(&self, index: usize, id: &str) -> (Arc<FaultyStore>, LeaseCoordinator) {
        let log: Option<faults::Log> = self.tracing.then(|| {
            let world = self.world.clone();
            let origin = self.origin;
            let who = format!("w{index}({id})");
            Arc::new(move |what: String| {
                lock(&world).event(Instant::now(), origin, format!("{who} {what}"));
            }) as faults::Log
        });
        let store = Arc::new(FaultyStore::new(self.table.view(), self.rng.clone(), log));
        let coordinator =
            LeaseCoordinatorBuilder::from_store(store.clone() as Arc<dyn LeaseStore>, id)
                .config(self.config.clone())
                .build()
                .expect("a worker id");
        (store, coordinator)
    }

    /// Crashes worker processes now and then (while faults last) and restarts them, with the
    /// same id, after a while.
    fn crashes(&mut self, calm: bool) {
        let now = Instant::now();
        let failover = self.config.failover_time();
        for index in 0..self.workers.len() {
            if let Some(until) = self.workers[index].down_until {
                if now < until {
                    continue;
                }
                let id = self.workers[index].id.clone();
                let (store, coordinator) = self.process(index, &id);
                if coordinator.start().is_err() {
                    continue;
                }
                let worker = &mut self.workers[index];
                worker.store = store;
                worker.coordinator = coordinator;
                worker.generation += 1;
                worker.down_until = None;
                worker.running.clear();
                let generation = worker.generation;
                {
                    let mut world = self.world();
                    world.down[index] = false;
                    world.generation[index] = generation;
                    world.paused[index] = false;
                }
                self.event(format!("w{index} restarted"));
                continue;
            }
            let crash = !calm && self.rng(|rng| rng.random_bool(0.0008));
            if !crash {
                continue;
            }
            let down = self.rng(|rng| {
                Duration::from_millis(rng.random_range(100..=(failover * 2).as_millis() as u64))
            });
            // Requests already sent go on (they are in the network); nothing else runs.
            self.workers[index].coordinator.abort();
            self.workers[index].down_until = Some(now + down);
            {
                let mut world = self.world();
                world.down[index] = true;
                world.crashes += 1;
            }
            self.event(format!("w{index} crashed"));
        }
    }

    fn event(&self, what: String) {
        self.world().event(Instant::now(), self.origin, what);
    }

    /// Switches faults on and off, pauses and resumes workers.
    fn faults(&mut self, calm: bool) {
        let now = Instant::now();
        for index in 0..self.workers.len() {
            let worker = &self.workers[index];
            let mut plan = worker.store.plan();
            if calm {
                *plan = FaultPlan::default();
                drop(plan);
                self.world().paused[index] = false;
                continue;
            }
            let paused = plan.is_paused(now);
            let (toggle, pause, length) = {
                let mut rng = lock(&self.rng);
                (
                    rng.random_bool(0.02),
                    rng.random_bool(0.002),
                    Duration::from_millis(rng.random_range(500..12_000)),
                )
            };
            if toggle {
                let on = plan.p_delay > 0.0 || plan.p_error > 0.0 || plan.p_lost_answer > 0.0;
                let until = plan.paused_until;
                *plan = if on {
                    FaultPlan::default()
                } else {
                    worker.profile.clone()
                };
                plan.paused_until = until;
            }
            if pause && !paused {
                plan.paused_until = Some(now + length);
            }
            let paused = plan.is_paused(now);
            drop(plan);
            let was = std::mem::replace(&mut self.world().paused[index], paused);
            if was != paused {
                self.event(format!(
                    "w{index} {}",
                    if paused { "paused" } else { "resumed" }
                ));
            }
        }
    }

    /// Splits or merges open shards now and then.
    fn reshard(&mut self) {
        let (split, merge) = self.rng(|rng| (rng.random_bool(0.006), rng.random_bool(0.004)));
        if !split && !merge {
            return;
        }
        let now = Instant::now();
        let open: Vec<String> = {
            let world = self.world();
            world
                .shards
                .iter()
                .filter(|(key, shard)| shard.end.is_none() && self.table.get_now(key).is_some())
                .map(|(key, _)| key.clone())
                .collect()
        };
        if split && !open.is_empty() && open.len() < MAX_OPEN_SHARDS {
            let parent = open[self.rng(|rng| rng.random_range(0..open.len()))].clone();
            self.close(&parent, now);
            let a = self.new_shard(vec![parent.clone()]);
            let b = self.new_shard(vec![parent.clone()]);
            self.event(format!("split {parent} into {a}, {b}"));
        } else if merge && open.len() >= 2 {
            let first = self.rng(|rng| rng.random_range(0..open.len()));
            let second = (first + 1) % open.len();
            let parents = vec![open[first].clone(), open[second].clone()];
            for parent in &parents {
                self.close(parent, now);
            }
            let child = self.new_shard(parents.clone());
            self.event(format!("merged {parents:?} into {child}"));
        }
    }

    fn close(&self, key: &str, now: Instant) {
        let mut world = self.world();
        if let Some(shard) = world.shards.get_mut(key) {
            shard.end = Some(shard.produced(now));
        }
    }

    /// Shard sync: a lease for every open shard that never had one.
    fn shard_sync(&self) {
        let world = self.world();
        for (key, shard) in &world.shards {
            if shard.end.is_none() && self.table.get_now(key).is_none() {
                let mut lease = Lease::new(key.clone(), Checkpoint::TrimHorizon);
                lease.parent_shard_ids = shard.parents.clone();
                self.table.insert([lease]);
            }
        }
    }

    /// Starts a consumer for every new holding.
    fn spawn_consumers(&mut self) {
        for index in 0..self.workers.len() {
            if self.workers[index].down_until.is_some() {
                continue;
            }
            let refs = self.workers[index].coordinator.shared_state().held_refs();
            for held in refs {
                let id = (held.key.clone(), held.epoch);
                if self.workers[index].running.contains(&id) {
                    continue;
                }
                self.workers[index].running.insert(id);
                let consumer = Consumer {
                    index,
                    worker: self.workers[index].id.clone(),
                    coordinator: self.workers[index].coordinator.clone(),
                    store: self.workers[index].store.clone(),
                    table: self.table.clone(),
                    world: self.world.clone(),
                    rng: self.rng.clone(),
                    origin: self.origin,
                    generation: self.workers[index].generation,
                    held,
                };
                tokio::spawn(consumer.run());
            }
        }
    }

    /// The checks made after every step.
    fn check(&self) {
        let now = Instant::now();
        let mut world = self.world();
        // At most one delivering, valid holding per shard.
        let mut delivering: BTreeMap<&str, Vec<&HoldingId>> = BTreeMap::new();
        for (id, entry) in &world.consumers {
            if entry.phase == Phase::Delivering
                && !world.paused[id.0]
                && !world.down[id.0]
                && entry.generation == world.generation[id.0]
                && self.workers[id.0].coordinator.is_valid(&entry.held)
            {
                delivering.entry(id.1.as_str()).or_default().push(id);
            }
        }
        let overlap = delivering
            .iter()
            .find(|(_, holders)| holders.len() > 1)
            .map(|(key, holders)| format!("{key} has two valid delivering holdings: {holders:?}"));
        if let Some(overlap) = overlap {
            world.violation(overlap);
        }
        // The stored checkpoint never moves back and is never behind one reported stored.
        for lease in self.table.all() {
            let key = lease.lease_key.clone();
            let stored = Pos::of(&lease.checkpoint);
            let before = world.stored.insert(key.clone(), stored);
            if before.is_some_and(|before| before > stored) {
                world.violation(format!(
                    "{key}'s stored checkpoint moved back from {before:?} to {stored:?}"
                ));
            }
            if before != Some(stored) {
                world.moved_at.insert(key.clone(), now);
            }
            if let Some(&reported) = world.reported.get(&key)
                && reported > stored
            {
                world.violation(format!(
                    "{key}: checkpoint {reported:?} was reported stored, the table holds {stored:?}"
                ));
            }
        }
    }

    /// The progress check at the end of a run.
    fn check_progress(&self) {
        let now = Instant::now();
        let mut world = self.world();
        let mut problems = Vec::new();
        for lease in self.table.all() {
            let key = &lease.lease_key;
            if lease.is_finished() {
                let end = world.shards.get(key).and_then(|shard| shard.end);
                let delivered = world.delivered.get(key).map_or(0, BTreeSet::len) as u64;
                if end != Some(delivered) {
                    problems.push(format!(
                        "{key} finished with {delivered} distinct records delivered of {end:?}"
                    ));
                }
                continue;
            }
            let held = world.consumers.iter().any(|(id, entry)| {
                &id.1 == key
                    && entry.phase == Phase::Delivering
                    && entry.generation == world.generation[id.0]
                    && self.workers[id.0].coordinator.is_valid(&entry.held)
            });
            if !held {
                problems.push(format!(
                    "{key} (owner {:?}, checkpoint owner {:?}, counter {}) has no valid delivering holding",
                    lease.lease_owner, lease.checkpoint_owner, lease.lease_counter
                ));
            }
            let moved = world.moved_at.get(key).copied().unwrap_or(self.origin);
            if now.saturating_duration_since(moved) > PROGRESS_WINDOW {
                problems.push(format!(
                    "{key}'s checkpoint ({}) has not moved for {:?}",
                    lease.checkpoint,
                    now.saturating_duration_since(moved)
                ));
            }
        }
        if let Some(first) = problems.into_iter().next() {
            world.violation(format!("no progress after the faults stopped: {first}"));
        }
    }

    async fn run(mut self) -> Result<Outcome, String> {
        for worker in &self.workers {
            worker
                .coordinator
                .start()
                .map_err(|err| format!("start: {err}"))?;
        }
        let fault_end = self.origin + FAULT_PHASE;
        let end = fault_end + CALM_PHASE;
        let mut next_sync = self.origin;
        loop {
            sleep(STEP).await;
            let now = Instant::now();
            let calm = now >= fault_end;
            self.faults(calm);
            self.crashes(calm);
            if !calm {
                self.reshard();
            }
            if now >= next_sync {
                self.shard_sync();
                next_sync = now + Duration::from_secs(2);
            }
            self.spawn_consumers();
            self.check();
            if now >= end {
                self.check_progress();
            }
            let failed = self.world().violations.first().cloned();
            if let Some(violation) = failed {
                let trace: Vec<String> = self.world().trace.iter().cloned().collect();
                for worker in &self.workers {
                    worker.coordinator.abort();
                }
                return Err(format!(
                    "{violation}\nat {:?}{}",
                    now.saturating_duration_since(self.origin),
                    if trace.is_empty() {
                        String::new()
                    } else {
                        format!("; last events:\n{}", trace.join("\n"))
                    }
                ));
            }
            if now >= end {
                break;
            }
        }
        let world = self.world();
        let mut outcome = Outcome {
            workers: self.workers.len(),
            twins: self.workers.get(1).is_some_and(|w| w.id == "worker-0"),
            shards: world.shards.len(),
            deliveries: world.delivered.values().map(|s| s.len() as u64).sum(),
            duplicates: world.duplicates,
            checkpoints: world.checkpoints,
            crashes: world.crashes,
            ..Outcome::default()
        };
        drop(world);
        for worker in &self.workers {
            let stats = worker.coordinator.stats();
            outcome.taken += stats.taken;
            outcome.lost += stats.lost;
            outcome.duplicate_detections += stats.duplicate_worker_detections;
            worker.coordinator.abort();
        }
        Ok(outcome)
    }
}

/// One holding's consumer.
struct Consumer {
    index: usize,
    worker: String,
    coordinator: LeaseCoordinator,
    store: Arc<FaultyStore>,
    table: MemoryStore,
    world: Arc<Mutex<World>>,
    rng: Arc<Mutex<StdRng>>,
    origin: Instant,
    /// The run of the worker's process this consumer belongs to.
    generation: u64,
    held: HeldRef,
}

impl Consumer {
    fn id(&self) -> HoldingId {
        // Epochs start over in a restarted process.
        (
            self.index,
            self.held.key.clone(),
            (self.generation << 32) | self.held.epoch,
        )
    }

    /// Whether this consumer's process crashed (it delivers nothing more, ever).
    fn crashed(&self) -> bool {
        let world = self.world();
        world.down[self.index] || world.generation[self.index] != self.generation
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        lock(&self.world)
    }

    fn event(&self, what: String) {
        let mut world = self.world();
        world.event(
            Instant::now(),
            self.origin,
            format!(
                "w{}({}) {}#{} {what}",
                self.index, self.worker, self.held.key, self.held.epoch
            ),
        );
    }

    fn set_phase(&self, phase: Phase) {
        if let Some(entry) = self.world().consumers.get_mut(&self.id()) {
            entry.phase = phase;
        }
    }

    fn report(&self, checkpoint: &Checkpoint) {
        let pos = Pos::of(checkpoint);
        let key = &self.held.key;
        let stored = self
            .table
            .get_now(key)
            .map(|lease| Pos::of(&lease.checkpoint));
        let mut world = self.world();
        world.checkpoints += 1;
        let reported = world.reported.entry(key.clone()).or_insert(pos);
        *reported = (*reported).max(pos);
        if stored.is_some_and(|stored| stored < pos) {
            world.violation(format!(
                "{key}: {} was told checkpoint {pos:?} is stored, the table holds {stored:?}",
                self.worker
            ));
        }
        drop(world);
        self.event(format!("checkpoint {checkpoint} stored"));
    }

    /// Delivers records `from..=to` if the holding is valid now; returns whether it did.
    fn deliver(&self, from: u64, to: u64) -> bool {
        if self.crashed() || !self.coordinator.is_valid(&self.held) {
            return false;
        }
        let id = self.id();
        let key = self.held.key.clone();
        let parents_done = {
            let world = self.world();
            let parents = world
                .shards
                .get(&key)
                .map(|shard| shard.parents.clone())
                .unwrap_or_default();
            parents.iter().find_map(|parent| {
                let end = world.shards.get(parent).and_then(|shard| shard.end);
                let delivered = world.delivered.get(parent).map_or(0, BTreeSet::len) as u64;
                let finished = self
                    .table
                    .get_now(parent)
                    .is_none_or(|lease| lease.is_finished());
                (!finished || end != Some(delivered)).then(|| {
                    format!("{key} delivered before its parent {parent} ended ({delivered} of {end:?} delivered)")
                })
            })
        };
        let mut world = self.world();
        if let Some(problem) = parents_done {
            world.violation(problem);
        }
        if world.retired.contains(&id) {
            world.violation(format!(
                "{key}: holding {id:?} delivered again after another holding did"
            ));
        }
        match world.current.insert(key.clone(), id.clone()) {
            Some(previous) if previous != id => {
                world.retired.insert(previous);
            }
            _ => {}
        }
        let reported = world.reported.get(&key).copied().unwrap_or(Pos::Start);
        let Some(entry) = world.consumers.get_mut(&id) else {
            return false;
        };
        if !entry.delivered_any {
            entry.delivered_any = true;
            let start = entry.start;
            if start < reported {
                world.violation(format!(
                    "{key}: holding {id:?} started at {start:?}, before checkpoint {reported:?} reported stored"
                ));
            }
        }
        let delivered = world.delivered.entry(key.clone()).or_default();
        let mut duplicates = 0;
        for seq in from..=to {
            if !delivered.insert(seq) {
                duplicates += 1;
            }
        }
        world.duplicates += duplicates;
        true
    }

    fn paused(&self) -> bool {
        self.world().paused[self.index]
    }

    fn draw<T>(&self, draw: impl FnOnce(&mut StdRng) -> T) -> T {
        draw(&mut lock(&self.rng))
    }

    async fn run(self) {
        let Some(lease) = self.coordinator.holding_lease(&self.held) else {
            return;
        };
        let start = Pos::of(&lease.checkpoint);
        self.world().consumers.insert(
            self.id(),
            ConsumerEntry {
                held: self.held.clone(),
                generation: self.generation,
                phase: Phase::Delivering,
                start,
                delivered_any: false,
            },
        );
        self.event(format!(
            "started at {} (counter {}, owner {:?}, checkpoint owner {:?})",
            lease.checkpoint, lease.lease_counter, lease.lease_owner, lease.checkpoint_owner
        ));
        let mut checkpointer = Checkpointer::new(
            self.coordinator.clone(),
            self.held.clone(),
            lease.checkpoint.clone(),
            lease.pending_checkpoint.clone(),
        );
        let mut position = match start {
            Pos::Seq(seq) => seq,
            _ => 0,
        };
        let mut handoffs = self.coordinator.handoff_requests();
        let why = loop {
            let pause = self.draw(|rng| rng.random_range(20..200));
            sleep(Duration::from_millis(pause)).await;
            if self.crashed() {
                break "process crashed";
            }
            if self.coordinator.holding_lease(&self.held).is_none() {
                break "lost";
            }
            if handoffs.borrow_and_update().contains(&self.held.key) {
                self.set_phase(Phase::Leaving);
                self.hand_over(&mut checkpointer).await;
                break "handed over";
            }
            if self.paused() {
                continue;
            }
            let (produced, end, parents) = {
                let world = self.world();
                let Some(shard) = world.shards.get(&self.held.key) else {
                    break "unknown shard";
                };
                (
                    shard.produced(Instant::now()),
                    shard.end,
                    shard.parents.clone(),
                )
            };
            let waiting = parents.iter().any(|parent| {
                self.table
                    .get_now(parent)
                    .is_some_and(|lease| !lease.is_finished())
            });
            if waiting {
                continue;
            }
            if position < produced {
                let to = produced.min(position + self.draw(|rng| rng.random_range(1..=5)));
                if self.deliver(position + 1, to) {
                    checkpointer.delivered(&to.to_string(), 0);
                    position = to;
                } else {
                    continue;
                }
                if self.draw(|rng| rng.random_bool(0.3)) {
                    match checkpointer.checkpoint().await {
                        Ok(()) => self.report(&Checkpoint::sequence(position.to_string(), 0)),
                        Err(CheckpointError::LeaseLost { .. }) => break "lost at a checkpoint",
                        Err(_) => {}
                    }
                }
                continue;
            }
            if end == Some(position) {
                if self.shard_end(&mut checkpointer).await {
                    self.coordinator.finish(&self.held);
                    self.coordinator.take_now();
                    break "shard ended";
                }
                if self.coordinator.holding_lease(&self.held).is_none() {
                    break "lost at the shard end";
                }
            }
        };
        self.set_phase(Phase::Done);
        self.event(format!("stopped: {why}"));
    }

    /// Checkpoints (maybe), then releases the lease to the worker that asked for it.
    async fn hand_over(&self, checkpointer: &mut Checkpointer) {
        if self.draw(|rng| rng.random_bool(0.7)) {
            let at = checkpointer.last_checkpoint().clone();
            if checkpointer.checkpoint().await.is_ok() && *checkpointer.last_checkpoint() != at {
                self.report(&checkpointer.last_checkpoint().clone());
            }
        }
        loop {
            if self.crashed() {
                return;
            }
            match self.coordinator.release_holding(&self.held).await {
                Ok(()) => {
                    self.event("released".into());
                    return;
                }
                Err(err) if err.is_lease_lost() => return,
                Err(_) => sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Creates the children's leases and checkpoints SHARD_END; returns whether it is stored.
    async fn shard_end(&self, checkpointer: &mut Checkpointer) -> bool {
        let key = &self.held.key;
        let children: Vec<(String, Vec<String>)> = {
            let world = self.world();
            world
                .shards
                .iter()
                .filter(|(_, shard)| shard.parents.contains(key))
                .map(|(child, shard)| (child.clone(), shard.parents.clone()))
                .collect()
        };
        for (child, parents) in &children {
            if self.crashed() {
                return false;
            }
            let mut lease = Lease::new(child.clone(), Checkpoint::TrimHorizon);
            lease.parent_shard_ids = parents.clone();
            if self.store.create_if_absent(&lease).await.is_err() {
                return false;
            }
        }
        if !children.is_empty() {
            let ids: Vec<String> = children.iter().map(|(child, _)| child.clone()).collect();
            if self.store.update_child_shards(key, &ids).await.is_err() {
                return false;
            }
        }
        if self.crashed() {
            return false;
        }
        checkpointer.shard_end_reached();
        match checkpointer.checkpoint_shard_end().await {
            Ok(()) => {
                self.report(&Checkpoint::ShardEnd);
                true
            }
            Err(_) => false,
        }
    }
}

/// Runs one seed in its own paused-time runtime (keeping a trace of events when `tracing`).
fn run_seed(seed: u64, tracing: bool) -> Result<Outcome, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|err| err.to_string())?;
    runtime.block_on(async move { Sim::build(seed, tracing).run().await })
}

/// How many of the last events a failure prints (`KCL_SIM_TRACE`, default 400).
fn trace_length() -> usize {
    env_u64("KCL_SIM_TRACE").map_or(400, |n| n as usize)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

#[test]
fn the_lease_protocol_holds_under_faults_for_every_seed() {
    let seeds: Vec<u64> = match env_u64("KCL_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("KCL_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let started = std::time::Instant::now();
    let mut total = Outcome::default();
    for &seed in &seeds {
        let run = |tracing| {
            std::panic::catch_unwind(|| run_seed(seed, tracing))
                .unwrap_or_else(|panic| Err(format!("panicked: {panic:?}")))
        };
        // A failing seed is replayed with its trace (the same run: everything is seeded).
        let result = run(false).map_err(|failure| run(true).err().unwrap_or(failure));
        match result {
            Ok(outcome) => {
                total.workers += outcome.workers;
                total.twins |= outcome.twins;
                total.shards += outcome.shards;
                total.deliveries += outcome.deliveries;
                total.duplicates += outcome.duplicates;
                total.checkpoints += outcome.checkpoints;
                total.crashes += outcome.crashes;
                total.taken += outcome.taken;
                total.lost += outcome.lost;
                total.duplicate_detections += outcome.duplicate_detections;
            }
            Err(failure) => panic!(
                "seed {seed} failed: {failure}\n\nrerun it alone with: KCL_SIM_SEED={seed} cargo test -p kcl --lib coordinator::sim"
            ),
        }
    }
    eprintln!(
        "lease simulation: {} seeds in {:.1?}: {} workers ({} crashes), {} shards, {} records delivered ({} again), {} checkpoints, {} takes, {} leases lost, {} duplicate-id detections",
        seeds.len(),
        started.elapsed(),
        total.workers,
        total.crashes,
        total.shards,
        total.deliveries,
        total.duplicates,
        total.checkpoints,
        total.taken,
        total.lost,
        total.duplicate_detections,
    );
}

#[test]
fn a_seed_replays_exactly() {
    let run = |tracing| {
        run_seed(7, tracing).map(|o| (o.deliveries, o.duplicates, o.checkpoints, o.taken, o.lost))
    };
    let first = run(false);
    assert_eq!(first, run(false));
    // The trace of a failing seed is taken from a replay: tracing must not change the run.
    assert_eq!(first, run(true));
}
