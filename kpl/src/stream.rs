//! Naming the stream: by name or by ARN, as every Kinesis operation accepts either.

/// A stream, by name or ARN. `From<&str>` and `From<String>` pick ARN for strings that start
/// with `arn:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamId {
    /// The stream's name.
    Name(String),
    /// The stream's ARN.
    Arn(String),
}

impl StreamId {
    /// Calls `name` or `arn` on an SDK request builder, whichever fits.
    pub(crate) fn apply<B>(
        &self,
        builder: B,
        name: fn(B, String) -> B,
        arn: fn(B, String) -> B,
    ) -> B {
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
        value.to_owned().into()
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(value) | Self::Arn(value) => f.write_str(value),
        }
    }
}
