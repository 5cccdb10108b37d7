//! Reading the whole table: [`LeaseTable::scan`] and [`LeaseTable::list`], which keep the
//! leases of a single-stream application and skip every other row.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use tracing::{debug, warn};

use super::codec::MalformedLease;
use super::error::{LeaseError, from_sdk};
use super::model::Lease;
use super::schema;
use super::table::LeaseTable;

/// Why [`LeaseTable::scan`] skipped a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// A Java KCL multi-stream lease (`account:stream:creationEpoch:shardId`): it belongs to
    /// a multi-stream application, not to this one.
    #[error("a multi-stream lease")]
    MultiStream,
    /// Not a lease: malformed, a row without `leaseCounter` (Java KCL 3.x entries of other
    /// kinds), or an `entityType` other than `LEASE`.
    #[error(transparent)]
    Malformed(#[from] MalformedLease),
}

/// A row [`LeaseTable::scan`] did not return as a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedRow {
    /// The row's `leaseKey`, when it has a string one.
    pub lease_key: Option<String>,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Everything in the lease table, sorted into leases and skipped rows.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TableScan {
    /// The single-stream leases.
    pub leases: Vec<Lease>,
    /// The rows that are not.
    pub skipped: Vec<SkippedRow>,
}

impl LeaseTable {
    /// Every row of the table (a consistent Scan, all pages), sorted into single-stream
    /// leases and rows that are not (multi-stream leases, Java KCL 3.x rows of other kinds,
    /// malformed rows). Skipping never fails the scan.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Dynamo`] when a Scan fails.
    pub async fn scan(&self) -> Result<TableScan, LeaseError> {
        let limit = self
            .scan_page_limit()
            .map(|limit| i32::try_from(limit.get()).unwrap_or(i32::MAX));
        let mut scan = TableScan::default();
        let mut start_key = None;
        loop {
            let out = self
                .client()
                .scan()
                .table_name(self.table_name())
                .consistent_read(true)
                .set_limit(limit)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|err| from_sdk("Scan", self.table_name(), None, err))?;
            for item in out.items() {
                match classify(item) {
                    Ok(lease) => scan.leases.push(lease),
                    Err(skipped) => scan.skipped.push(skipped),
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => break,
            }
        }
        debug!(
            table = %self.table_name(),
            leases = scan.leases.len(),
            skipped = scan.skipped.len(),
            "scanned lease table"
        );
        Ok(scan)
    }

    /// Every single-stream lease in the table (see [`scan`](Self::scan)). Each skipped row is
    /// logged as a warning the first time this table handle (or a clone) sees it.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Dynamo`] when a Scan fails.
    pub async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let scan = self.scan().await?;
        for row in &scan.skipped {
            let key = row.lease_key.clone().unwrap_or_default();
            if self.first_warning(&key, &row.reason) {
                warn!(
                    table = %self.table_name(),
                    lease_key = %key,
                    reason = %row.reason,
                    "row skipped: not a lease of this application; it is never taken"
                );
            }
        }
        Ok(scan.leases)
    }
}

/// A lease, or why the row is not one.
pub(crate) fn classify(item: &HashMap<String, AttributeValue>) -> Result<Lease, SkippedRow> {
    let lease_key = match item.get(schema::LEASE_KEY) {
        Some(AttributeValue::S(key)) => Some(key.clone()),
        _ => None,
    };
    if lease_key.as_deref().is_some_and(is_multi_stream_key) {
        return Err(SkippedRow {
            lease_key,
            reason: SkipReason::MultiStream,
        });
    }
    Lease::from_item(item).map_err(|error| SkippedRow {
        lease_key,
        reason: SkipReason::Malformed(error),
    })
}

/// Whether `key` is a Java KCL multi-stream lease key (`account:stream:epoch:shardId`). Shard
/// ids never contain `:`.
pub(crate) fn is_multi_stream_key(key: &str) -> bool {
    key.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::codec::{n, s};

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn rows_that_are_not_single_stream_leases_are_skipped_with_a_reason() {
        let lease = item(&[
            ("leaseKey", s("shardId-000000000000")),
            ("leaseCounter", n(1)),
            ("checkpoint", s("TRIM_HORIZON")),
        ]);
        assert_eq!(classify(&lease).unwrap().lease_key, "shardId-000000000000");
        let marked = item(&[
            ("leaseKey", s("shardId-000000000001")),
            ("leaseCounter", n(1)),
            ("checkpoint", s("TRIM_HORIZON")),
            ("entityType", s("LEASE")),
        ]);
        assert!(classify(&marked).is_ok());

        let multi = item(&[
            (
                "leaseKey",
                s("123456789012:orders:1700000000:shardId-000000000003"),
            ),
            ("leaseCounter", n(0)),
            ("checkpoint", s("TRIM_HORIZON")),
        ]);
        assert_eq!(
            classify(&multi).unwrap_err().reason,
            SkipReason::MultiStream
        );

        // 3.x single-table entries: another entity type, or no leaseCounter at all.
        let stream_info = item(&[
            ("leaseKey", s("streamInfo-orders")),
            ("entityType", s("STREAM")),
        ]);
        let skipped = classify(&stream_info).unwrap_err();
        assert_eq!(skipped.lease_key.as_deref(), Some("streamInfo-orders"));
        assert!(
            matches!(skipped.reason, SkipReason::Malformed(ref m) if m.attribute() == "entityType")
        );
        let lock = item(&[("leaseKey", s("Leader")), ("lockOwner", s("w"))]);
        assert!(matches!(
            classify(&lock).unwrap_err().reason,
            SkipReason::Malformed(ref m) if m.attribute() == "leaseCounter"
        ));

        let no_key = item(&[("leaseCounter", n(1))]);
        assert_eq!(classify(&no_key).unwrap_err().lease_key, None);
    }
}
