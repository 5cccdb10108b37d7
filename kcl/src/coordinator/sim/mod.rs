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
//! Every worker process also runs the library's lease cleanup ([`cleanup`]; `KCL_SIM_CLEANUP=0`
//! turns it off), which is how a deleted lease coming back was found (see
//! [`CLEANUP_BY_DEFAULT`]).
//!
//! Checked at every delivery, at every checkpoint reported stored, after every step (on the
//! leases written since the last one, from the table's write log) and at the end:
//!
//! - never two holdings delivering one shard at overlapping times: per shard, at most one
//!   delivering consumer whose holding is valid, and no holding delivers again once another
//!   holding of the shard delivered;
//! - every checkpoint reported stored is the stored one or superseded by a later one, and the
//!   stored checkpoint never moves back;
//! - every record delivered at least once: whenever a checkpoint is stored or reported stored,
//!   every record up to it was delivered (to some holding), and at the end every record up to
//!   each shard's last stored checkpoint, all of a finished shard's;
//! - duplicates only after the last stored checkpoint: no record at or before the stored
//!   checkpoint is delivered again, nothing is delivered once `SHARD_END` is stored, and a
//!   holding starts at or after every checkpoint reported stored before its first delivery;
//! - children only after their parents' end: a child delivers only once every record of its
//!   parents was delivered and their leases are at `SHARD_END` (or deleted);
//! - lease cleanup: a deleted lease never comes back (created again, by anyone), and nothing
//!   is delivered from a deleted lease;
//! - once the faults stop, every lease progresses within a bound: each unfinished lease is
//!   held by a valid holding and its checkpoint moved in the last [`PROGRESS_WINDOW`] (a
//!   child's clock starts when its last parent ended; while a parent's lease is unfinished,
//!   the parent's progress is checked instead).
//!
//! `KCL_SIM_SEEDS=n` runs n seeds (default [`DEFAULT_SEEDS`]) on `KCL_SIM_THREADS` threads
//! (default: one per core; each seed has its own runtime, so its run does not depend on the
//! others); `KCL_SIM_SEED=s` runs seed s alone. A failing seed (the lowest one) is replayed
//! with its trace, and prints the command that reruns it and its last events
//! (`KCL_SIM_TRACE=n`: the last n, default 400). The test prints, per seed, how many crashes,
//! pauses, splits, merges, handoffs... the runs saw, and in how many seeds.
//!
//! Graceful handoffs are on (the default): a 2.x-style steal (`graceful_handoff(false)`) takes a
//! lease from a live holder at once and overlaps its delivery by design (as the Java KCL 2.x's).

mod cleanup;
mod faults;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::time::{Instant, sleep};

use self::faults::{FaultPlan, FaultyStore, SimRng};
use super::{CoordinatorConfig, HeldRef, LeaseCoordinator, LeaseCoordinatorBuilder};
use crate::checkpointer::{CheckpointError, Checkpointer};
use crate::lease::memory::MemoryStore;
use crate::lease::store::LeaseStore;
use crate::lease::{Checkpoint, Lease};

/// Seeds run by default (about 0.1 s of CPU each in a debug build, run on every core).
const DEFAULT_SEEDS: u64 = 2000;
/// How often an open shard produces a record.
const RECORD_EVERY: Duration = Duration::from_millis(100);
/// The simulation's step: faults, resharding, shard sync and the checks run once a step.
const STEP: Duration = Duration::from_millis(50);
/// How long faults last. Short runs with dense faults: a seed is cheap, so many seeds run
/// (each still sees crashes, pauses, splits, merges and handoffs; the test prints how many).
const FAULT_PHASE: Duration = Duration::from_secs(20);
/// How long the run goes on without faults: long enough for a process down at the end of
/// the faults (at most twice the failover time) to lose its leases, for them to be taken and
/// for every lease to show progress for a [`PROGRESS_WINDOW`].
const CALM_PHASE: Duration = Duration::from_secs(20);
/// While faults last, per second: a worker's faults switched on or off, a worker paused, a
/// worker process crashed, a shard split, two shards merged. Twice the rates of the 40 s
/// fault phase runs once had (pauses: three times, since the shorter phase cuts them short),
/// so a seed sees as many events.
const TOGGLES_PER_SECOND: f64 = 0.4;
const PAUSES_PER_SECOND: f64 = 0.16;
const CRASHES_PER_SECOND: f64 = 0.032;
const SPLITS_PER_SECOND: f64 = 0.24;
const MERGES_PER_SECOND: f64 = 0.16;

/// The chance that an event happening `per_second` happens within one step.
fn per_step(per_second: f64) -> f64 {
    per_second * STEP.as_secs_f64()
}

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
    /// Per shard: when `SHARD_END` was stored (its children may start from then on).
    ended_at: BTreeMap<String, Instant>,
    delivered: BTreeMap<String, BTreeSet<u64>>,
    /// Per shard: records `1..=n` were all delivered (to some holding).
    prefix: BTreeMap<String, u64>,
    /// Leases deleted (by lease cleanup), and when.
    deleted: BTreeMap<String, Instant>,
    duplicates: u64,
    checkpoints: u64,
    crashes: u64,
    splits: u64,
    merges: u64,
    pauses: u64,
    violations: Vec<String>,
    /// Whether events are kept (a failing seed is replayed with them).
    tracing: bool,
    trace: VecDeque<String>,
}

impl World {
    fn event(&mut self, at: Instant, origin: Instant, what: std::fmt::Arguments<'_>) {
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
    rng: Arc<Mutex<SimRng>>,
    table: MemoryStore,
    world: Arc<Mutex<World>>,
    workers: Vec<Worker>,
    config: CoordinatorConfig,
    /// How often each worker runs lease cleanup, and whether it does.
    cleanup: Duration,
    cleanup_on: bool,
    tracing: bool,
}

struct Worker {
    id: String,
    coordinator: LeaseCoordinator,
    store: Arc<FaultyStore>,
    running: BTreeSet<(String, u64)>,
    /// The coordinator's held leases, to see when there is a new holding.
    holdings: tokio::sync::watch::Receiver<BTreeMap<String, Lease>>,
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
    splits: u64,
    merges: u64,
    pauses: u64,
    handoffs: u64,
    finished: u64,
    scans: u64,
    deleted: u64,
}

impl Sim {
    fn rng<T>(&self, draw: impl FnOnce(&mut SimRng) -> T) -> T {
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

    fn build(seed: u64, tracing: bool, cleanup_on: bool) -> Self {
        let rng = Arc::new(Mutex::new(SimRng::seed_from_u64(seed)));
        let (workers, shards, twins, failover, take, cleanup) = {
            let mut rng = lock(&rng);
            (
                rng.random_range(3..=8usize),
                rng.random_range(2..=8usize),
                rng.random_bool(0.25),
                Duration::from_secs(rng.random_range(2..=5)),
                // Each scan costs (a take cycle is most of a run's time), but leases must
                // move within a short run: at most the failover time, not the default's twice
                // it.
                Duration::from_millis([500, 1000, 2000][rng.random_range(0..3)]),
                // The default is a minute: far longer than a run.
                Duration::from_secs([1, 2, 4][rng.random_range(0..3)]),
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
            cleanup,
            cleanup_on,
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
            let holdings = coordinator.subscribe();
            sim.workers.push(Worker {
                id,
                coordinator,
                store,
                running: BTreeSet::new(),
                holdings,
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
                lock(&world).event(Instant::now(), origin, format_args!("{who} {what}"));
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
                self.start_cleanup(&store, &coordinator);
                let worker = &mut self.workers[index];
                worker.store = store;
                worker.holdings = coordinator.subscribe();
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
                self.event(format_args!("w{index} restarted"));
                continue;
            }
            let crash = !calm && self.rng(|rng| rng.random_bool(per_step(CRASHES_PER_SECOND)));
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
            self.event(format_args!("w{index} crashed"));
        }
    }

    /// Keeps an event for the trace (formatted only when tracing: formatting costs).
    fn event(&self, what: std::fmt::Arguments<'_>) {
        if self.tracing {
            self.world().event(Instant::now(), self.origin, what);
        }
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
                    rng.random_bool(per_step(TOGGLES_PER_SECOND)),
                    rng.random_bool(per_step(PAUSES_PER_SECOND)),
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
            let paused_now = pause && !paused;
            if paused_now {
                plan.paused_until = Some(now + length);
            }
            let paused = plan.is_paused(now);
            drop(plan);
            if paused_now {
                self.world().pauses += 1;
            }
            let was = std::mem::replace(&mut self.world().paused[index], paused);
            if was != paused {
                self.event(format_args!(
                    "w{index} {}",
                    if paused { "paused" } else { "resumed" }
                ));
            }
        }
    }

    /// Splits or merges open shards now and then.
    fn reshard(&mut self) {
        let (split, merge) = self.rng(|rng| {
            (
                rng.random_bool(per_step(SPLITS_PER_SECOND)),
                rng.random_bool(per_step(MERGES_PER_SECOND)),
            )
        });
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
            self.world().splits += 1;
            self.event(format_args!("split {parent} into {a}, {b}"));
        } else if merge && open.len() >= 2 {
            let first = self.rng(|rng| rng.random_range(0..open.len()));
            let second = (first + 1) % open.len();
            let parents = vec![open[first].clone(), open[second].clone()];
            for parent in &parents {
                self.close(parent, now);
            }
            let child = self.new_shard(parents.clone());
            self.world().merges += 1;
            self.event(format_args!("merged {parents:?} into {child}"));
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
        let now = Instant::now();
        let mut guard = self.world();
        let world = &mut *guard;
        let mut table = self.table.lock();
        let mut created = Vec::new();
        for (key, shard) in &world.shards {
            if shard.end.is_none() && !table.contains_key(key) {
                let mut lease = Lease::new(key.clone(), Checkpoint::TrimHorizon);
                lease.parent_shard_ids = shard.parents.clone();
                table.insert(key.clone(), lease);
                created.push(key.clone());
            }
        }
        drop(table);
        for key in created {
            if world.deleted.contains_key(&key) {
                world.violation(format!("{key}: shard sync created a deleted lease again"));
            }
            observe_stored(world, &key, Pos::Start, now);
        }
    }

    /// Starts a consumer for every new holding.
    fn spawn_consumers(&mut self) {
        for index in 0..self.workers.len() {
            let worker = &mut self.workers[index];
            // New holdings are published: look only when there is one.
            if worker.down_until.is_some() || !worker.holdings.has_changed().unwrap_or(true) {
                continue;
            }
            worker.holdings.mark_unchanged();
            let refs = worker.coordinator.shared_state().held_refs();
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
                    tracing: self.tracing,
                    parents_ended: AtomicBool::new(false),
                };
                tokio::spawn(consumer.run());
            }
        }
    }

    /// The checks made after every step: they look at the live consumers and the table in
    /// place (no copies), and write only what changed.
    fn check(&self) {
        let now = Instant::now();
        let mut guard = self.world();
        let world = &mut *guard;
        // At most one delivering, valid holding per shard (consumers that stopped are gone
        // from the map, so this looks at the live ones only).
        // Validity is asked only of shards with two delivering consumers or more.
        let mut delivering: Vec<(&HoldingId, &ConsumerEntry)> = world
            .consumers
            .iter()
            .filter(|(id, entry)| {
                entry.phase == Phase::Delivering
                    && !world.paused[id.0]
                    && !world.down[id.0]
                    && entry.generation == world.generation[id.0]
            })
            .collect();
        delivering.sort_unstable_by(|a, b| a.0.1.cmp(&b.0.1));
        let overlap = delivering
            .chunk_by(|a, b| a.0.1 == b.0.1)
            .filter(|shard| shard.len() > 1)
            .find_map(|shard| {
                let valid: Vec<&HoldingId> = shard
                    .iter()
                    .filter(|(id, entry)| self.workers[id.0].coordinator.is_valid(&entry.held))
                    .map(|(id, _)| *id)
                    .collect();
                (valid.len() > 1).then(|| {
                    format!(
                        "{} has two valid delivering holdings: {valid:?}",
                        valid[0].1
                    )
                })
            });
        if let Some(overlap) = overlap {
            world.violation(overlap);
        }
        // The leases written since the last step (the table logs every write; the log is
        // drained here, so this looks at what changed only).
        let written = std::mem::take(&mut *lock(&self.table.writes));
        if written.is_empty() {
            return;
        }
        let table = self.table.lock();
        let mut keys = BTreeSet::new();
        for (operation, key) in &written {
            match *operation {
                "delete" => {
                    world.deleted.insert(key.clone(), now);
                }
                "create" if world.deleted.contains_key(key) => {
                    world.violation(format!("{key}: its lease was deleted and created again"))
                }
                _ => {}
            }
            keys.insert(key.as_str());
        }
        for key in keys {
            let Some(lease) = table.get(key) else {
                continue;
            };
            if world.deleted.contains_key(key) {
                world.violation(format!("{key}: its lease was deleted and is back"));
            }
            observe_stored(world, key, Pos::of(&lease.checkpoint), now);
        }
    }

    /// The checks at the end of a run: every record up to each shard's last stored
    /// checkpoint (all of a finished shard's) was delivered, and, the faults over, every
    /// unfinished lease progresses.
    fn check_progress(&self) {
        let now = Instant::now();
        let mut guard = self.world();
        let world = &mut *guard;
        let mut problems = Vec::new();
        for key in world.shards.keys() {
            let stored = if world.deleted.contains_key(key) {
                Pos::End
            } else {
                world.stored.get(key).copied().unwrap_or(Pos::Start)
            };
            if let Some(missing) = undelivered(world, key, stored) {
                problems.push(format!(
                    "{key}: checkpoint {stored:?} stored, record {missing} was never delivered"
                ));
            }
        }
        let table = self.table.lock();
        for (key, lease) in table.iter() {
            if lease.is_finished() {
                continue;
            }
            // A child waits for its parents' leases to finish: their progress is checked.
            let waiting = lease.parent_shard_ids.iter().any(|parent| {
                table
                    .get(parent.as_str())
                    .is_some_and(|parent| !parent.is_finished())
            });
            let held = world.consumers.iter().any(|(id, entry)| {
                &id.1 == key
                    && entry.phase == Phase::Delivering
                    && entry.generation == world.generation[id.0]
                    && self.workers[id.0].coordinator.is_valid(&entry.held)
            });
            if !held {
                problems.push(format!(
                    "no progress after the faults stopped: {key} (owner {:?}, checkpoint owner {:?}, counter {}) has no valid delivering holding",
                    lease.lease_owner, lease.checkpoint_owner, lease.lease_counter
                ));
            }
            // A child may start once its last parent ended.
            let moved = lease
                .parent_shard_ids
                .iter()
                .filter_map(|parent| world.ended_at.get(parent).copied())
                .chain(world.moved_at.get(key).copied())
                .max()
                .unwrap_or(self.origin);
            if !waiting && now.saturating_duration_since(moved) > PROGRESS_WINDOW {
                problems.push(format!(
                    "no progress after the faults stopped: {key}'s checkpoint ({}) has not moved for {:?}",
                    lease.checkpoint,
                    now.saturating_duration_since(moved)
                ));
            }
        }
        if let Some(first) = problems.into_iter().next() {
            world.violation(first);
        }
    }

    /// Starts the lease cleanup of a worker process (it stops with the process).
    fn start_cleanup(&self, store: &Arc<FaultyStore>, coordinator: &LeaseCoordinator) {
        if !self.cleanup_on {
            return;
        }
        cleanup::start(
            self.world.clone(),
            store.clone(),
            coordinator.clone(),
            self.cleanup,
            coordinator.cancellation_token(),
        );
    }

    async fn run(mut self) -> Result<Outcome, String> {
        for worker in &self.workers {
            worker
                .coordinator
                .start()
                .map_err(|err| format!("start: {err}"))?;
            self.start_cleanup(&worker.store, &worker.coordinator);
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
            splits: world.splits,
            merges: world.merges,
            pauses: world.pauses,
            deleted: world.deleted.len() as u64,
            // The coordinators' counts are lost with a crashed process: counted here.
            finished: world.ended_at.len() as u64,
            ..Outcome::default()
        };
        drop(world);
        for worker in &self.workers {
            let stats = worker.coordinator.stats();
            outcome.taken += stats.taken;
            outcome.lost += stats.lost;
            outcome.duplicate_detections += stats.duplicate_worker_detections;
            outcome.handoffs += stats.handoffs_completed + stats.handoffs_forced;
            outcome.scans += stats.take_cycles;
            worker.coordinator.abort();
        }
        Ok(outcome)
    }
}

/// Takes note of the stored checkpoint of `key` (after a write): it never moves back, is
/// never behind one reported stored, and every record up to it was delivered.
fn observe_stored(world: &mut World, key: &str, stored: Pos, now: Instant) {
    let before = match world.stored.get_mut(key) {
        Some(before) if *before == stored => return,
        Some(before) => Some(std::mem::replace(before, stored)),
        None => {
            world.stored.insert(key.to_owned(), stored);
            None
        }
    };
    world.moved_at.insert(key.to_owned(), now);
    if stored == Pos::End {
        world.ended_at.insert(key.to_owned(), now);
    }
    if before.is_some_and(|before| before > stored) {
        world.violation(format!(
            "{key}'s stored checkpoint moved back from {before:?} to {stored:?}"
        ));
    }
    if let Some(&reported) = world.reported.get(key)
        && reported > stored
    {
        world.violation(format!(
            "{key}: checkpoint {reported:?} was reported stored, the table holds {stored:?}"
        ));
    }
    if let Some(missing) = undelivered(world, key, stored) {
        world.violation(format!(
            "{key}: checkpoint {stored:?} stored, record {missing} was never delivered"
        ));
    }
}

/// The first record up to `pos` in shard `key` that no holding delivered, if any.
fn undelivered(world: &World, key: &str, pos: Pos) -> Option<u64> {
    let upto = match pos {
        Pos::Start => 0,
        Pos::Seq(seq) => seq,
        Pos::End => world.shards.get(key).and_then(|shard| shard.end)?,
    };
    let prefix = world.prefix.get(key).copied().unwrap_or(0);
    (prefix < upto).then_some(prefix + 1)
}

/// One holding's consumer.
struct Consumer {
    index: usize,
    worker: String,
    coordinator: LeaseCoordinator,
    store: Arc<FaultyStore>,
    table: MemoryStore,
    world: Arc<Mutex<World>>,
    rng: Arc<Mutex<SimRng>>,
    origin: Instant,
    /// The run of the worker's process this consumer belongs to.
    generation: u64,
    held: HeldRef,
    tracing: bool,
    /// Whether this holding's parents were seen ended (they stay so).
    parents_ended: AtomicBool,
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

    /// Whether the holding is still there (not lost, not ended).
    fn holds(&self) -> bool {
        self.coordinator
            .holding(&self.held.key)
            .is_some_and(|held| held.epoch == self.held.epoch)
    }

    /// Whether this consumer's process crashed (it delivers nothing more, ever).
    fn crashed(&self) -> bool {
        let world = self.world();
        world.down[self.index] || world.generation[self.index] != self.generation
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        lock(&self.world)
    }

    fn event(&self, what: std::fmt::Arguments<'_>) {
        if !self.tracing {
            return;
        }
        let mut world = self.world();
        world.event(
            Instant::now(),
            self.origin,
            format_args!(
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
            .lock()
            .get(key)
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
        if let Some(missing) = undelivered(&world, key, pos) {
            world.violation(format!(
                "{key}: {} was told checkpoint {pos:?} is stored, record {missing} was never delivered",
                self.worker
            ));
        }
        drop(world);
        self.event(format_args!("checkpoint {checkpoint} stored"));
    }

    /// Delivers records `from..=to` if the holding is valid now; returns whether it did.
    fn deliver(&self, from: u64, to: u64) -> bool {
        if self.crashed() || !self.coordinator.is_valid(&self.held) {
            return false;
        }
        let id = self.id();
        let key = self.held.key.clone();
        // Once the parents ended they stay ended: checked until it held once.
        let parents_done = if self.parents_ended.load(Ordering::Relaxed) {
            None
        } else {
            let world = self.world();
            let parents = world
                .shards
                .get(&key)
                .map(|shard| shard.parents.clone())
                .unwrap_or_default();
            parents.iter().find_map(|parent| {
                let end = world.shards.get(parent).and_then(|shard| shard.end);
                let delivered = world.prefix.get(parent).copied().unwrap_or(0);
                let finished = self
                    .table
                    .lock()
                    .get(parent.as_str())
                    .is_none_or(|lease| lease.is_finished());
                (!finished || end != Some(delivered)).then(|| {
                    format!("{key} delivered before its parent {parent} ended (records 1..={delivered} of {end:?} delivered)")
                })
            })
        };
        if parents_done.is_none() {
            self.parents_ended.store(true, Ordering::Relaxed);
        }
        let stored = self
            .table
            .lock()
            .get(&key)
            .map(|lease| Pos::of(&lease.checkpoint));
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
        // Records at or before the stored checkpoint were processed for good: delivering one
        // again breaks "duplicates only after the last stored checkpoint".
        match stored {
            None if world.deleted.contains_key(&key) => world.violation(format!(
                "{key}: holding {id:?} delivered records of a deleted lease"
            )),
            Some(Pos::End) => world.violation(format!(
                "{key}: holding {id:?} delivered records {from}..={to} after SHARD_END was stored"
            )),
            _ => {}
        }
        let stored = stored.unwrap_or(Pos::Start);
        let world = &mut *world;
        let delivered = world.delivered.entry(key.clone()).or_default();
        let mut duplicates = 0;
        let mut again = None;
        for seq in from..=to {
            if !delivered.insert(seq) {
                duplicates += 1;
                if Pos::Seq(seq) <= stored && again.is_none() {
                    again = Some(seq);
                }
            }
        }
        let prefix = world.prefix.entry(key.clone()).or_insert(0);
        while delivered.contains(&(*prefix + 1)) {
            *prefix += 1;
        }
        world.duplicates += duplicates;
        if let Some(seq) = again {
            world.violation(format!(
                "{key}: holding {id:?} delivered record {seq} again, at or before the stored checkpoint {stored:?}"
            ));
        }
        true
    }

    fn paused(&self) -> bool {
        self.world().paused[self.index]
    }

    fn draw<T>(&self, draw: impl FnOnce(&mut SimRng) -> T) -> T {
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
        self.event(format_args!(
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
        // The parents' leases finished (or are gone): they stay so.
        let mut parents_finished = false;
        let why = loop {
            // On a 10 ms grid: consumers waking at one instant share a turn of the runtime
            // (each distinct instant costs one).
            let pause = self.draw(|rng| 10 * rng.random_range(4..=30));
            sleep(Duration::from_millis(pause)).await;
            if self.crashed() {
                break "process crashed";
            }
            if !self.holds() {
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
                let parents = if parents_finished {
                    Vec::new()
                } else {
                    shard.parents.clone()
                };
                (shard.produced(Instant::now()), shard.end, parents)
            };
            if !parents_finished {
                let table = self.table.lock();
                parents_finished = parents.iter().all(|parent| {
                    table
                        .get(parent.as_str())
                        .is_none_or(|lease| lease.is_finished())
                });
                drop(table);
                if !parents_finished {
                    continue;
                }
            }
            if position < produced {
                let to = produced.min(position + self.draw(|rng| rng.random_range(1..=8)));
                if self.deliver(position + 1, to) {
                    checkpointer.delivered(&to.to_string(), 0);
                    position = to;
                } else {
                    continue;
                }
                if self.draw(|rng| rng.random_bool(0.45)) {
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
                if !self.holds() {
                    break "lost at the shard end";
                }
            }
        };
        self.world().consumers.remove(&self.id());
        self.event(format_args!("stopped: {why}"));
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
                    self.event(format_args!("released"));
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
        if !unguarded_shard_end() {
            // As the library's consumer (`consumer/shard_end.rs`): children are created only by
            // a valid holding whose stored parent lease is still its own and unfinished. A
            // stale holder (paused, or its lease moved on) would otherwise bring back a child
            // that was processed to its end and cleaned up, at TRIM_HORIZON.
            // `KCL_SIM_UNGUARDED_SHARD_END=1` plays the library as it was before.
            if !self.coordinator.is_valid(&self.held) {
                return false;
            }
            match self.store.get(key).await {
                Ok(None) => return true,
                Ok(Some(lease)) if lease.is_finished() => return true,
                Ok(Some(lease)) if !lease.is_held_by(self.coordinator.worker_id()) => return false,
                Ok(Some(_)) => {}
                Err(_) => return false,
            }
        }
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
            if !unguarded_shard_end() && !self.coordinator.is_valid(&self.held) {
                return false;
            }
            let mut lease = Lease::new(child.clone(), Checkpoint::TrimHorizon);
            lease.parent_shard_ids = parents.clone();
            // Fenced by the parent's lease, as the library creates children (one transaction).
            let created = if unguarded_shard_end() {
                self.store.create_if_absent(&lease).await
            } else {
                let worker = self.coordinator.worker_id();
                self.store.create_child_lease(key, worker, &lease).await
            };
            if created.is_err() {
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
fn run_seed(seed: u64, tracing: bool, cleanup: bool) -> Result<Outcome, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|err| err.to_string())?;
    runtime.block_on(async move { Sim::build(seed, tracing, cleanup).run().await })
}

/// Whether the workers run lease cleanup by default. It found that a stale holder of a parent
/// (paused, or its lease moved on without it noticing yet) could create a child's lease after
/// the parent was finished and the child processed to its end and deleted: the child came
/// back at TRIM_HORIZON (3 seeds in 2000; 4 without the shard end's checks). The library now
/// creates children in a transaction fenced by the parent's lease;
/// `KCL_SIM_UNGUARDED_SHARD_END=1` plays the old, unfenced creation (seed 7 fails).
const CLEANUP_BY_DEFAULT: bool = true;

/// Whether the workers run lease cleanup (`KCL_SIM_CLEANUP=1` or `0`; default
/// [`CLEANUP_BY_DEFAULT`]).
fn cleanup_on() -> bool {
    env_u64("KCL_SIM_CLEANUP").map_or(CLEANUP_BY_DEFAULT, |on| on != 0)
}

/// Whether the simulated consumer ends a shard as the library did before children were fenced:
/// no check of the holding or the stored parent, an unfenced create
/// (`KCL_SIM_UNGUARDED_SHARD_END=1`).
fn unguarded_shard_end() -> bool {
    env_u64("KCL_SIM_UNGUARDED_SHARD_END").is_some_and(|on| on != 0)
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

/// Runs `seed`, catching a panic as a failure.
fn run_caught(seed: u64, tracing: bool) -> Result<Outcome, String> {
    std::panic::catch_unwind(|| run_seed(seed, tracing, cleanup_on())).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(format!("panicked: {message}"))
    })
}

/// Runs `seeds` on `threads` threads (each seed in its own runtime, so a seed's run does not
/// depend on the others); returns the outcomes of the seeds that passed, in seed order, and
/// the first failing seed (the lowest one: seeds above a failure are not started, unless
/// `KCL_SIM_KEEP_GOING` says to run them all) with its failure.
fn run_seeds(seeds: &[u64], threads: usize) -> (Vec<Outcome>, Option<(u64, String)>) {
    // `KCL_SIM_KEEP_GOING=1`: every seed runs, and every failing one is listed (how often a
    // failure happens).
    let keep_going = env_u64("KCL_SIM_KEEP_GOING").is_some_and(|on| on != 0);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(usize::MAX);
    let results: Mutex<Vec<Option<Result<Outcome, String>>>> =
        Mutex::new((0..seeds.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= seeds.len() || index > failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let result = run_caught(seeds[index], false);
                    if let Err(failure) = &result {
                        if keep_going {
                            let first = failure.lines().next().unwrap_or_default();
                            eprintln!("seed {} failed: {first}", seeds[index]);
                        } else {
                            failed.fetch_min(index, Ordering::Relaxed);
                        }
                    }
                    lock(&results)[index] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    let mut outcomes = Vec::with_capacity(seeds.len());
    let mut first_failure = None;
    for (&seed, result) in seeds.iter().zip(results) {
        match result {
            Some(Ok(outcome)) => outcomes.push(outcome),
            Some(Err(failure)) => {
                first_failure = first_failure.or(Some((seed, failure)));
            }
            // Not started: a lower seed failed.
            None => {}
        }
    }
    (outcomes, first_failure)
}

#[test]
fn the_lease_protocol_holds_under_faults_for_every_seed() {
    let seeds: Vec<u64> = match env_u64("KCL_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("KCL_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let threads = env_u64("KCL_SIM_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        |threads| threads as usize,
    );
    let started = std::time::Instant::now();
    let (outcomes, failure) = run_seeds(&seeds, threads);
    let mut total = Totals::default();
    for outcome in &outcomes {
        total.add(outcome);
    }
    if !outcomes.is_empty() {
        eprintln!(
            "lease simulation: {} seeds passed of {} in {:.1?} on {threads} threads (lease cleanup {})\n{}",
            outcomes.len(),
            seeds.len(),
            started.elapsed(),
            if cleanup_on() { "on" } else { "off" },
            total.report()
        );
    }
    if let Some((seed, failure)) = failure {
        // Replayed alone with its trace (the same run: everything is seeded).
        let failure = run_caught(seed, true).err().unwrap_or(failure);
        // The switches that change a run, so the command reruns this one.
        let switches: String = ["KCL_SIM_CLEANUP", "KCL_SIM_UNGUARDED_SHARD_END"]
            .iter()
            .filter_map(|name| env_u64(name).map(|value| format!("{name}={value} ")))
            .collect();
        panic!(
            "seed {seed} failed: {failure}\n\nrerun it alone with: {switches}KCL_SIM_SEED={seed} cargo test -p kinesis-kcl --lib coordinator::sim (KCL_SIM_TRACE=n for its last n events)"
        )
    }
}

/// The outcomes of many seeds, summed, and how many seeds saw each kind of event (so a
/// change of the run's length or rates shows what coverage it costs).
#[derive(Debug, Default)]
struct Totals {
    seeds: u64,
    sum: Outcome,
    twins: u64,
    with_crash: u64,
    with_split: u64,
    with_merge: u64,
    with_pause: u64,
    with_handoff: u64,
    with_loss: u64,
    with_duplicate: u64,
    with_deletion: u64,
}

impl Totals {
    fn add(&mut self, outcome: &Outcome) {
        let sum = &mut self.sum;
        self.seeds += 1;
        sum.workers += outcome.workers;
        sum.shards += outcome.shards;
        sum.deliveries += outcome.deliveries;
        sum.duplicates += outcome.duplicates;
        sum.checkpoints += outcome.checkpoints;
        sum.crashes += outcome.crashes;
        sum.taken += outcome.taken;
        sum.lost += outcome.lost;
        sum.duplicate_detections += outcome.duplicate_detections;
        sum.splits += outcome.splits;
        sum.merges += outcome.merges;
        sum.pauses += outcome.pauses;
        sum.handoffs += outcome.handoffs;
        sum.finished += outcome.finished;
        sum.scans += outcome.scans;
        sum.deleted += outcome.deleted;
        let count = |on: bool| u64::from(on);
        self.twins += count(outcome.twins);
        self.with_crash += count(outcome.crashes > 0);
        self.with_split += count(outcome.splits > 0);
        self.with_merge += count(outcome.merges > 0);
        self.with_pause += count(outcome.pauses > 0);
        self.with_handoff += count(outcome.handoffs > 0);
        self.with_loss += count(outcome.lost > 0);
        self.with_duplicate += count(outcome.duplicates > 0);
        self.with_deletion += count(outcome.deleted > 0);
    }

    fn report(&self) -> String {
        let sum = &self.sum;
        let per = |n: u64| n as f64 / self.seeds.max(1) as f64;
        let share = |n: u64| 100.0 * per(n);
        format!(
            "per seed: {:.1} workers, {:.2} crashes, {:.2} pauses, {:.1} shards, {:.2} splits, {:.2} merges, {:.1} leases finished ({:.1} deleted), {:.0} records delivered ({:.1} again), {:.0} checkpoints, {:.0} scans, {:.1} takes, {:.2} handoffs, {:.2} leases lost, {:.2} duplicate-id detections\n\
             seeds with: twins {:.0}%, a crash {:.0}%, a pause {:.0}%, a split {:.0}%, a merge {:.0}%, a handoff {:.0}%, a lost lease {:.0}%, a record delivered again {:.0}%, a lease deleted {:.0}%",
            per(sum.workers as u64),
            per(sum.crashes),
            per(sum.pauses),
            per(sum.shards as u64),
            per(sum.splits),
            per(sum.merges),
            per(sum.finished),
            per(sum.deleted),
            per(sum.deliveries),
            per(sum.duplicates),
            per(sum.checkpoints),
            per(sum.scans),
            per(sum.taken),
            per(sum.handoffs),
            per(sum.lost),
            per(sum.duplicate_detections),
            share(self.twins),
            share(self.with_crash),
            share(self.with_pause),
            share(self.with_split),
            share(self.with_merge),
            share(self.with_handoff),
            share(self.with_loss),
            share(self.with_duplicate),
            share(self.with_deletion),
        )
    }
}

#[test]
fn a_seed_replays_exactly() {
    for cleanup in [false, true] {
        let run = |tracing| {
            run_seed(7, tracing, cleanup).map(|o| {
                (
                    o.deliveries,
                    o.duplicates,
                    o.checkpoints,
                    o.taken,
                    o.lost,
                    o.deleted,
                )
            })
        };
        let first = run(false);
        assert_eq!(first, run(false));
        // The trace of a failing seed is taken from a replay: tracing must not change the run.
        assert_eq!(first, run(true));
        assert_eq!(first.map(|o| o.5 > 0), Ok(cleanup), "leases deleted");
    }
}
