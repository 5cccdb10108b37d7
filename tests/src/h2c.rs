//! A Kinesis client that speaks HTTP/2 with prior knowledge (h2c) to a plain-HTTP endpoint.
//!
//! The SDK's default client uses HTTP/1.1 for `http://` endpoints and negotiates HTTP/2 by ALPN
//! only over TLS; kinesis-mock's TLS certificate (CN "Unknown", no subject alternative name)
//! cannot pass rustls' checks, but its plain port accepts h2c. This client runs every call
//! over h2c, so SubscribeToShard arrives as the service sends it: one HTTP/2 stream with its
//! own flow-control window. It counts the responses by HTTP version, to prove it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::TokioExecutor;

/// Responses received, by HTTP version.
#[derive(Debug, Default)]
pub struct Versions {
    /// Over HTTP/2.
    pub http2: AtomicU64,
    /// Over anything else.
    pub other: AtomicU64,
}

#[derive(Debug, Clone)]
struct H2c {
    client: Client<TcpConnector, SdkBody>,
    versions: Arc<Versions>,
}

impl HttpConnector for H2c {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (client, versions) = (self.client.clone(), self.versions.clone());
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|error| ConnectorError::other(error.into(), None))?;
            let response = client
                .request(request)
                .await
                .map_err(|error| ConnectorError::io(error.into()))?;
            let counter = if response.version() == http::Version::HTTP_2 {
                &versions.http2
            } else {
                &versions.other
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let response = response.map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response)
                .map_err(|error| ConnectorError::other(error.into(), None))
        })
    }
}

/// A Kinesis client for `endpoint` (`http://host:port`) over h2c, with the test region and
/// credentials, and the counter of its responses by HTTP version.
pub async fn kinesis_client_h2c(endpoint: &str) -> (aws_sdk_kinesis::Client, Arc<Versions>) {
    let versions = Arc::new(Versions::default());
    let connector = H2c {
        client: Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(TcpConnector::new()),
        versions: versions.clone(),
    };
    let http_client = http_client_fn(move |_, _| SharedHttpConnector::new(connector.clone()));
    let config = crate::config_loader(endpoint)
        .http_client(http_client)
        .load()
        .await;
    (aws_sdk_kinesis::Client::new(&config), versions)
}
