//! Fetching a URL for a bundle without becoming a proxy into our network:
//! every hop's addresses are checked (redirects are followed here, one at a
//! time, not by the client), the connection itself goes through a resolver
//! that drops internal addresses (so a name that changes its answer between
//! the check and the connect gains nothing), and no environment proxy is used.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Client, Response, StatusCode, Url, redirect};

use super::address::{AllowEntry, forbidden_reason};

/// Why a URL produced no file; `code` is the `error` of `download_failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    pub code: &'static str,
    pub message: String,
    /// Worth another attempt (network trouble, 5xx, 429).
    pub transient: bool,
}

impl FetchFailure {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), transient: false }
    }

    fn transient(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), transient: true }
    }
}

#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub max_redirects: usize,
    pub connect_timeout: Duration,
    pub allow: Vec<AllowEntry>,
}

pub struct Fetcher {
    /// For hosts the allow-list names: the system resolver, as is.
    open: Client,
    /// For everything else: only public addresses are connected to.
    guarded: Client,
    settings: FetchSettings,
}

/// Resolves like the system does, then keeps public addresses only.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addresses.into_iter().filter(|a| forbidden_reason(a.ip()).is_none()).collect();
            if public.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> anyhow::Result<Self> {
        let builder = || {
            Client::builder()
                .redirect(redirect::Policy::none())
                .no_proxy()
                .connect_timeout(settings.connect_timeout)
                .user_agent(concat!("orders-bundles/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Self {
            open: builder().build()?,
            guarded: builder().dns_resolver(Arc::new(PublicOnly)).build()?,
            settings,
        })
    }

    /// Sends GET to `url`, following up to `max_redirects` redirects, each
    /// hop checked; returns the final 2xx response with its body unread.
    pub async fn open(&self, url: &str) -> Result<Response, FetchFailure> {
        let mut current = parse(url)?;
        for hop in 0..=self.settings.max_redirects {
            let client = self.check(&current, hop > 0).await?;
            let response = client.get(current.clone()).send().await.map_err(|e| network(current.host_str().unwrap_or(""), e))?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchFailure::new("http_status", format!("{status} without a Location header")))?;
                current = current
                    .join(location)
                    .map_err(|e| FetchFailure::new("invalid_url", format!("redirect to an invalid URL {location:?}: {e}")))?;
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            let message = format!("the server answered {status}");
            return Err(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                FetchFailure::transient("http_status", message)
            } else {
                FetchFailure::new("http_status", message)
            });
        }
        Err(FetchFailure::new("too_many_redirects", format!("more than {} redirects", self.settings.max_redirects)))
    }

    /// The client to use for `url`, once its scheme and addresses pass.
    async fn check(&self, url: &Url, redirected: bool) -> Result<&Client, FetchFailure> {
        let refused = |reason: String| {
            let what = if redirected { format!("redirect to {url}") } else { url.to_string() };
            FetchFailure::new("forbidden_address", format!("{what} refused: {reason}"))
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(format!("scheme {} is not http or https", url.scheme())));
        }
        let host = url.host_str().ok_or_else(|| refused("no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        if self.settings.allow.iter().any(|entry| entry.matches(host, port)) {
            return Ok(&self.open);
        }
        let addresses: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
            _ => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| FetchFailure::transient("network", format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        // Every address must be public: a name with one internal answer is
        // refused outright rather than half-trusted.
        for address in &addresses {
            if let Some(reason) = forbidden_reason(address.ip()) {
                return Err(refused(format!("{} is {reason}", address.ip())));
            }
        }
        Ok(&self.guarded)
    }
}

/// Checks the shape of a URL before any work: absolute http(s) with a host.
pub fn parse(url: &str) -> Result<Url, FetchFailure> {
    let parsed = Url::parse(url).map_err(|e| FetchFailure::new("invalid_url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(FetchFailure::new("invalid_url", "only http and https URLs with a host can be fetched"));
    }
    Ok(parsed)
}

/// A failure while reading the body of `url`'s answer.
pub fn body_failure(url: &str, error: reqwest::Error) -> FetchFailure {
    let host = Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    network(&host, error)
}

fn network(host: &str, error: reqwest::Error) -> FetchFailure {
    let mut message = format!("{host}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if error.is_timeout() {
        FetchFailure::new("timeout", message)
    } else {
        FetchFailure::transient("network", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(allow: &[&str]) -> Fetcher {
        Fetcher::new(FetchSettings {
            max_redirects: 5,
            connect_timeout: Duration::from_secs(2),
            allow: allow.iter().map(|a| AllowEntry::parse(a).unwrap()).collect(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn internal_targets_are_refused_before_connecting() {
        let fetcher = fetcher(&[]);
        for url in ["http://127.0.0.1:9/x", "http://[::1]:9/", "http://169.254.169.254/latest/meta-data/", "http://localhost:9/", "http://10.0.0.1/"] {
            let failure = fetcher.open(url).await.unwrap_err();
            assert_eq!(failure.code, "forbidden_address", "{url}: {failure:?}");
        }
        assert_eq!(fetcher.open("ftp://example.com/x").await.unwrap_err().code, "invalid_url");
        assert_eq!(fetcher.open("not a url").await.unwrap_err().code, "invalid_url");
    }

    #[tokio::test]
    async fn the_allow_list_is_per_host_and_port() {
        let fetcher = fetcher(&["127.0.0.1:9"]);
        // Allowed, so it gets as far as connecting (nothing listens on the discard port).
        assert_eq!(fetcher.open("http://127.0.0.1:9/").await.unwrap_err().code, "network");
        assert_eq!(fetcher.open("http://127.0.0.1:10/").await.unwrap_err().code, "forbidden_address");
    }
}
