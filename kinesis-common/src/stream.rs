//! [`StreamId`]: naming a stream by name or by ARN.

use std::fmt;

/// Which stream: by name, or by ARN (needed for cross-account access and for IAM policies
/// written against ARNs).
///
/// `From<&str>` and `From<String>` take anything starting with `arn:` as an ARN and anything
/// else as a name.
///
/// ```
/// use kinesis_common::StreamId;
/// assert_eq!(StreamId::from("orders"), StreamId::Name("orders".into()));
/// assert!(matches!(
///     StreamId::from("arn:aws:kinesis:us-east-1:123456789012:stream/orders"),
///     StreamId::Arn(_)
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    /// The stream's name, in the client's account and region.
    Name(String),
    /// The stream's ARN (`arn:aws:kinesis:<region>:<account>:stream/<name>`).
    Arn(String),
}

impl StreamId {
    /// The name or ARN, as given.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Name(value) | Self::Arn(value) => value,
        }
    }

    /// Calls `name` or `arn` on an SDK request builder, whichever fits:
    ///
    /// ```
    /// # use kinesis_common::StreamId;
    /// # fn demo(client: &aws_sdk_kinesis::Client) {
    /// let stream = StreamId::from("orders");
    /// let request = stream.apply(client.list_shards(), |b, v| b.stream_name(v), |b, v| b.stream_arn(v));
    /// # let _ = request;
    /// # }
    /// ```
    pub fn apply<B>(&self, builder: B, name: fn(B, String) -> B, arn: fn(B, String) -> B) -> B {
        match self {
            Self::Name(value) => name(builder, value.clone()),
            Self::Arn(value) => arn(builder, value.clone()),
        }
    }
}

impl From<String> for StreamId {
    fn from(value: String) -> Self {
        if value.starts_with("arn:") {
            Self::Arn(value)
        } else {
            Self::Name(value)
        }
    }
}

impl From<&str> for StreamId {
    fn from(value: &str) -> Self {
        Self::from(value.to_owned())
    }
}

impl From<&StreamId> for StreamId {
    fn from(value: &StreamId) -> Self {
        value.clone()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
