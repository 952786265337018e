//! The hop from a component to the sidecar, which the runner owns because a
//! component sees one `sidecar_url` and cannot tell one sidecar from another
//! (docs/adr/0011): a deadline on the sidecar's first byte, so a frozen or
//! cut-off sidecar costs a request the store timeout and not the request
//! timeout, and failover between several sidecars sharing the same store.
//!
//! Failover retries only a refused connection: the request never left, so
//! sending it to another sidecar cannot apply a write twice. Any other error
//! (a reset mid-answer, a timeout) goes back to the component, which answers
//! 503 + Retry-After; the client's retry then finds whichever sidecar is up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::app::full_body;
use crate::client::{IoFuture, PooledHttpClient};

/// The longest a sidecar call may ask the sidecar to wait for news
/// (`wait_ms` of an event-log read; the sidecar caps it at the same).
const MAX_ASKED_WAIT: Duration = Duration::from_secs(30);

/// Where the sidecar is and how long its answers may take.
#[derive(Debug, Clone)]
pub struct SidecarRoute {
    /// `host:port` of the sidecar the components call, then the sidecars to
    /// fail over to (same store, same token), in order.
    pub authorities: Vec<String>,
    /// Longest wait for the first byte of a sidecar's answer (the store
    /// timeout plus a margin), on top of any wait the call asks for.
    pub first_byte_timeout: Duration,
}

impl Default for SidecarRoute {
    fn default() -> Self {
        Self {
            authorities: Vec::new(),
            first_byte_timeout: Duration::from_secs(6),
        }
    }
}

pub struct SidecarHop {
    route: SidecarRoute,
    /// Index into `route.authorities` of the sidecar that answered last.
    preferred: AtomicUsize,
}

impl SidecarHop {
    pub fn new(route: SidecarRoute) -> Self {
        Self {
            route,
            preferred: AtomicUsize::new(0),
        }
    }

    /// Whether a component's request to `authority` is a sidecar call.
    pub fn serves(&self, authority: &str) -> bool {
        self.route
            .authorities
            .first()
            .is_some_and(|primary| primary == authority)
    }

    /// The call's first-byte deadline: the route's, plus the `wait_ms` a
    /// long-polling read asks the sidecar to wait.
    pub fn deadline_for(&self, uri: &http::Uri) -> Duration {
        self.route.first_byte_timeout + asked_wait(uri)
    }

    /// Sends a sidecar call, failing over on refused connections.
    pub async fn send(
        &self,
        client: &PooledHttpClient,
        request: http::Request<WasiBody>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
        let deadline = self.deadline_for(request.uri());
        if self.route.authorities.len() < 2 {
            return client.send(request, deadline).await;
        }
        // A refused call is sent again, so its body is kept; sidecar calls
        // carry small JSON bodies (the runner bounds them with the request's).
        let (parts, body) = request.into_parts();
        let body: Bytes = body.collect().await?.to_bytes();
        let count = self.route.authorities.len();
        let first = self.preferred.load(Ordering::Relaxed) % count;
        let mut outcome = Err(HttpError::ConnectionRefused);
        for attempt in 0..count {
            let index = (first + attempt) % count;
            let mut request = http::Request::from_parts(parts.clone(), full_body(body.clone()));
            *request.uri_mut() = with_authority(&parts.uri, &self.route.authorities[index])?;
            request.headers_mut().remove(http::header::HOST);
            outcome = client.send(request, deadline).await;
            if !matches!(outcome, Err(HttpError::ConnectionRefused)) {
                if index != first {
                    tracing::warn!(sidecar = %self.route.authorities[index], "sidecar call failed over to another sidecar");
                }
                self.preferred.store(index, Ordering::Relaxed);
                break;
            }
        }
        outcome
    }
}

fn asked_wait(uri: &http::Uri) -> Duration {
    let asked = uri
        .query()
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("wait_ms="))
        .and_then(|value| value.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or_default();
    asked.min(MAX_ASKED_WAIT)
}

fn with_authority(uri: &http::Uri, authority: &str) -> Result<http::Uri, HttpError> {
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(
        authority
            .parse()
            .map_err(|_| HttpError::HttpRequestUriInvalid)?,
    );
    http::Uri::from_parts(parts).map_err(|_| HttpError::HttpRequestUriInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(authorities: &[&str]) -> SidecarHop {
        SidecarHop::new(SidecarRoute {
            authorities: authorities.iter().map(|a| a.to_string()).collect(),
            first_byte_timeout: Duration::from_secs(6),
        })
    }

    #[test]
    fn only_the_authority_components_call_is_the_sidecar() {
        let hop = hop(&["127.0.0.1:7071", "127.0.0.1:7072"]);
        assert!(hop.serves("127.0.0.1:7071"));
        assert!(
            !hop.serves("127.0.0.1:7072"),
            "alternates are reached only by failover"
        );
        assert!(!SidecarHop::new(SidecarRoute::default()).serves("127.0.0.1:7071"));
    }

    #[test]
    fn a_long_poll_gets_its_asked_wait_on_top_of_the_deadline() {
        let hop = hop(&["127.0.0.1:7071"]);
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert_eq!(
            hop.deadline_for(&uri("http://127.0.0.1:7071/v1/docs/orders/x")),
            Duration::from_secs(6)
        );
        assert_eq!(
            hop.deadline_for(&uri(
                "http://127.0.0.1:7071/v1/logs/bundles/b?after=1&wait_ms=2500"
            )),
            Duration::from_millis(8500)
        );
        assert_eq!(
            hop.deadline_for(&uri(
                "http://127.0.0.1:7071/v1/logs/bundles/b?wait_ms=999999"
            )),
            Duration::from_secs(36)
        );
        assert_eq!(
            hop.deadline_for(&uri("http://127.0.0.1:7071/v1/logs/bundles/b?wait_ms=soon")),
            Duration::from_secs(6)
        );
    }

    /// A port nothing listens on: bound, then closed.
    fn refused_authority() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    /// A one-answer-per-connection HTTP server saying `ok`.
    async fn answering_sidecar() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        authority
    }

    fn call(authority: &str) -> http::Request<WasiBody> {
        http::Request::post(format!("http://{authority}/v1/docs/orders"))
            .body(full_body(Bytes::from_static(b"{}")))
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_sidecar_fails_over_to_the_next_and_stays_there() {
        let (down, up) = (refused_authority(), answering_sidecar().await);
        let hop = hop(&[down.as_str(), up.as_str()]);
        let client = PooledHttpClient::default();
        let (response, _) = hop.send(&client, call(&down)).await.expect("failed over");
        assert_eq!(response.status(), 200);
        assert_eq!(
            hop.preferred.load(Ordering::Relaxed),
            1,
            "the next call starts at the sidecar that answered"
        );
        let (response, _) = hop.send(&client, call(&down)).await.expect("second call");
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn every_sidecar_refusing_is_a_refused_call() {
        let (first, second) = (refused_authority(), refused_authority());
        let hop = hop(&[first.as_str(), second.as_str()]);
        let outcome = hop.send(&PooledHttpClient::default(), call(&first)).await;
        assert!(
            matches!(outcome, Err(HttpError::ConnectionRefused)),
            "{:?}",
            outcome.err()
        );
    }

    #[tokio::test]
    async fn a_silent_sidecar_is_a_read_timeout_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = listener.local_addr().unwrap().to_string();
        let hop = SidecarHop::new(SidecarRoute {
            authorities: vec![silent.clone()],
            first_byte_timeout: Duration::from_millis(200),
        });
        let outcome = hop.send(&PooledHttpClient::default(), call(&silent)).await;
        assert!(
            matches!(outcome, Err(HttpError::ConnectionReadTimeout)),
            "{:?}",
            outcome.err()
        );
        drop(listener);
    }

    #[test]
    fn failover_rewrites_only_the_authority() {
        let uri: http::Uri = "http://127.0.0.1:7071/v1/docs/orders?limit=5"
            .parse()
            .unwrap();
        assert_eq!(
            with_authority(&uri, "127.0.0.1:7072").unwrap().to_string(),
            "http://127.0.0.1:7072/v1/docs/orders?limit=5"
        );
    }
}
