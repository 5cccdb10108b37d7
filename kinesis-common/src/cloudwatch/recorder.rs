//! The recorder: per series, one statistic set per minute.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

use super::table::{Series, Table};
use super::{Clock, Counters, Level};

/// SampleCount, Sum, Minimum, Maximum of one minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Stats {
    fn of(value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

/// One series' minutes not yet taken by the uploader, oldest first.
#[derive(Debug)]
pub(crate) struct Cell {
    pub(crate) series: Series,
    minutes: Mutex<VecDeque<(i64, Stats)>>,
}

impl Cell {
    fn record(&self, minute: i64, value: f64, max_minutes: usize, counters: &Counters) {
        let Ok(mut minutes) = self.minutes.lock() else {
            return;
        };
        match minutes.back_mut() {
            Some((at, stats)) if *at >= minute => stats.add(value),
            _ => {
                if minutes.len() >= max_minutes {
                    minutes.pop_front();
                    Counters::add(&counters.minutes_dropped, 1);
                }
                minutes.push_back((minute, Stats::of(value)));
            }
        }
    }

    /// Takes the minutes before `before` (all of them with `None`).
    pub(crate) fn take(&self, before: Option<i64>) -> Vec<(i64, Stats)> {
        let Ok(mut minutes) = self.minutes.lock() else {
            return Vec::new();
        };
        let done = match before {
            Some(before) => minutes.iter().take_while(|(at, _)| *at < before).count(),
            None => minutes.len(),
        };
        minutes.drain(..done).collect()
    }
}

/// What one facade handle feeds: the series of its key, and a gauge's current value.
struct Target {
    cells: Vec<Arc<Cell>>,
    gauge: AtomicU64,
    shared: Arc<Shared>,
}

impl Target {
    fn record(&self, value: f64) {
        // CloudWatch rejects NaN and infinities: a call with one would lose the whole batch.
        if !value.is_finite() {
            return;
        }
        let minute = self.shared.clock.minute();
        for cell in &self.cells {
            cell.record(
                minute,
                value,
                self.shared.max_minutes,
                &self.shared.counters,
            );
        }
    }

    fn gauge_add(&self, delta: f64) {
        let mut now = self.gauge.load(Relaxed);
        loop {
            let next = (f64::from_bits(now) + delta).to_bits();
            match self
                .gauge
                .compare_exchange_weak(now, next, Relaxed, Relaxed)
            {
                Ok(_) => return self.record(f64::from_bits(next)),
                Err(actual) => now = actual,
            }
        }
    }
}

impl CounterFn for Target {
    fn increment(&self, value: u64) {
        self.record(value as f64);
    }

    fn absolute(&self, value: u64) {
        self.record(value as f64);
    }
}

impl GaugeFn for Target {
    fn increment(&self, value: f64) {
        self.gauge_add(value);
    }

    fn decrement(&self, value: f64) {
        self.gauge_add(-value);
    }

    fn set(&self, value: f64) {
        self.gauge.store(value.to_bits(), Relaxed);
        self.record(value);
    }
}

impl HistogramFn for Target {
    fn record(&self, value: f64) {
        Target::record(self, value);
    }
}

struct Shared {
    table: Table,
    level: Level,
    max_series: usize,
    max_minutes: usize,
    clock: Clock,
    counters: Arc<Counters>,
    /// Every series, by its name and dimensions.
    series: Mutex<HashMap<Series, Arc<Cell>>>,
    /// The targets of the keys seen: the consumer's facade calls register on every update,
    /// so a key is resolved to its series once.
    targets: Mutex<HashMap<Key, Option<Arc<Target>>>>,
}

/// A `metrics` recorder that keeps the libraries' metrics as CloudWatch statistic sets, for
/// its [`Publisher`](super::Publisher) to upload. Cloning it shares the series.
#[derive(Clone)]
pub struct CloudWatchRecorder {
    shared: Arc<Shared>,
}

impl fmt::Debug for CloudWatchRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudWatchRecorder")
            .field("level", &self.shared.level)
            .field("table", &self.shared.table)
            .finish_non_exhaustive()
    }
}

impl CloudWatchRecorder {
    pub(crate) fn new(
        table: Table,
        level: Level,
        max_series: usize,
        max_minutes: usize,
        clock: Clock,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                table,
                level,
                max_series,
                max_minutes,
                clock,
                counters,
                series: Mutex::new(HashMap::new()),
                targets: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// Every series now (the uploader takes their finished minutes).
    pub(crate) fn cells(&self) -> Vec<Arc<Cell>> {
        self.shared
            .series
            .lock()
            .map(|series| series.values().cloned().collect())
            .unwrap_or_default()
    }

    fn target(&self, key: &Key) -> Option<Arc<Target>> {
        let shared = &self.shared;
        if let Ok(targets) = shared.targets.lock()
            && let Some(target) = targets.get(key)
        {
            return target.clone();
        }
        let wanted = shared.table.series(key, shared.level);
        let target = if wanted.is_empty() {
            None
        } else {
            let mut series = shared.series.lock().ok()?;
            let missing = wanted.iter().filter(|s| !series.contains_key(*s)).count();
            if series.len() + missing > shared.max_series {
                // Not cached: the key is tried again at its next registration (the consumer
                // registers at every update), counted each time; logged once.
                let refused = shared.counters.series_refused.fetch_add(1, Relaxed);
                if refused == 0 {
                    tracing::warn!(
                        metric = key.name(),
                        max_series = shared.max_series,
                        "CloudWatch publisher holds its maximum of series: further series are not published"
                    );
                }
                return None;
            }
            let cells = wanted
                .into_iter()
                .map(|wanted| {
                    series
                        .entry(wanted.clone())
                        .or_insert_with(|| {
                            Arc::new(Cell {
                                series: wanted,
                                minutes: Mutex::new(VecDeque::new()),
                            })
                        })
                        .clone()
                })
                .collect();
            shared.counters.series.store(series.len() as u64, Relaxed);
            Some(Arc::new(Target {
                cells,
                gauge: AtomicU64::new(0f64.to_bits()),
                shared: shared.clone(),
            }))
        };
        if let Ok(mut targets) = shared.targets.lock() {
            // Keys are remembered (unknown names as such) within a bound of their own: keys
            // that differ by a label no dimension uses share series.
            if targets.len() < shared.max_series.saturating_mul(4) {
                targets.insert(key.clone(), target.clone());
            }
        }
        target
    }
}

impl Recorder for CloudWatchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.target(key)
            .map_or_else(Counter::noop, Counter::from_arc)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.target(key).map_or_else(Gauge::noop, Gauge::from_arc)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.target(key)
            .map_or_else(Histogram::noop, Histogram::from_arc)
    }
}
