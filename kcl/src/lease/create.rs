//! Creating the lease table: [`TableOptions`] and [`LeaseTable::create_if_missing`].

use std::num::NonZeroI64;

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode as SdkBillingMode, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, ProvisionedThroughput, ScalarAttributeType, TableStatus, Tag,
};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::error::{LeaseError, from_sdk};
use super::schema;
use super::table::LeaseTable;

/// How the lease table is billed (when this crate creates it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BillingMode {
    /// On-demand (`PAY_PER_REQUEST`), the Java KCL's default: nothing to size.
    #[default]
    OnDemand,
    /// Provisioned capacity (`PROVISIONED`), in read and write capacity units. The Java KCL's
    /// `initialLeaseTableReadCapacity` / `initialLeaseTableWriteCapacity` (10 each) when it
    /// used provisioned tables.
    Provisioned {
        /// Read capacity units.
        read_capacity: NonZeroI64,
        /// Write capacity units.
        write_capacity: NonZeroI64,
    },
}

/// How a new lease table is created. Applied only when [`LeaseTable::create_if_missing`]
/// creates the table; an existing table is used as it is.
///
/// The defaults are the Java KCL's: on-demand billing, no tags, no deletion protection, no
/// point-in-time recovery.
///
/// ```
/// use std::num::NonZeroI64;
/// use kcl::lease::{BillingMode, TableOptions};
///
/// let options = TableOptions::default()
///     .billing_mode(BillingMode::Provisioned {
///         read_capacity: NonZeroI64::new(10).unwrap(),
///         write_capacity: NonZeroI64::new(10).unwrap(),
///     })
///     .tag("team", "payments")
///     .deletion_protection(true)
///     .point_in_time_recovery(true);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TableOptions {
    /// The billing mode.
    pub billing_mode: BillingMode,
    /// Tags set on the table, in order.
    pub tags: Vec<(String, String)>,
    /// Whether the table is created with deletion protection (it cannot be deleted until that
    /// is turned off).
    pub deletion_protection: bool,
    /// Whether point-in-time recovery (continuous backups) is turned on once the table is
    /// ACTIVE.
    pub point_in_time_recovery: bool,
}

impl TableOptions {
    /// Sets the billing mode (default [`BillingMode::OnDemand`]).
    pub fn billing_mode(mut self, billing_mode: BillingMode) -> Self {
        self.billing_mode = billing_mode;
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Whether the table is created with deletion protection (default `false`).
    pub fn deletion_protection(mut self, enabled: bool) -> Self {
        self.deletion_protection = enabled;
        self
    }

    /// Whether point-in-time recovery is turned on (default `false`).
    pub fn point_in_time_recovery(mut self, enabled: bool) -> Self {
        self.point_in_time_recovery = enabled;
        self
    }
}

impl LeaseTable {
    /// Creates the table (`leaseKey` string hash key, with the [`TableOptions`] of
    /// [`with_options`](Self::with_options)) unless it exists, then waits until it is ACTIVE
    /// (or UPDATING, which serves requests too), then turns on point-in-time recovery if asked
    /// for and this call created the table (a failure to do so is logged as a warning: DynamoDB
    /// Local, for one, has no continuous backups).
    ///
    /// Safe to call from every worker at once: a `ResourceInUseException` from a racing
    /// creator counts as "exists". Returns whether this call created the table.
    ///
    /// # Errors
    ///
    /// [`LeaseError::TableNotActive`] when the table is not ACTIVE within the
    /// [active timeout](Self::with_active_timeout); [`LeaseError::Dynamo`] when a request
    /// fails (retryable failures while waiting are retried until the timeout);
    /// [`LeaseError::InvalidInput`] for tags DynamoDB cannot take.
    pub async fn create_if_missing(&self) -> Result<bool, LeaseError> {
        let created = match self.table_status().await? {
            Some(status) => {
                debug!(table = %self.table_name(), status = %status, "lease table exists");
                false
            }
            None => self.create_table().await?,
        };
        self.wait_until_active().await?;
        if created && self.options().point_in_time_recovery {
            // The table works without it: a worker that cannot start is worse than a missing
            // backup setting, which the warning names.
            if let Err(error) = self.enable_point_in_time_recovery().await {
                warn!(
                    table = %self.table_name(),
                    error = %kinesis_common::ErrorChain(&error),
                    "point-in-time recovery could not be enabled; enable it on the table by hand"
                );
            }
        }
        Ok(created)
    }

    /// The table's status, `None` when it does not exist.
    async fn table_status(&self) -> Result<Option<TableStatus>, LeaseError> {
        match self
            .client()
            .describe_table()
            .table_name(self.table_name())
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.table()
                    .and_then(|table| table.table_status().cloned())
                    .unwrap_or_else(|| TableStatus::from("UNKNOWN")),
            )),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(DescribeTableError::is_resource_not_found_exception) =>
            {
                Ok(None)
            }
            Err(err) => Err(from_sdk("DescribeTable", self.table_name(), None, err)),
        }
    }

    /// Sends CreateTable; returns whether this call created it.
    async fn create_table(&self) -> Result<bool, LeaseError> {
        let build_failed = |reason| LeaseError::InvalidInput {
            lease_key: String::new(),
            reason,
        };
        let attribute = AttributeDefinition::builder()
            .attribute_name(schema::LEASE_KEY)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|_| build_failed("could not build the table's key schema"))?;
        let key = KeySchemaElement::builder()
            .attribute_name(schema::LEASE_KEY)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|_| build_failed("could not build the table's key schema"))?;
        let options = self.options();
        let mut request = self
            .client()
            .create_table()
            .table_name(self.table_name())
            .attribute_definitions(attribute)
            .key_schema(key);
        request = match options.billing_mode {
            BillingMode::OnDemand => request.billing_mode(SdkBillingMode::PayPerRequest),
            BillingMode::Provisioned {
                read_capacity,
                write_capacity,
            } => request
                .billing_mode(SdkBillingMode::Provisioned)
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(read_capacity.get())
                        .write_capacity_units(write_capacity.get())
                        .build()
                        .map_err(|_| build_failed("could not build the provisioned throughput"))?,
                ),
        };
        for (key, value) in &options.tags {
            request = request.tags(
                Tag::builder()
                    .key(key)
                    .value(value)
                    .build()
                    .map_err(|_| build_failed("a tag needs a key and a value"))?,
            );
        }
        if options.deletion_protection {
            request = request.deletion_protection_enabled(true);
        }
        match request.send().await {
            Ok(_) => {
                info!(table = %self.table_name(), billing = ?options.billing_mode, "created lease table");
                Ok(true)
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(CreateTableError::is_resource_in_use_exception) =>
            {
                debug!(table = %self.table_name(), "lease table created by another worker");
                Ok(false)
            }
            Err(err) => Err(from_sdk("CreateTable", self.table_name(), None, err)),
        }
    }

    async fn enable_point_in_time_recovery(&self) -> Result<(), LeaseError> {
        let specification = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(true)
            .build()
            .map_err(|_| LeaseError::InvalidInput {
                lease_key: String::new(),
                reason: "could not build the point-in-time recovery specification",
            })?;
        self.client()
            .update_continuous_backups()
            .table_name(self.table_name())
            .point_in_time_recovery_specification(specification)
            .send()
            .await
            .map_err(|err| from_sdk("UpdateContinuousBackups", self.table_name(), None, err))?;
        info!(table = %self.table_name(), "point-in-time recovery enabled");
        Ok(())
    }

    async fn wait_until_active(&self) -> Result<(), LeaseError> {
        let start = Instant::now();
        loop {
            let last_status = match self.table_status().await {
                Ok(Some(TableStatus::Active | TableStatus::Updating)) => return Ok(()),
                Ok(Some(status)) => status.as_str().to_owned(),
                Ok(None) => "NOT_FOUND".to_owned(),
                Err(err) if err.is_retryable() => {
                    debug!(table = %self.table_name(), error = %err, "describing lease table failed");
                    format!("unknown ({err})")
                }
                Err(err) => return Err(err),
            };
            let waited = start.elapsed();
            let timeout = self.active_timeout();
            if waited >= timeout {
                return Err(LeaseError::TableNotActive {
                    table: self.table_name().to_owned(),
                    waited,
                    last_status,
                });
            }
            tokio::time::sleep(self.poll_interval().min(timeout - waited)).await;
        }
    }
}
