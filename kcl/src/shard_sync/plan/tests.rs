//! The shard sync rules over hand-built shard graphs: the Java KCL's documented example, splits,
//! merges, finished parents deleted by lease cleanup, trimmed parents, each initial position.

use std::time::SystemTime;

use aggregation_proto::HashRange;

use super::*;

fn shard(id: &str, parents: &[&str], open: bool) -> ShardSummary {
    ShardSummary {
        shard_id: id.into(),
        parent_shard_id: parents.first().map(|p| (*p).to_owned()),
        adjacent_parent_shard_id: parents.get(1).map(|p| (*p).to_owned()),
        hash_range: HashRange::new(0, 100).unwrap(),
        open,
    }
}

fn lease(id: &str, checkpoint: Checkpoint) -> Lease {
    Lease::new(id, checkpoint)
}

fn planned(
    shards: &[ShardSummary],
    leases: &[Lease],
    initial: &InitialPosition,
) -> Vec<(String, Checkpoint)> {
    new_leases(shards, None, leases, initial)
        .into_iter()
        .map(|l| (l.lease_key, l.checkpoint))
        .collect()
}

fn at(time: u64) -> InitialPosition {
    InitialPosition::AtTimestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(time))
}

/// The example of the Java KCL's `NonEmptyLeaseTableSynchronizer` documentation:
///
/// ```text
/// 0 1 2 3 4   5   - shards till epoch 102
/// \ / \ / |   |
///  6   7  4   5   - shards from epoch 103 - 205
///   \ /   |  / \
///    8    4 9  10 - shards from epoch 206 (open)
/// ```
fn java_example() -> Vec<ShardSummary> {
    vec![
        shard("s00", &[], false),
        shard("s01", &[], false),
        shard("s02", &[], false),
        shard("s03", &[], false),
        shard("s04", &[], true),
        shard("s05", &[], false),
        shard("s06", &["s00", "s01"], false),
        shard("s07", &["s02", "s03"], false),
        shard("s08", &["s06", "s07"], true),
        shard("s09", &["s05"], true),
        shard("s10", &["s05"], true),
    ]
}

#[test]
fn the_java_kcl_example_for_each_initial_position() {
    let shards = java_example();
    let leases = [
        lease("s04", Checkpoint::TrimHorizon),
        lease("s05", Checkpoint::TrimHorizon),
        lease("s07", Checkpoint::TrimHorizon),
    ];
    // LATEST: 6, the other parent of 8, at LATEST.
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::Latest),
        [("s06".to_owned(), Checkpoint::Latest)]
    );
    // TRIM_HORIZON: 0 and 1, the oldest of 8's line without a lease.
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::TrimHorizon),
        [
            ("s00".to_owned(), Checkpoint::TrimHorizon),
            ("s01".to_owned(), Checkpoint::TrimHorizon)
        ]
    );
    // AT_TIMESTAMP: the same leases, at AT_TIMESTAMP.
    assert_eq!(
        planned(&shards, &leases, &at(200)),
        [
            ("s00".to_owned(), Checkpoint::AtTimestamp),
            ("s01".to_owned(), Checkpoint::AtTimestamp)
        ]
    );
}

#[test]
fn an_empty_table_leases_the_shards_at_the_initial_position() {
    let shards = java_example();
    let roots: Vec<(String, Checkpoint)> = ["s00", "s01", "s02", "s03", "s04", "s05"]
        .iter()
        .map(|id| ((*id).to_owned(), Checkpoint::TrimHorizon))
        .collect();
    assert_eq!(planned(&shards, &[], &InitialPosition::TrimHorizon), roots);
    assert_eq!(
        planned(&shards, &[], &InitialPosition::Latest),
        [
            ("s04".to_owned(), Checkpoint::Latest),
            ("s08".to_owned(), Checkpoint::Latest),
            ("s09".to_owned(), Checkpoint::Latest),
            ("s10".to_owned(), Checkpoint::Latest)
        ]
    );
    // AT_TIMESTAMP: the shards ListShards says were open then, passed in.
    let open_at_t = [
        shard("s06", &["s00", "s01"], false),
        shard("s04", &[], true),
    ];
    let created = new_leases(&shards, Some(&open_at_t), &[], &at(150));
    assert_eq!(
        created
            .iter()
            .map(|l| (l.lease_key.as_str(), l.checkpoint.clone()))
            .collect::<Vec<_>>(),
        [
            ("s04", Checkpoint::AtTimestamp),
            ("s06", Checkpoint::AtTimestamp)
        ]
    );
    // Parents are recorded as the stream names them (a missing parent lease counts as done).
    assert_eq!(created[1].parent_shard_ids, ["s00", "s01"]);
    assert!(created[1].hash_key_range.is_some());
}

#[test]
fn a_split_parent_being_processed_gets_no_new_leases_and_its_children_wait_for_its_end() {
    let shards = [
        shard("s0", &[], false),
        shard("s1", &["s0"], true),
        shard("s2", &["s0"], true),
    ];
    let leases = [lease("s0", Checkpoint::sequence("12", 0))];
    for initial in [InitialPosition::Latest, InitialPosition::TrimHorizon, at(1)] {
        assert!(
            planned(&shards, &leases, &initial).is_empty(),
            "{initial:?}"
        );
    }
}

#[test]
fn a_finished_parent_deleted_by_cleanup_is_never_leased_again() {
    // s0 split into s1, s2, which merged into s3; s0 and s1/s2 were finished and deleted in
    // turn (their children moved past TRIM_HORIZON).
    let shards = [
        shard("s0", &[], false),
        shard("s1", &["s0"], false),
        shard("s2", &["s0"], false),
        shard("s3", &["s1", "s2"], true),
        shard("s4", &[], true),
    ];
    let after_split = [
        lease("s1", Checkpoint::sequence("5", 0)),
        lease("s2", Checkpoint::ShardEnd),
        lease("s4", Checkpoint::TrimHorizon),
    ];
    let after_merge = [
        lease("s3", Checkpoint::sequence("9", 0)),
        lease("s4", Checkpoint::TrimHorizon),
    ];
    for initial in [InitialPosition::Latest, InitialPosition::TrimHorizon, at(1)] {
        assert!(
            planned(&shards, &after_split, &initial).is_empty(),
            "{initial:?}"
        );
        assert!(
            planned(&shards, &after_merge, &initial).is_empty(),
            "{initial:?}"
        );
    }
}

#[test]
fn a_merge_child_waits_for_both_parents_and_the_other_parent_gets_a_lease() {
    // s0 and s1 merge into s2; only s0 has a lease (s1 is new to the application).
    let shards = [
        shard("s0", &[], false),
        shard("s1", &[], false),
        shard("s2", &["s0", "s1"], true),
    ];
    let leases = [lease("s0", Checkpoint::sequence("3", 0))];
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::Latest),
        [("s1".to_owned(), Checkpoint::Latest)]
    );
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::TrimHorizon),
        [("s1".to_owned(), Checkpoint::TrimHorizon)]
    );
}

#[test]
fn trimmed_parents_do_not_count_and_new_shards_start_at_the_initial_position() {
    // s0 was trimmed: its children are roots now. s3 is a brand new shard of another line.
    let shards = [
        shard("s1", &["s0"], true),
        shard("s2", &["s0"], true),
        shard("s3", &[], true),
    ];
    let leases = [lease("s1", Checkpoint::TrimHorizon)];
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::Latest),
        [
            ("s2".to_owned(), Checkpoint::Latest),
            ("s3".to_owned(), Checkpoint::Latest)
        ]
    );
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::TrimHorizon),
        [
            ("s2".to_owned(), Checkpoint::TrimHorizon),
            ("s3".to_owned(), Checkpoint::TrimHorizon)
        ]
    );
}

#[test]
fn history_of_an_unleased_line_is_read_from_its_oldest_shard() {
    // A line the application never saw (another worker's table had only s9): s0 -> s1 -> s2.
    let shards = [
        shard("s0", &[], false),
        shard("s1", &["s0"], false),
        shard("s2", &["s1"], true),
        shard("s9", &[], true),
    ];
    let leases = [lease("s9", Checkpoint::TrimHorizon)];
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::TrimHorizon),
        [("s0".to_owned(), Checkpoint::TrimHorizon)]
    );
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::Latest),
        [("s2".to_owned(), Checkpoint::Latest)]
    );
}

#[test]
fn an_open_child_of_an_open_parent_is_skipped_until_the_listing_is_consistent() {
    let shards = [shard("s0", &[], true), shard("s1", &["s0"], true)];
    let leases = [lease("s5", Checkpoint::TrimHorizon)];
    assert_eq!(
        planned(&shards, &leases, &InitialPosition::Latest),
        [("s0".to_owned(), Checkpoint::Latest)]
    );
}

#[test]
fn existing_leases_are_never_recreated() {
    let shards = java_example();
    let all: Vec<Lease> = shards
        .iter()
        .map(|s| lease(&s.shard_id, Checkpoint::TrimHorizon))
        .collect();
    for initial in [InitialPosition::Latest, InitialPosition::TrimHorizon, at(1)] {
        assert!(planned(&shards, &all, &initial).is_empty());
    }
}
