//! The operator's checkpoint reset ([`LeaseTable::reset_checkpoint`]): the one public write to
//! a lease that is not one's own holding.
//!
//! Every other write to an existing lease is crate-private and fenced to the holding it is
//! made for (see [`LeaseTable`]). Moving a checkpoint is a deliberate act of an operator (a
//! replay from an earlier point, skipping a poison stretch), made from outside the fleet, so
//! it gets its own entry point with its own rules:
//!
//! - it is conditional on the copy's `leaseCounter` **and** owner fields, like every write;
//! - it refuses a lease a worker holds, unless forced;
//! - forced on a held lease, it takes the lease from its holder rather than writing under it:
//!   the counter is bumped and the owner removed, so the holder's next renew or checkpoint
//!   (conditional on the counter it last saw, as in the Java KCL's `DynamoDBLeaseRefresher`)
//!   fails, the holder learns it lost the lease, and its late checkpoint cannot overwrite the
//!   reset. Any worker then takes the unowned lease and resumes from the new checkpoint.

use tracing::info;

use super::codec::{n, s};
use super::error::LeaseError;
use super::model::{Checkpoint, Lease};
use super::schema;
use super::table::LeaseTable;
use super::update::{Update, validate_checkpoint};

/// What [`LeaseTable::reset_checkpoint`] did to one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetOutcome {
    /// The checkpoint was moved: the lease as stored by the write (its counter bumped;
    /// unowned if it was forced from a holder). The lease before is the caller's copy, which
    /// the write found stored unchanged.
    Moved(Lease),
    /// The stored checkpoint already is the target: nothing was written (a held lease is left
    /// to its holder, even when forced).
    Unchanged(Lease),
    /// A worker holds the lease (`leaseOwner` or, during a handoff, `checkpointOwner`) and
    /// the reset was not forced: nothing was written.
    Held(Lease),
}

impl LeaseTable {
    /// Moves the checkpoint of `lease` (a copy just read with [`get`](Self::get) or
    /// [`scan`](Self::scan)) to `to`: **the operator's tool** (`kinesis-cat leases reset`),
    /// not something a worker calls on its own leases (a processor checkpoints through its
    /// [`Checkpointer`](crate::Checkpointer)).
    ///
    /// - When the stored checkpoint already equals `to`: nothing is written
    ///   ([`ResetOutcome::Unchanged`]). (A lease at `LATEST` carrying this crate's
    ///   `latestStartedAt` is not equal to `LATEST`: it resumes where a worker first read it.)
    /// - An unowned lease (no `leaseOwner`, no `checkpointOwner`): one UpdateItem sets the
    ///   checkpoint, expecting the copy's `leaseCounter` and the owner fields still absent, and
    ///   bumps the counter, so a worker about to take the lease from its older copy fails its
    ///   take, re-reads it and starts from the new checkpoint.
    /// - A held lease without `force`: nothing is written ([`ResetOutcome::Held`]).
    /// - A held lease with `force`: the same write, expecting the copy's counter and owner
    ///   fields, also removes `leaseOwner`, `checkpointOwner` and `handoffRequestId`. The
    ///   bumped counter fences the holder: its next renew or checkpoint expects the old
    ///   counter and fails, so it loses the lease (its processor is told `lease_lost`) and
    ///   cannot overwrite the reset. Records it processed after its last checkpoint are
    ///   delivered again from the new checkpoint by whichever worker takes the lease next.
    ///
    /// The write also does what a checkpoint does to the row: `checkpointSubSequenceNumber`
    /// set, `ownerSwitchesSinceCheckpoint` set to 0, the pending (two-phase) checkpoint and
    /// this crate's `latestStartedAt` removed (a reset to `LATEST` means the tip when a worker
    /// next reads the shard, not when a worker first read it).
    ///
    /// # Errors
    ///
    /// [`LeaseError::LeaseLost`] when the stored lease is not the copy any more (renewed,
    /// taken, checkpointed since it was read): nothing was written; read it again and decide
    /// again. [`LeaseError::InvalidCheckpoint`] for a bad `to`; [`LeaseError::InvalidInput`]
    /// when the counter is at its maximum; [`LeaseError::Dynamo`] when UpdateItem fails.
    pub async fn reset_checkpoint(
        &self,
        lease: &Lease,
        to: &Checkpoint,
        force: bool,
    ) -> Result<ResetOutcome, LeaseError> {
        validate_checkpoint(&lease.lease_key, to)?;
        // A lease at LATEST that a worker already started reading resumes at that start
        // (`latestStartedAt`), not at the tip: a reset to LATEST removes it, so it is a change.
        let equal = lease.checkpoint == *to
            && !(*to == Checkpoint::Latest && lease.latest_started_at.is_some());
        if equal {
            return Ok(ResetOutcome::Unchanged(lease.clone()));
        }
        let held = lease.lease_owner.is_some() || lease.checkpoint_owner.is_some();
        if held && !force {
            return Ok(ResetOutcome::Held(lease.clone()));
        }
        let mut update = Update::bump_counter(lease)?;
        if held {
            update.expect_owner(lease)?;
            update.remove(schema::LEASE_OWNER);
            update.remove(schema::CHECKPOINT_OWNER);
            update.remove(schema::HANDOFF_REQUEST_ID);
        } else {
            // An owner cannot have appeared since the copy was read without the counter
            // moving (a take bumps it); a handoff, which leaves the counter alone, needs an
            // owner first. The handoff condition says so in the write anyway.
            update.expect_no_handoff();
        }
        update.set(schema::CHECKPOINT, s(to.stored_value()));
        update.set(
            schema::CHECKPOINT_SUB_SEQUENCE_NUMBER,
            n(to.stored_sub_sequence_number()),
        );
        update.set(schema::OWNER_SWITCHES_SINCE_CHECKPOINT, n(0));
        update.remove(schema::PENDING_CHECKPOINT);
        update.remove(schema::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER);
        update.remove(schema::PENDING_CHECKPOINT_STATE);
        update.remove(schema::LATEST_STARTED_AT);
        let after = self.apply("reset", &lease.lease_key, update).await?;
        info!(
            table = %self.table_name(),
            lease_key = %lease.lease_key,
            from = %lease.checkpoint,
            to = %to,
            forced_from = lease.holder().unwrap_or(""),
            "operator reset the checkpoint"
        );
        Ok(ResetOutcome::Moved(after))
    }
}

#[cfg(test)]
mod tests {
    //! Against DynamoDB Local (`./scripts/emulators.sh start`), like `table_tests.rs`.

    use super::*;
    use aws_sdk_dynamodb::Client;

    const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

    async fn new_table() -> (Client, LeaseTable) {
        let client = integration_tests::dynamodb_client().await;
        let table = LeaseTable::new(client.clone(), integration_tests::unique_name("kcl-reset"))
            .with_poll_interval(integration_tests::POLL_INTERVAL)
            .with_active_timeout(integration_tests::ACTIVE_TIMEOUT);
        assert!(table.create_if_missing().await.expect("create_if_missing"));
        (client, table)
    }

    async fn stored(table: &LeaseTable, key: &str) -> Lease {
        table.get(key).await.expect("get").expect("stored lease")
    }

    /// A lease at TRIM_HORIZON, taken by `owner` when given.
    async fn lease(table: &LeaseTable, key: &str, owner: Option<&str>) -> Lease {
        let lease = Lease::new(key, Checkpoint::TrimHorizon);
        assert!(table.create_lease(&lease).await.expect("create"));
        match owner {
            Some(owner) => table.take(&lease, owner).await.expect("take"),
            None => stored(table, key).await,
        }
    }

    #[tokio::test]
    async fn reset_refuses_a_held_lease_without_force_and_writes_nothing() {
        let (client, table) = new_table().await;
        let held = lease(&table, "shardId-000000000000", Some("worker-1")).await;
        let outcome = table
            .reset_checkpoint(&held, &Checkpoint::Latest, false)
            .await
            .expect("reset");
        assert_eq!(outcome, ResetOutcome::Held(held.clone()));
        assert_eq!(stored(&table, "shardId-000000000000").await, held);
        integration_tests::delete_table(&client, table.table_name()).await;
    }

    #[tokio::test]
    async fn reset_moves_an_unowned_lease_and_bumps_its_counter() {
        let (client, table) = new_table().await;
        let unowned = lease(&table, "shardId-000000000000", None).await;
        let to = Checkpoint::sequence(SEQ, 3);
        let outcome = table
            .reset_checkpoint(&unowned, &to, false)
            .await
            .expect("reset");
        let ResetOutcome::Moved(after) = outcome else {
            panic!("not moved: {outcome:?}");
        };
        assert_eq!(after.checkpoint, to);
        assert_eq!(after.lease_counter, unowned.lease_counter + 1);
        assert_eq!(after.lease_owner, None);
        assert_eq!(stored(&table, "shardId-000000000000").await, after);
        // A worker that read the lease before the reset cannot take it from its old copy.
        assert!(matches!(
            table.take(&unowned, "worker-2").await,
            Err(LeaseError::LeaseLost { .. })
        ));
        integration_tests::delete_table(&client, table.table_name()).await;
    }

    #[tokio::test]
    async fn reset_with_force_takes_the_lease_so_the_holders_checkpoint_is_fenced() {
        let (client, table) = new_table().await;
        let held = lease(&table, "shardId-000000000000", Some("worker-1")).await;
        let outcome = table
            .reset_checkpoint(&held, &Checkpoint::Latest, true)
            .await
            .expect("reset");
        let ResetOutcome::Moved(after) = outcome else {
            panic!("not moved: {outcome:?}");
        };
        assert_eq!(after.lease_counter, held.lease_counter + 1);
        assert_eq!(after.lease_owner, None);
        assert_eq!(after.checkpoint, Checkpoint::Latest);
        // The holder's late checkpoint and renew expect the counter it saw: both fail.
        assert!(matches!(
            table.checkpoint(&held, Checkpoint::sequence(SEQ, 0)).await,
            Err(LeaseError::LeaseLost { .. })
        ));
        assert!(matches!(
            table.renew(&held).await,
            Err(LeaseError::LeaseLost { .. })
        ));
        assert_eq!(stored(&table, "shardId-000000000000").await, after);
        integration_tests::delete_table(&client, table.table_name()).await;
    }

    #[tokio::test]
    async fn reset_writes_nothing_when_the_checkpoint_is_equal() {
        let (client, table) = new_table().await;
        let unowned = lease(&table, "shardId-000000000000", None).await;
        let held = lease(&table, "shardId-000000000001", Some("worker-1")).await;
        for (copy, force) in [(&unowned, false), (&held, true)] {
            let outcome = table
                .reset_checkpoint(copy, &Checkpoint::TrimHorizon, force)
                .await
                .expect("reset");
            assert_eq!(outcome, ResetOutcome::Unchanged(copy.clone()));
            assert_eq!(stored(&table, &copy.lease_key).await, *copy);
        }
        integration_tests::delete_table(&client, table.table_name()).await;
    }

    #[tokio::test]
    async fn reset_to_latest_forgets_when_a_worker_first_read_the_lease() {
        let (client, table) = new_table().await;
        let lease = Lease::new("shardId-000000000000", Checkpoint::Latest);
        assert!(table.create_lease(&lease).await.expect("create"));
        let held = table.take(&lease, "worker-1").await.expect("take");
        let started = table
            .note_latest_start(&held, std::time::SystemTime::now())
            .await
            .expect("note");
        assert!(started.latest_started_at.is_some());
        let outcome = table
            .reset_checkpoint(&started, &Checkpoint::Latest, true)
            .await
            .expect("reset");
        let ResetOutcome::Moved(after) = outcome else {
            panic!("not moved: {outcome:?}");
        };
        assert_eq!(after.latest_started_at, None);
        assert_eq!(after.checkpoint, Checkpoint::Latest);
        integration_tests::delete_table(&client, table.table_name()).await;
    }

    #[tokio::test]
    async fn reset_from_a_stale_copy_writes_nothing() {
        let (client, table) = new_table().await;
        let unowned = lease(&table, "shardId-000000000000", None).await;
        // Taken since the operator read it: the copy says unowned, the row does not.
        let taken = table.take(&unowned, "worker-1").await.expect("take");
        assert!(matches!(
            table
                .reset_checkpoint(&unowned, &Checkpoint::Latest, false)
                .await,
            Err(LeaseError::LeaseLost { .. })
        ));
        assert_eq!(stored(&table, "shardId-000000000000").await, taken);
        integration_tests::delete_table(&client, table.table_name()).await;
    }
}
