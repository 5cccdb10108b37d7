//! Turning user records into Kinesis records: finishing an aggregate, sending a record alone,
//! and packing a list of records again in order (after an expiry took some out, or a map change
//! moved them).

use aggregation_proto::{AddError, Aggregator, AggregatorConfig, KinesisRecord};
use tokio::time::Instant;

use super::record::{Outgoing, PendingRecord, Target};

/// Finishes `aggregator`, which holds exactly `members`, into one outgoing Kinesis record routed
/// by an explicit hash key inside the predicted shard (the first member's). A single member
/// goes as a plain record. Should the two ever disagree, every member goes alone rather than be
/// lost.
pub(crate) fn finish(
    aggregator: &mut Aggregator,
    members: Vec<PendingRecord>,
    target: &Target,
    due: Instant,
) -> Vec<Outgoing> {
    let count = aggregator.len();
    match aggregator.finish() {
        Some(mut record) if count == members.len() && count > 0 => {
            if let Some(first) = members.first() {
                record
                    .explicit_hash_key
                    .get_or_insert_with(|| first.hash_key.to_string());
            }
            vec![Outgoing {
                record,
                aggregated: count > 1,
                members,
                target: target.clone(),
                due,
            }]
        }
        _ => members
            .into_iter()
            .map(|m| alone(m, target.clone(), due))
            .collect(),
    }
}

/// A user record sent as its own Kinesis record.
pub(crate) fn alone(pending: PendingRecord, target: Target, due: Instant) -> Outgoing {
    let mut record = KinesisRecord::from(pending.record.clone());
    record
        .explicit_hash_key
        .get_or_insert_with(|| pending.hash_key.to_string());
    Outgoing {
        record,
        members: vec![pending],
        target,
        due,
        aggregated: false,
    }
}

/// Packs `members` into Kinesis records keeping their order: aggregated when `config` is given,
/// alone otherwise (and for records too large to aggregate).
pub(crate) fn pack_in_order(
    members: Vec<PendingRecord>,
    config: Option<AggregatorConfig>,
    target: &Target,
    due: Instant,
) -> Vec<Outgoing> {
    let Some(config) = config else {
        return members
            .into_iter()
            .map(|m| alone(m, target.clone(), due))
            .collect();
    };
    let mut packed = Vec::new();
    let mut aggregator = Aggregator::new(config);
    let mut group = Vec::new();
    for member in members {
        match aggregator.try_add(&member.record) {
            Ok(()) => {
                group.push(member);
                continue;
            }
            Err(AddError::Full) => {
                packed.extend(finish(
                    &mut aggregator,
                    std::mem::take(&mut group),
                    target,
                    due,
                ));
                if aggregator.try_add(&member.record).is_ok() {
                    group.push(member);
                    continue;
                }
            }
            Err(_) => {}
        }
        // Too large to aggregate: alone, after what came before it.
        packed.extend(finish(
            &mut aggregator,
            std::mem::take(&mut group),
            target,
            due,
        ));
        packed.push(alone(member, target.clone(), due));
    }
    packed.extend(finish(&mut aggregator, group, target, due));
    packed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::record::Incoming;
    use aggregation_proto::UserRecord;

    fn member(i: u64, size: usize) -> PendingRecord {
        let record = UserRecord::new(format!("k{i}"), vec![b'x'; size]);
        let hash_key = record.hash_key().expect("valid");
        PendingRecord::new(
            Incoming {
                record,
                hash_key,
                reply: None,
                charge: 1,
                stream: 0,
            },
            0,
            i,
            Instant::now(),
        )
    }

    fn target() -> Target {
        Target {
            shard_id: "shardId-000000000000".into(),
            shard: 0,
            lane: 0,
            map_epoch: 1,
        }
    }

    #[tokio::test]
    async fn packing_keeps_order_and_puts_large_records_alone() {
        let config = AggregatorConfig::default().max_size(1_000);
        let members = vec![
            member(0, 100),
            member(1, 100),
            member(2, 5_000),
            member(3, 100),
        ];
        let packed = pack_in_order(members, Some(config), &target(), Instant::now());
        let order: Vec<Vec<u64>> = packed
            .iter()
            .map(|o| o.members.iter().map(|m| m.sequence).collect())
            .collect();
        assert_eq!(order, [vec![0, 1], vec![2], vec![3]]);
        assert!(packed[0].aggregated);
        assert!(!packed[1].aggregated && !packed[2].aggregated);
        for outgoing in &packed {
            assert!(outgoing.record.explicit_hash_key.is_some());
        }
    }

    #[tokio::test]
    async fn packing_without_aggregation_sends_each_alone() {
        let members = vec![member(0, 10), member(1, 10)];
        let packed = pack_in_order(members, None, &target(), Instant::now());
        assert_eq!(packed.len(), 2);
        assert!(packed.iter().all(|o| o.members.len() == 1 && !o.aggregated));
    }
}
