//! `kinesis-cat leases` (the listing, in `consume.rs`) and `kinesis-cat leases reset`: moves
//! checkpoints with kcl's operator write, [`LeaseTable::reset_checkpoint`].
//!
//! - Only unowned leases are moved unless `--force`; forced, a held lease is taken from its
//!   holder (counter bumped, owner removed) so the holder's next renew or checkpoint is fenced
//!   and fails: it loses the lease and cannot overwrite the reset.
//! - Finished leases (`SHARD_END`) are left alone unless named with `--shard`: replaying a
//!   parent whose children were read would break the order parents-before-children.
//! - A lease that changed between the read and the write (a renew, a take) is read again and
//!   decided again, a few times.
//! - `--to TIMESTAMP` becomes, per shard, a checkpoint at the last record that arrived before
//!   that time (every sub-record of it, for an aggregate), so a worker resumes at the first
//!   record at or after it; `TRIM_HORIZON` when no record before it is left in the shard.
//!   (The table's `AT_TIMESTAMP` sentinel cannot carry a time: it means the application's
//!   configured one.)

use std::io::Write;
use std::time::{Duration, SystemTime};

use aggregation_proto::{ReceivedRecord, deaggregate};
use clap::{Args, Subcommand};
use kcl::lease::{Checkpoint, Lease, LeaseError, LeaseTable, ResetOutcome};
use kinesis_common::{
    KinesisError, ReadShard, SdkKinesis, ShardIteratorStart, StreamConsumers, StreamId, Timeouts,
};
use serde::Serialize;

use super::{OpsError, parse_timestamp, print_json, retried, runtime, sdk_config};

/// `kinesis-cat leases`: the listing (`--application APP`) or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct Leases {
    #[command(flatten)]
    pub(crate) list: Option<crate::consume::LeasesArgs>,
    #[command(subcommand)]
    pub(crate) command: Option<LeasesCommand>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LeasesCommand {
    /// Move checkpoints: only on leases no worker holds, unless --force. Prints what it
    /// changed. Exit code 4 when a lease was left unmoved (held, or changed meanwhile).
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ResetArgs {
    /// Application name (the lease table).
    #[arg(long)]
    application: String,
    /// Where: latest, trim-horizon, a time (RFC 3339; needs --stream) or a sequence number
    /// (SEQUENCE or SEQUENCE/SUB; needs exactly one --shard).
    #[arg(long)]
    to: String,
    /// Only these leases (repeat for several); default every lease not finished.
    #[arg(long)]
    shard: Vec<String>,
    /// Also move leases a worker holds: each is taken from its holder (its counter bumped and
    /// its owner removed), so the holder's next renew or checkpoint fails and it stops
    /// processing the shard; any worker then takes it and resumes from the new checkpoint.
    /// Records the holder processed after its last checkpoint are read again.
    #[arg(long)]
    force: bool,
    /// The stream (needed for --to TIMESTAMP, to find the records).
    #[arg(long)]
    stream: Option<String>,
    /// Say what would change, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON document: {"application", "to", "force", "dry_run", "leases":
    /// [{"shard_id", "result" (moved | would_move | unchanged | held | changed | finished),
    /// "owner", "before", "after", "counter_before", "counter_after"}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    application: String,
    to: String,
    force: bool,
    dry_run: bool,
    leases: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Row {
    shard_id: String,
    result: &'static str,
    /// The worker holding the lease when it was read (taken from it when forced).
    owner: Option<String>,
    before: String,
    after: Option<String>,
    counter_before: u64,
    counter_after: Option<u64>,
}

/// What `--to` asks for.
#[derive(Debug, Clone)]
enum Target {
    Checkpoint(Checkpoint),
    At(SystemTime),
}

fn parse_target(args: &ResetArgs) -> Result<Target, OpsError> {
    match args.to.as_str() {
        "latest" => return Ok(Target::Checkpoint(Checkpoint::Latest)),
        "trim-horizon" => return Ok(Target::Checkpoint(Checkpoint::TrimHorizon)),
        _ => {}
    }
    if args.to.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && args.to.bytes().all(|b| b.is_ascii_digit() || b == b'/')
    {
        let (sequence, sub) = match args.to.split_once('/') {
            Some((sequence, sub)) => (
                sequence,
                sub.parse::<u64>()
                    .map_err(|_| OpsError::Usage(format!("--to {}: bad sub-sequence", args.to)))?,
            ),
            None => (args.to.as_str(), 0),
        };
        let checkpoint = Checkpoint::sequence(sequence, sub);
        checkpoint
            .validate()
            .map_err(|e| OpsError::Usage(format!("--to: {e}")))?;
        if args.shard.len() != 1 {
            return Err(OpsError::Usage(
                "--to SEQUENCE needs exactly one --shard: a sequence number belongs to one shard"
                    .into(),
            ));
        }
        return Ok(Target::Checkpoint(checkpoint));
    }
    let at = parse_timestamp(&args.to).ok_or_else(|| {
        OpsError::Usage(format!(
            "--to {:?}: expected latest, trim-horizon, an RFC 3339 time or a sequence number",
            args.to
        ))
    })?;
    if args.stream.is_none() {
        return Err(OpsError::Usage(
            "--to TIMESTAMP needs --stream (the time is turned into each shard's record)".into(),
        ));
    }
    Ok(Target::At(at))
}

pub(crate) fn run(args: ResetArgs) -> Result<(), OpsError> {
    runtime()?.block_on(reset(args))
}

async fn reset(args: ResetArgs) -> Result<(), OpsError> {
    let target = parse_target(&args)?;
    let config = sdk_config().await;
    let table = LeaseTable::new(
        aws_sdk_dynamodb::Client::new(&config),
        args.application.as_str(),
    );
    let lease_error = |e: &LeaseError| OpsError::lease(&args.application, e);
    let leases: Vec<Lease> = if args.shard.is_empty() {
        let mut leases = table.scan().await.map_err(|e| lease_error(&e))?.leases;
        leases.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
        leases
    } else {
        let mut leases = Vec::new();
        for shard in &args.shard {
            match table.get(shard).await.map_err(|e| lease_error(&e))? {
                Some(lease) => leases.push(lease),
                None => {
                    return Err(OpsError::NotFound(format!(
                        "the lease table {:?} has no lease {shard}",
                        args.application
                    )));
                }
            }
        }
        leases
    };
    let resolver = match (&target, &args.stream) {
        (Target::At(at), Some(stream)) => {
            Some(Resolver::new(&config, StreamId::from(stream.as_str()), *at).await?)
        }
        _ => None,
    };
    // Every target first: a shard whose time cannot be resolved stops the command before
    // anything is written.
    let mut plan = Vec::with_capacity(leases.len());
    for lease in leases {
        if lease.is_finished() && args.shard.is_empty() {
            plan.push((lease, None));
            continue;
        }
        let to = match (&target, &resolver) {
            (Target::Checkpoint(checkpoint), _) => checkpoint.clone(),
            (Target::At(_), Some(resolver)) => resolver.checkpoint(&lease.lease_key).await?,
            (Target::At(_), None) => unreachable_usage()?,
        };
        plan.push((lease, Some(to)));
    }
    let mut rows = Vec::with_capacity(plan.len());
    for (lease, to) in plan {
        match to {
            None => rows.push(row(&lease, "finished", None)),
            Some(to) => rows.push(reset_one(&table, lease, &to, args.force, args.dry_run).await?),
        }
    }
    let report = Report {
        application: args.application.clone(),
        to: args.to.clone(),
        force: args.force,
        dry_run: args.dry_run,
        leases: rows,
    };
    if args.json {
        print_json(&report)?;
    } else {
        print_readable(&report)?;
    }
    let unmoved: Vec<&str> = report
        .leases
        .iter()
        .filter(|r| matches!(r.result, "held" | "changed"))
        .map(|r| r.shard_id.as_str())
        .collect();
    if !unmoved.is_empty() {
        return Err(OpsError::NotAllMoved(format!(
            "not moved: {} (held by a worker: --force takes them; or changed meanwhile: run again)",
            unmoved.join(", ")
        )));
    }
    Ok(())
}

/// A `--to TIMESTAMP` without `--stream` is refused by `parse_target`.
fn unreachable_usage() -> Result<Checkpoint, OpsError> {
    Err(OpsError::Usage("--to TIMESTAMP needs --stream".into()))
}

fn row(lease: &Lease, result: &'static str, after: Option<&Lease>) -> Row {
    Row {
        shard_id: lease.lease_key.clone(),
        result,
        owner: lease.holder().map(str::to_owned),
        before: lease.checkpoint.to_string(),
        after: after.map(|l| l.checkpoint.to_string()),
        counter_before: lease.lease_counter,
        counter_after: after.map(|l| l.lease_counter),
    }
}

/// Resets one lease, reading it again when it changed under the write.
async fn reset_one(
    table: &LeaseTable,
    mut lease: Lease,
    to: &Checkpoint,
    force: bool,
    dry_run: bool,
) -> Result<Row, OpsError> {
    const ATTEMPTS: usize = 3;
    let lease_error = |e: &LeaseError| OpsError::lease(table.table_name(), e);
    for _ in 0..ATTEMPTS {
        if dry_run {
            let held = lease.holder().is_some();
            let equal = lease.checkpoint == *to
                && !(*to == Checkpoint::Latest && lease.latest_started_at.is_some());
            return Ok(if equal {
                row(&lease, "unchanged", None)
            } else if held && !force {
                row(&lease, "held", None)
            } else {
                Row {
                    after: Some(to.to_string()),
                    ..row(&lease, "would_move", None)
                }
            });
        }
        match table.reset_checkpoint(&lease, to, force).await {
            Ok(ResetOutcome::Moved(after)) => return Ok(row(&lease, "moved", Some(&after))),
            Ok(ResetOutcome::Unchanged(lease)) => return Ok(row(&lease, "unchanged", None)),
            Ok(ResetOutcome::Held(lease)) => return Ok(row(&lease, "held", None)),
            Ok(other) => {
                return Err(OpsError::Failed(format!(
                    "{}: unexpected reset outcome {other:?}",
                    lease.lease_key
                )));
            }
            Err(LeaseError::LeaseLost { .. }) => {
                match table
                    .get(&lease.lease_key)
                    .await
                    .map_err(|e| lease_error(&e))?
                {
                    Some(fresh) => lease = fresh,
                    None => {
                        return Err(OpsError::NotFound(format!(
                            "the lease {} was deleted meanwhile",
                            lease.lease_key
                        )));
                    }
                }
            }
            Err(error) => return Err(lease_error(&error)),
        }
    }
    Ok(row(&lease, "changed", None))
}

/// Turns a time into each shard's checkpoint.
struct Resolver<A> {
    api: A,
    stream: StreamId,
    at: SystemTime,
    retention: Duration,
}

impl Resolver<kinesis_common::Bounded<SdkKinesis>> {
    async fn new(
        config: &aws_config::SdkConfig,
        stream: StreamId,
        at: SystemTime,
    ) -> Result<Self, OpsError> {
        let api = SdkKinesis::new(&aws_sdk_kinesis::Client::new(config))
            .with_timeouts(Timeouts::uniform(Duration::from_secs(10)));
        let summary = retried(|| api.describe_stream_summary(&stream))
            .await
            .map_err(|e| OpsError::kinesis(&format!("describing {stream}"), &e))?;
        Ok(Self {
            api,
            retention: summary.retention.unwrap_or(Duration::from_secs(24 * 3600)),
            stream,
            at,
        })
    }
}

impl<A: ReadShard> Resolver<A> {
    /// The checkpoint at the last record of `shard_id` that arrived before the time: looked
    /// for in windows before it, each twice the last (1 s, 2 s, 4 s, ... up to the retention),
    /// so a busy shard is read for about twice the stretch it needs.
    async fn checkpoint(&self, shard_id: &str) -> Result<Checkpoint, OpsError> {
        let mut back = Duration::from_secs(1);
        loop {
            let from = self.at.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH);
            let last = self
                .last_before(shard_id, from)
                .await
                .map_err(|e| OpsError::kinesis(&format!("reading {shard_id}"), &e))?;
            if let Some(record) = last {
                return Ok(after_whole(&record));
            }
            if back >= self.retention || from == SystemTime::UNIX_EPOCH {
                return Ok(Checkpoint::TrimHorizon);
            }
            back = back.saturating_mul(2);
        }
    }

    /// The last record that arrived in `[from, at)`.
    async fn last_before(
        &self,
        shard_id: &str,
        from: SystemTime,
    ) -> Result<Option<ReceivedRecord>, KinesisError> {
        let start = ShardIteratorStart::AtTimestamp(from);
        let mut iterator =
            retried(|| self.api.get_shard_iterator(&self.stream, shard_id, &start)).await?;
        let mut last = None;
        loop {
            let page = retried(|| self.api.get_records(&self.stream, &iterator, 10_000)).await?;
            let at_tip = page.millis_behind_latest == Some(0);
            for record in page.records {
                if record
                    .approximate_arrival_timestamp
                    .is_some_and(|arrival| arrival >= self.at)
                {
                    return Ok(last);
                }
                last = Some(record);
            }
            match page.next_iterator {
                Some(next) if !at_tip => iterator = next,
                _ => return Ok(last),
            }
        }
    }
}

/// A checkpoint past every user record of `record` (its last sub-record, for an aggregate).
fn after_whole(record: &ReceivedRecord) -> Checkpoint {
    let sub = deaggregate(record)
        .iter()
        .filter_map(|r| r.sub_sequence_number())
        .max()
        .unwrap_or(0);
    Checkpoint::sequence(record.sequence_number.as_deref().unwrap_or_default(), sub)
}

fn print_readable(report: &Report) -> Result<(), OpsError> {
    let mut out = std::io::stdout().lock();
    if report.dry_run {
        writeln!(out, "dry run: nothing written")?;
    }
    for r in &report.leases {
        let owner = r.owner.as_deref().unwrap_or("-");
        match r.result {
            "moved" => writeln!(
                out,
                "{}: moved {} -> {} (counter {} -> {}){}",
                r.shard_id,
                r.before,
                r.after.as_deref().unwrap_or("?"),
                r.counter_before,
                r.counter_after.unwrap_or_default(),
                if r.owner.is_some() {
                    format!(", taken from {owner}")
                } else {
                    String::new()
                }
            )?,
            "would_move" => writeln!(
                out,
                "{}: would move {} -> {}{}",
                r.shard_id,
                r.before,
                r.after.as_deref().unwrap_or("?"),
                if r.owner.is_some() {
                    format!(", taking it from {owner}")
                } else {
                    String::new()
                }
            )?,
            "unchanged" => writeln!(out, "{}: unchanged at {}", r.shard_id, r.before)?,
            "held" => writeln!(
                out,
                "{}: not moved: held by {owner} (--force takes it from its holder)",
                r.shard_id
            )?,
            "changed" => writeln!(
                out,
                "{}: not moved: it kept changing while being reset (run again)",
                r.shard_id
            )?,
            "finished" => writeln!(
                out,
                "{}: left alone: finished (SHARD_END); name it with --shard to reset it",
                r.shard_id
            )?,
            other => writeln!(out, "{}: {other}", r.shard_id)?,
        }
    }
    out.flush()?;
    Ok(())
}
