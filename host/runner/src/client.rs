//! Outgoing plain-HTTP requests over pooled keep-alive connections: the
//! default wasi:http sender opens a new connection per request, which
//! would put a TCP handshake on every sidecar call of a cluster instance.

use std::future::Future;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// What wasi:http awaits after a response head: the rest of the exchange's I/O.
pub type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

pub struct PooledHttpClient {
    client: Client<HttpConnector, WasiBody>,
}

impl Default for PooledHttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self { client }
    }
}

impl PooledHttpClient {
    /// Sends `request`; no response head within `first_byte` is a read timeout.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        first_byte: Duration,
    ) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
        let response = match tokio::time::timeout(first_byte, self.client.request(request)).await {
            Err(_) => return Err(HttpError::ConnectionReadTimeout),
            Ok(Err(error)) if error.is_connect() => return Err(HttpError::ConnectionRefused),
            Ok(Err(error)) => return Err(HttpError::InternalError(Some(error.to_string()))),
            Ok(Ok(response)) => response,
        };
        let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
        Ok((response, Box::new(async { Ok(()) })))
    }
}
