//! ListShards: the shards a [`ShardListing`] selects, with the faults of the call.

use super::calls::carry_out;
use super::streams::FakeShard;
use super::{FakeKinesis, Operation};
use crate::api::impl_calls;
use crate::{ErrorClass, KinesisError, ListShards, Shard, ShardListing, StreamId};

/// Whether `listing` selects `shard`. [`ShardListing::AtTimestamp`] selects the shards open at
/// that time by the [arrival clock](FakeKinesis::set_arrival_clock): made by then (the shards a
/// stream began with always are), not closed by then.
fn selects(listing: &ShardListing, shard: &FakeShard) -> bool {
    match listing {
        ShardListing::All => true,
        ShardListing::AtTimestamp(at) => shard.open_at(*at),
        ShardListing::Open => shard.shard.open,
        // Shard ids are zero-padded, so their order as strings is their creation order.
        ShardListing::After(shard_id) => shard.shard.shard_id.as_str() > shard_id.as_str(),
    }
}

impl_calls! {
    impl[] ListShards for FakeKinesis {
        async fn list_shards(&self, stream: &'a StreamId, listing: &'a ShardListing) -> Vec<Shard> {
            self.state().list_calls += 1;
            self.enter(Operation::ListShards).await?;
            let fault = self.next_list_fault(stream);
            carry_out(Operation::ListShards, fault).await?;
            let shards = self.state().live_stream(stream).map(|(_, s)| {
                s.shards
                    .iter()
                    .filter(|f| !f.gone && selects(listing, f))
                    .map(|f| f.shard.clone())
                    .collect::<Vec<_>>()
            });
            shards.ok_or_else(|| {
                KinesisError::new(
                    "ListShards",
                    ErrorClass::NotFound,
                    "ResourceNotFoundException",
                    format!("Stream {stream} not found"),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(shards: &[Shard]) -> Vec<&str> {
        shards.iter().map(|s| s.shard_id.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn each_listing_selects_its_shards() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 2);
        let (low, high) = fake.split_in_half("s", "shardId-000000000000");
        let stream = StreamId::from("s");
        let list = |listing: ShardListing| {
            let fake = fake.clone();
            let stream = stream.clone();
            async move { fake.list_shards(&stream, &listing).await.unwrap() }
        };
        let all = list(ShardListing::All).await;
        assert_eq!(all.len(), 4);
        let open = list(ShardListing::Open).await;
        assert_eq!(
            ids(&open),
            ["shardId-000000000001", low.as_str(), high.as_str()]
        );
        assert!(open.iter().all(|s| s.open));
        let after = list(ShardListing::After("shardId-000000000001".into())).await;
        assert_eq!(ids(&after), [low.as_str(), high.as_str()]);
        assert!(
            after
                .iter()
                .all(|s| s.parent_shard_id.as_deref() == Some("shardId-000000000000"))
        );
        let before = list(ShardListing::AtTimestamp(std::time::SystemTime::UNIX_EPOCH)).await;
        assert_eq!(
            ids(&before),
            ["shardId-000000000000", "shardId-000000000001"],
            "before the stream: the shards it began with"
        );
        assert_eq!(fake.list_shards_calls(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_at_timestamp_listing_selects_the_shards_open_then() {
        use std::time::{Duration, SystemTime};
        let fake = FakeKinesis::new();
        let t = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        fake.set_arrival_clock(crate::testing::ArrivalClock::Fixed(t(100)));
        fake.create_stream("s", 1);
        fake.advance_arrival_clock(Duration::from_secs(100));
        let (low, high) = fake.split_in_half("s", "shardId-000000000000");
        fake.remove_shard("s", &high);
        let stream = StreamId::from("s");
        let at = |secs| {
            let fake = fake.clone();
            let stream = stream.clone();
            async move {
                let listing = ShardListing::AtTimestamp(t(secs));
                let shards = fake.list_shards(&stream, &listing).await.unwrap();
                shards.into_iter().map(|s| s.shard_id).collect::<Vec<_>>()
            }
        };
        assert_eq!(at(50).await, ["shardId-000000000000"]);
        assert_eq!(at(150).await, ["shardId-000000000000"]);
        assert_eq!(at(200).await, [low.as_str()], "removed shards are left out");
        assert_eq!(at(300).await, [low.as_str()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_or_unknown_stream_is_not_found() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        fake.delete_stream("s");
        for name in ["s", "unknown"] {
            let error = fake
                .list_shards(&StreamId::from(name), &ShardListing::Open)
                .await
                .unwrap_err();
            assert_eq!(error.class(), ErrorClass::NotFound, "{name}");
        }
    }
}
