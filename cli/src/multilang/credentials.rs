//! `AwsCredentialsProvider` values name Java classes (SDK v1 or v2, short or fully qualified,
//! comma-separated for a chain, `|` before a provider's arguments). The common ones map onto
//! the Rust SDK's providers:
//!
//! | Java class (either SDK) | here |
//! |---|---|
//! | `DefaultCredentialsProvider`, `DefaultAWSCredentialsProviderChain` | the SDK's default chain |
//! | `ProfileCredentialsProvider[|name]` | the profile file (that profile) |
//! | `EnvironmentVariableCredentialsProvider` | `AWS_ACCESS_KEY_ID`... |
//! | `InstanceProfileCredentialsProvider` | EC2 instance metadata (IMDS) |
//! | `ContainerCredentialsProvider`, `EC2ContainerCredentialsProviderWrapper` | ECS/EKS container credentials |
//!
//! Anything else (an application's own class) cannot run here: the daemon refuses to start and
//! says which names it knows.

use aws_config::meta::credentials::CredentialsProviderChain;

use super::config::ConfigError;

/// One provider of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Provider {
    Default,
    Profile(Option<String>),
    Environment,
    InstanceProfile,
    Container,
}

/// A credentials chain as the properties file names it; empty means the default chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CredentialsSpec {
    providers: Vec<Provider>,
}

impl CredentialsSpec {
    pub(crate) fn parse(key: &'static str, value: &str) -> Result<Self, ConfigError> {
        let mut providers = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = entry.split('|').map(str::trim);
            let class = parts.next().unwrap_or_default();
            let short = class.rsplit('.').next().unwrap_or(class);
            let argument = parts.next().filter(|a| !a.is_empty()).map(str::to_owned);
            let provider = match short {
                "DefaultCredentialsProvider" | "DefaultAWSCredentialsProviderChain" => {
                    Provider::Default
                }
                "ProfileCredentialsProvider" => Provider::Profile(argument),
                "EnvironmentVariableCredentialsProvider" => Provider::Environment,
                "InstanceProfileCredentialsProvider" => Provider::InstanceProfile,
                "ContainerCredentialsProvider" | "EC2ContainerCredentialsProviderWrapper" => {
                    Provider::Container
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        key,
                        value: entry.to_owned(),
                        expected: "one of DefaultCredentialsProvider, DefaultAWSCredentialsProviderChain, \
                                   ProfileCredentialsProvider[|profile], EnvironmentVariableCredentialsProvider, \
                                   InstanceProfileCredentialsProvider, ContainerCredentialsProvider (Java classes of \
                                   your own cannot run without a JVM)",
                    });
                }
            };
            providers.push(provider);
        }
        Ok(Self { providers })
    }

    /// Whether this is just the default chain (the SDK config's own).
    pub(crate) fn is_default(&self) -> bool {
        self.providers.iter().all(|p| *p == Provider::Default)
    }

    /// The chain of Rust SDK providers; `None` for the default chain.
    pub(crate) async fn provider(&self) -> Option<CredentialsProviderChain> {
        if self.is_default() {
            return None;
        }
        let mut chain: Option<CredentialsProviderChain> = None;
        for provider in &self.providers {
            chain = Some(match provider {
                Provider::Default => {
                    let next = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .build()
                        .await;
                    link(chain, "default chain", next)
                }
                Provider::Profile(name) => {
                    let mut builder =
                        aws_config::profile::ProfileFileCredentialsProvider::builder();
                    if let Some(name) = name {
                        builder = builder.profile_name(name);
                    }
                    link(chain, "profile", builder.build())
                }
                Provider::Environment => link(
                    chain,
                    "environment",
                    aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
                ),
                Provider::InstanceProfile => link(
                    chain,
                    "instance profile",
                    aws_config::imds::credentials::ImdsCredentialsProvider::builder().build(),
                ),
                Provider::Container => link(
                    chain,
                    "container",
                    aws_config::ecs::EcsCredentialsProvider::builder().build(),
                ),
            });
        }
        chain
    }
}

fn link(
    chain: Option<CredentialsProviderChain>,
    name: &'static str,
    provider: impl aws_sdk_kinesis::config::ProvideCredentials + 'static,
) -> CredentialsProviderChain {
    match chain {
        None => CredentialsProviderChain::first_try(name, provider),
        Some(chain) => chain.or_else(name, provider),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_names_short_and_qualified_v1_and_v2() {
        let spec = CredentialsSpec::parse(
            "AwsCredentialsProvider",
            "software.amazon.awssdk.auth.credentials.ProfileCredentialsProvider|dev, \
             com.amazonaws.auth.EnvironmentVariableCredentialsProvider,InstanceProfileCredentialsProvider",
        )
        .unwrap();
        assert_eq!(
            spec.providers,
            vec![
                Provider::Profile(Some("dev".into())),
                Provider::Environment,
                Provider::InstanceProfile
            ]
        );
        assert!(!spec.is_default());
        let default = CredentialsSpec::parse(
            "AwsCredentialsProvider",
            "DefaultAWSCredentialsProviderChain",
        )
        .unwrap();
        assert!(default.is_default());
        let error = CredentialsSpec::parse("AwsCredentialsProvider", "com.acme.Vault|x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("com.acme.Vault"), "{error}");
    }
}
