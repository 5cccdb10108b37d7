//! PutRecords: entries routed to the open shard owning their hash key, over a link that takes
//! time, with the faults of the call.

use std::time::Duration;

use aggregation_proto::{parse_explicit_hash_key, partition_key_hash};
use bytestring::ByteString;
use tokio::time::Instant;

use super::faults::service_error;
use super::streams::StoredRecord;
use super::{CallFault, FakeKinesis, Operation};
use crate::api::impl_calls;
use crate::{ErrorClass, KinesisError, PutEntry, PutRecords, PutResult, StreamId};

impl FakeKinesis {
    /// Waits for the link to carry `bytes`, then for the latency.
    async fn cross_link(&self, bytes: usize) {
        let done = {
            let mut state = self.state();
            let now = Instant::now();
            let crossed = match state.link_bytes_per_sec {
                Some(rate) => {
                    let start = state.link_busy_until.map_or(now, |busy| busy.max(now));
                    let end = start + Duration::from_secs_f64(bytes as f64 / rate);
                    state.link_busy_until = Some(end);
                    end
                }
                None => now,
            };
            crossed + state.latency
        };
        tokio::time::sleep_until(done).await;
    }

    /// Stores `entries` (those not failed by `per_entry`), returning one result each.
    fn store(
        &self,
        stream: &StreamId,
        entries: &[PutEntry],
        per_entry: &[Option<&str>],
    ) -> Result<Vec<PutResult>, KinesisError> {
        let mut state = self.state();
        let mut sequence = state.next_sequence;
        let arrival = state.arrival_now();
        let (floor, width) = (state.sequence_floor, state.sequence_width);
        let Some((_, fake)) = state.live_stream_mut(stream) else {
            return Err(KinesisError::new(
                "PutRecords",
                ErrorClass::NotFound,
                "ResourceNotFoundException",
                format!("Stream {stream} not found"),
            ));
        };
        let mut results = Vec::with_capacity(entries.len());
        for (entry, failure) in entries.iter().zip(per_entry) {
            if let Some(code) = failure {
                results.push(PutResult::Failed {
                    code: (*code).to_owned(),
                    message: "injected by the fake".into(),
                });
                continue;
            }
            let hash_key = match &entry.explicit_hash_key {
                Some(key) => match parse_explicit_hash_key(key) {
                    Ok(key) => key,
                    Err(error) => {
                        results.push(PutResult::Failed {
                            code: "InvalidArgumentException".into(),
                            message: error.to_string(),
                        });
                        continue;
                    }
                },
                None => partition_key_hash(&entry.partition_key),
            };
            let Some(shard) = fake.open_owner(hash_key) else {
                results.push(PutResult::Failed {
                    code: "InternalFailure".into(),
                    message: "no open shard owns the hash key".into(),
                });
                continue;
            };
            let text = format!("{:0width$}", floor.saturating_add(sequence));
            shard.records.push(StoredRecord {
                sequence_number: sequence,
                partition_key: entry.partition_key.clone(),
                explicit_hash_key: entry.explicit_hash_key.clone(),
                data: entry.data.clone(),
                sequence_number_text: ByteString::from(text.clone()),
                arrival,
            });
            results.push(PutResult::Stored {
                shard_id: shard.shard.shard_id.clone(),
                sequence_number: text,
            });
            sequence += 1;
        }
        state.next_sequence = sequence;
        Ok(results)
    }

    async fn carry_out(
        &self,
        fault: CallFault,
        stream: &StreamId,
        entries: &[PutEntry],
        per_entry: &[Option<&'static str>],
    ) -> Result<Vec<PutResult>, KinesisError> {
        match fault {
            CallFault::None => self.store(stream, entries, per_entry),
            CallFault::FailEntries { positions, code } => {
                let per_entry: Vec<Option<&str>> = (0..entries.len())
                    .map(|i| positions.contains(&i).then_some(code.as_str()))
                    .collect();
                self.store(stream, entries, &per_entry)
            }
            CallFault::Error { class, code } => Err(KinesisError::new(
                "PutRecords",
                class,
                code,
                "injected by the fake",
            )),
            CallFault::ServiceError { code, message } => {
                Err(service_error("PutRecords", &code, &message))
            }
            CallFault::Delay(delay) => {
                tokio::time::sleep(delay).await;
                self.store(stream, entries, per_entry)
            }
            CallFault::LoseAnswer => {
                self.store(stream, entries, &vec![None; entries.len()])?;
                Err(KinesisError::new(
                    "PutRecords",
                    ErrorClass::Transient,
                    "ResponseError",
                    "connection closed before the answer (injected)",
                ))
            }
            CallFault::StoreThenHang => {
                self.store(stream, entries, &vec![None; entries.len()])?;
                std::future::pending().await
            }
            CallFault::Hang | CallFault::Panic => std::future::pending().await,
        }
    }
}

impl_calls! {
    impl[] PutRecords for FakeKinesis {
        async fn put_records(
            &self,
            stream: &'a StreamId,
            entries: &'a [PutEntry],
        ) -> Vec<PutResult> {
            {
                let mut state = self.state();
                state.calls += 1;
                state.entries_sent += entries.len() as u64;
            }
            self.enter(Operation::PutRecords).await?;
            let (fault, per_entry) = self.next_fault(stream, entries.len());
            let bytes = entries.iter().map(PutEntry::size).sum();
            match fault {
                CallFault::Hang => return std::future::pending().await,
                CallFault::Panic => panic!("injected panic in PutRecords"),
                _ => {}
            }
            // The service carries a call out whether or not the caller still waits for the
            // answer (a caller's timeout does not stop it): the work runs on its own task.
            let this = self.clone();
            let stream = stream.clone();
            let entries = entries.to_vec();
            let work = tokio::spawn(async move {
                this.cross_link(bytes).await;
                this.carry_out(fault, &stream, &entries, &per_entry).await
            });
            match work.await {
                Ok(result) => result,
                Err(_) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_are_stored_per_shard_with_increasing_sequence_numbers() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 2);
        let stream = StreamId::from("s");
        let entries: Vec<PutEntry> = [0u128, u128::MAX, 1]
            .iter()
            .map(|key| PutEntry::new("k".into(), Some(key.to_string()), Bytes::from("d")))
            .collect();
        let results = fake.put_records(&stream, &entries).await.unwrap();
        let shards: Vec<&str> = results
            .iter()
            .map(|r| match r {
                PutResult::Stored { shard_id, .. } => shard_id.as_str(),
                PutResult::Failed { code, .. } => panic!("{code}"),
            })
            .collect();
        assert_eq!(
            shards,
            [
                "shardId-000000000000",
                "shardId-000000000001",
                "shardId-000000000000"
            ]
        );
        let stored = fake.stored("s");
        let sequences: Vec<Vec<u64>> = stored
            .iter()
            .map(|(_, records)| records.iter().map(|r| r.sequence_number).collect())
            .collect();
        assert_eq!(sequences, [vec![1, 3], vec![2]]);
        assert_eq!(fake.put_records_calls(), 1);
        assert_eq!(fake.entries_received(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_still_stores() {
        let fake = FakeKinesis::new();
        fake.create_stream("s", 1);
        fake.script([CallFault::LoseAnswer]);
        let entry = PutEntry::new("k".into(), None, Bytes::from("d"));
        let error = fake
            .put_records(&StreamId::from("s"), &[entry])
            .await
            .unwrap_err();
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(fake.user_records("s").len(), 1);
    }
}
