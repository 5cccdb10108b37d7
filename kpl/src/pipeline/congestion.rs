//! How many PutRecords calls may be in flight, and how long each may take: additive increase,
//! multiplicative decrease on calls that time out or slow down, and a timeout that follows the
//! throughput observed for a call's size.
//!
//! Against a fast endpoint nothing slows down: the limit climbs (doubling, then by one per
//! round of calls) to `max_concurrent_requests` and stays there. Against a slow one (a small
//! instance, a remote region, kinesis-mock's 1 MB/s) each call added only stretches every call
//! in flight: calls slow down past twice what their size should take, the limit halves, and
//! calls are no longer timed out while they are being stored and sent again (which stores their
//! records twice).
//!
//! The timeout of a call of `b` bytes is `request_timeout + 3 x expected(b)`, at most 10
//! minutes, where `expected(b) = latency + b / bandwidth` is fitted (least squares) to the
//! last answered calls. Bytes over whole-call time would take a quiet stream's small calls,
//! mostly latency, for a slow link and give a full call minutes. When the calls seen were all
//! of one size, latency and bandwidth cannot be told apart: up to that size a call is expected
//! to take what they took, and beyond it the link is assumed at least as fast as they showed
//! and as 1 MiB/s. Callers also bound a call by its records' TTL.

use std::collections::VecDeque;
use std::time::Duration;

/// Before any call was answered, this throughput is assumed (kinesis-mock's order of magnitude,
/// far below the service's).
const PRIOR_RATE: f64 = 1024.0 * 1024.0;
/// Answered calls the link model is fitted to.
const SAMPLES: usize = 32;
/// The slowest bandwidth a fit may conclude (a noisy fit must not give a call minutes).
const MIN_RATE: f64 = 64.0 * 1024.0;
/// A call is slow when it takes longer than this many times what its size should take...
const SLOW_FACTOR: f64 = 2.0;
/// ... and longer than this share of the request timeout (a fast endpoint's jitter is no
/// congestion).
const SLOW_FLOOR_SHARE: f64 = 1.0 / 6.0;
/// The cap on any call's timeout.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// What a call's end says about the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallEnd {
    /// An answer came (whatever it said).
    Answered,
    /// No answer within the timeout.
    TimedOut,
    /// No usable answer (connection failure, task failure): says nothing about the load.
    Lost,
}

/// A started call's place in the controller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    sequence: u64,
    pub(crate) timeout: Duration,
    bytes: usize,
    /// What the call should take at the rate known when it started.
    expected: Duration,
}

#[derive(Debug)]
pub(crate) struct Congestion {
    adaptive: bool,
    max: usize,
    limit: f64,
    slow_start: bool,
    /// Recent answered calls: (bytes, seconds).
    samples: VecDeque<(f64, f64)>,
    link: Option<Link>,
    base_timeout: Duration,
    started: u64,
    /// Calls started before this one do not cut the limit again (one cut per round).
    cut_before: u64,
    cuts: u64,
}

impl Congestion {
    pub(crate) fn new(max: usize, base_timeout: Duration, adaptive: bool) -> Self {
        Self {
            adaptive,
            max,
            limit: if adaptive { 1.0 } else { max as f64 },
            slow_start: adaptive,
            samples: VecDeque::with_capacity(SAMPLES),
            link: None,
            base_timeout,
            started: 0,
            cut_before: 0,
            cuts: 0,
        }
    }

    /// Calls allowed in flight now.
    pub(crate) fn allowed(&self) -> usize {
        (self.limit as usize).clamp(1, self.max)
    }

    #[cfg(test)]
    /// Times the limit was cut.
    pub(crate) fn cuts(&self) -> u64 {
        self.cuts
    }

    /// The timeout a call of `bytes` gets now.
    pub(crate) fn timeout_for(&self, bytes: usize) -> Duration {
        if !self.adaptive {
            return self.base_timeout;
        }
        let expected = self.expected(bytes);
        (self.base_timeout + expected.mul_f64(3.0)).min(MAX_TIMEOUT.max(self.base_timeout))
    }

    fn expected(&self, bytes: usize) -> Duration {
        let seconds = match &self.link {
            Some(link) => link.expected(bytes as f64),
            None => bytes as f64 / PRIOR_RATE,
        };
        Duration::from_secs_f64(seconds.clamp(0.0, MAX_TIMEOUT.as_secs_f64()))
    }

    /// A call of `bytes` starts.
    pub(crate) fn start(&mut self, bytes: usize) -> Ticket {
        self.started += 1;
        Ticket {
            sequence: self.started,
            timeout: self.timeout_for(bytes),
            bytes,
            expected: self.expected(bytes),
        }
    }

    /// A call ended after `duration`.
    pub(crate) fn finish(&mut self, ticket: Ticket, duration: Duration, end: CallEnd) {
        if !self.adaptive {
            return;
        }
        match end {
            CallEnd::TimedOut => self.cut(ticket, 0.5),
            CallEnd::Lost => {}
            CallEnd::Answered => {
                let seconds = duration.as_secs_f64().max(1e-6);
                if ticket.bytes > 0 {
                    if self.samples.len() == SAMPLES {
                        self.samples.pop_front();
                    }
                    self.samples.push_back((ticket.bytes as f64, seconds));
                    self.link = Link::fit(&self.samples);
                }
                let floor = self.base_timeout.mul_f64(SLOW_FLOOR_SHARE);
                let known = self.link.is_some() && ticket.sequence > 1;
                if known && duration > ticket.expected.mul_f64(SLOW_FACTOR) && duration > floor {
                    self.cut(ticket, 0.5);
                } else if self.slow_start {
                    self.limit = (self.limit + 1.0).min(self.max as f64);
                } else {
                    self.limit = (self.limit + 1.0 / self.limit).min(self.max as f64);
                }
            }
        }
    }

    fn cut(&mut self, ticket: Ticket, factor: f64) {
        self.slow_start = false;
        if ticket.sequence <= self.cut_before {
            return;
        }
        self.limit = (self.limit * factor).max(1.0);
        self.cut_before = self.started;
        self.cuts += 1;
    }
}

/// What a call of some size should take: `latency + max(0, bytes - from) x per_byte`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Link {
    latency: f64,
    per_byte: f64,
    from: f64,
}

impl Link {
    fn expected(&self, bytes: f64) -> f64 {
        self.latency + (bytes - self.from).max(0.0) * self.per_byte
    }

    /// Fits the model to `(bytes, seconds)` samples.
    fn fit(samples: &VecDeque<(f64, f64)>) -> Option<Self> {
        let n = samples.len() as f64;
        if samples.is_empty() {
            return None;
        }
        let mean_bytes = samples.iter().map(|s| s.0).sum::<f64>() / n;
        let mean_secs = samples.iter().map(|s| s.1).sum::<f64>() / n;
        let variance = samples
            .iter()
            .map(|s| (s.0 - mean_bytes).powi(2))
            .sum::<f64>()
            / n;
        let covariance = samples
            .iter()
            .map(|s| (s.0 - mean_bytes) * (s.1 - mean_secs))
            .sum::<f64>()
            / n;
        let spread = variance.sqrt() > 0.25 * mean_bytes;
        let link = if spread && covariance > 0.0 {
            let per_byte = covariance / variance;
            let latency = mean_secs - per_byte * mean_bytes;
            if latency >= 0.0 {
                Self {
                    latency,
                    per_byte,
                    from: 0.0,
                }
            } else {
                // Through the origin: all of it is bandwidth.
                let bytes_squared = samples.iter().map(|s| s.0 * s.0).sum::<f64>();
                let bytes_secs = samples.iter().map(|s| s.0 * s.1).sum::<f64>();
                Self {
                    latency: 0.0,
                    per_byte: bytes_secs / bytes_squared.max(1.0),
                    from: 0.0,
                }
            }
        } else {
            // One size (or sizes that do not matter): what they took holds up to their size.
            let observed_rate = mean_bytes / mean_secs.max(1e-6);
            Self {
                latency: mean_secs,
                per_byte: 1.0 / observed_rate.max(PRIOR_RATE),
                from: mean_bytes,
            }
        };
        Some(Self {
            per_byte: link.per_byte.min(1.0 / MIN_RATE),
            ..link
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn a_fast_endpoint_climbs_to_the_maximum() {
        let mut congestion = Congestion::new(24, Duration::from_secs(6), true);
        assert_eq!(congestion.allowed(), 1);
        answer_calls(&mut congestion, 200, 100_000, Duration::from_millis(10));
        assert_eq!(congestion.allowed(), 24);
        assert_eq!(congestion.cuts(), 0);
        // 10 MB/s observed: 5 MiB should take about half a second.
        assert!(congestion.timeout_for(5 * MIB) < Duration::from_secs(8));
    }

    #[test]
    fn timeouts_halve_the_limit_once_per_round() {
        let mut congestion = Congestion::new(24, Duration::from_secs(6), true);
        answer_calls(&mut congestion, 100, 1_000, Duration::from_millis(10));
        assert_eq!(congestion.allowed(), 24);
        let round: Vec<Ticket> = (0..24).map(|_| congestion.start(1_000)).collect();
        for ticket in round {
            congestion.finish(ticket, Duration::from_secs(6), CallEnd::TimedOut);
        }
        assert_eq!(congestion.allowed(), 12, "one cut for the whole round");
        let ticket = congestion.start(1_000);
        congestion.finish(ticket, Duration::from_secs(6), CallEnd::TimedOut);
        assert_eq!(congestion.allowed(), 6);
    }

    /// `calls` calls of `bytes` each, one after the other, each answered after `took`.
    fn answer_calls(congestion: &mut Congestion, calls: usize, bytes: usize, took: Duration) {
        for _ in 0..calls {
            let ticket = congestion.start(bytes);
            congestion.finish(ticket, took, CallEnd::Answered);
        }
    }

    /// One link shared by every call in flight: each call takes its share of the link.
    fn run_link(congestion: &mut Congestion, link: f64, rounds: usize) -> (usize, usize) {
        let mut timed_out = 0;
        let mut peak = 0;
        for _ in 0..rounds {
            let in_flight = congestion.allowed();
            peak = peak.max(in_flight);
            let tickets: Vec<Ticket> = (0..in_flight).map(|_| congestion.start(5 * MIB)).collect();
            let takes = Duration::from_secs_f64((5 * MIB * in_flight) as f64 / link);
            for ticket in tickets {
                if takes > ticket.timeout {
                    timed_out += 1;
                    congestion.finish(ticket, ticket.timeout, CallEnd::TimedOut);
                } else {
                    congestion.finish(ticket, takes, CallEnd::Answered);
                }
            }
        }
        (timed_out, peak)
    }

    #[test]
    fn on_a_slow_link_timeouts_follow_the_rate_and_nothing_times_out() {
        let mut congestion = Congestion::new(24, Duration::from_secs(6), true);
        let (timed_out, _) = run_link(&mut congestion, 1_000_000.0, 200);
        assert_eq!(timed_out, 0, "no call timed out while being stored");
        // Each call shares the link with the others: its timeout grew with them.
        let in_flight = congestion.allowed() as f64;
        let takes = Duration::from_secs_f64(5.0 * MIB as f64 * in_flight / 1_000_000.0);
        assert!(
            congestion.timeout_for(5 * MIB) > takes,
            "{in_flight} calls in flight"
        );
    }

    #[test]
    fn a_link_that_suddenly_slows_down_cuts_the_limit() {
        let mut congestion = Congestion::new(24, Duration::from_secs(6), true);
        run_link(&mut congestion, 100_000_000.0, 50);
        assert_eq!(congestion.allowed(), 24);
        let (timed_out, _) = run_link(&mut congestion, 2_000_000.0, 5);
        assert!(congestion.cuts() >= 1);
        assert!(congestion.allowed() < 24, "{}", congestion.allowed());
        let _ = timed_out;
    }

    /// A quiet stream's small calls are mostly latency: they must not make a full call's
    /// timeout minutes long (bytes over whole-call time gave 1 KB / 50 ms = 20 KB/s, and 5 MiB
    /// the 10-minute cap).
    #[test]
    fn small_calls_on_a_quiet_stream_do_not_stretch_a_large_calls_timeout() {
        let mut congestion = Congestion::new(24, Duration::from_secs(6), true);
        answer_calls(&mut congestion, 100, 1_000, Duration::from_millis(50));
        let timeout = congestion.timeout_for(5 * MIB);
        assert!(timeout < Duration::from_secs(30), "{timeout:?}");
        // A small call keeps a timeout near the base.
        assert!(congestion.timeout_for(1_000) < Duration::from_secs(7));
    }

    /// Calls of many sizes on a link of 50 ms latency and 10 MB/s: the fit finds both.
    #[test]
    fn latency_and_bandwidth_are_fitted_from_calls_of_many_sizes() {
        let mut congestion = Congestion::new(24, Duration::from_secs(6), true);
        for i in 0..64usize {
            let bytes = 1_000 + (i % 8) * 600_000;
            let ticket = congestion.start(bytes);
            let takes = 0.05 + bytes as f64 / 10_000_000.0;
            congestion.finish(ticket, Duration::from_secs_f64(takes), CallEnd::Answered);
        }
        let link = congestion.link.expect("fitted");
        assert!((link.latency - 0.05).abs() < 0.005, "{link:?}");
        assert!(
            (1.0 / link.per_byte - 10_000_000.0).abs() < 100_000.0,
            "{link:?}"
        );
        let expected = congestion.expected(5 * MIB).as_secs_f64();
        assert!(
            (expected - (0.05 + 5.0 * MIB as f64 / 1e7)).abs() < 0.05,
            "{expected}"
        );
    }

    #[test]
    fn without_adaptation_the_limit_and_timeout_are_fixed() {
        let mut congestion = Congestion::new(24, Duration::from_secs(6), false);
        assert_eq!(congestion.allowed(), 24);
        let ticket = congestion.start(5 * MIB);
        assert_eq!(ticket.timeout, Duration::from_secs(6));
        congestion.finish(ticket, Duration::from_secs(6), CallEnd::TimedOut);
        assert_eq!(congestion.allowed(), 24);
    }
}
