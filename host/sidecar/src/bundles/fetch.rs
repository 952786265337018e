//! Fetching a URL for a bundle without becoming a proxy into our network:
//! every hop's addresses are checked (redirects are followed here, one at a
//! time, not by the client), the connection itself goes through a resolver
//! that drops internal addresses (so a name that changes its answer between
//! the check and the connect gains nothing), and no environment proxy is used.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Client, Response, StatusCode, Url, redirect};

use super::address::{AllowEntry, forbidden_reason};

/// What API clients read about a refused address: never the address a name
/// resolved to (that would map our network for them); the log keeps it.
pub const NOT_PUBLIC: &str = "not a public address";

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
        Self {
            code,
            message: message.into(),
            transient: false,
        }
    }

    fn transient(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            transient: true,
        }
    }
}

/// `--fetch-resolve NAME=ADDRESS`: the worker resolves NAME to ADDRESS
/// instead of asking DNS (split-horizon names, tests), like curl's
/// `--resolve`. The answer is still checked like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveEntry {
    pub name: String,
    pub address: IpAddr,
}

impl ResolveEntry {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("--fetch-resolve {text:?}: expected NAME=ADDRESS, e.g. files.intranet=10.0.0.5")
        };
        let (name, address) = text.trim().split_once('=').ok_or_else(bad)?;
        let address = address
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad())?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(['/', ':', ' ']) {
            return Err(bad());
        }
        Ok(Self { name, address })
    }
}

#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub max_redirects: usize,
    pub connect_timeout: Duration,
    pub allow: Vec<AllowEntry>,
    pub resolve: Vec<ResolveEntry>,
}

pub struct Fetcher {
    /// For hosts the allow-list names: every address the name resolves to.
    open: Client,
    /// For everything else: only public addresses are connected to.
    guarded: Client,
    resolver: Arc<NameResolver>,
    settings: FetchSettings,
}

/// The one way the worker turns names into addresses, for the check before
/// a request and for the connection itself: the operator's pinned names,
/// else the system resolver.
struct NameResolver {
    pinned: HashMap<String, Vec<IpAddr>>,
}

impl NameResolver {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        if let Some(addresses) = self.pinned.get(&host.to_ascii_lowercase()) {
            return Ok(addresses.clone());
        }
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// Resolves through [`NameResolver`]; when `public_only`, drops every
/// special-purpose address, so a name that changes its answer between the
/// check and the connect gains nothing.
struct ConnectResolver {
    names: Arc<NameResolver>,
    public_only: bool,
}

impl Resolve for ConnectResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (names, public_only) = (self.names.clone(), self.public_only);
        Box::pin(async move {
            let addresses = names.lookup(name.as_str()).await?;
            let kept: Vec<SocketAddr> = addresses
                .into_iter()
                .filter(|ip| !public_only || forbidden_reason(*ip).is_none())
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if kept.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> anyhow::Result<Self> {
        let mut pinned: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for entry in &settings.resolve {
            pinned
                .entry(entry.name.clone())
                .or_default()
                .push(entry.address);
        }
        let resolver = Arc::new(NameResolver { pinned });
        let builder = |public_only: bool| {
            Client::builder()
                .redirect(redirect::Policy::none())
                .no_proxy()
                .connect_timeout(settings.connect_timeout)
                .user_agent(concat!("orders-bundles/", env!("CARGO_PKG_VERSION")))
                .dns_resolver(Arc::new(ConnectResolver {
                    names: resolver.clone(),
                    public_only,
                }))
        };
        Ok(Self {
            open: builder(false).build()?,
            guarded: builder(true).build()?,
            resolver,
            settings,
        })
    }

    /// Sends GET to `url`, following up to `max_redirects` redirects, each
    /// hop checked; returns the final 2xx response with its body unread.
    pub async fn open(&self, url: &str) -> Result<Response, FetchFailure> {
        let mut current = parse(url)?;
        for hop in 0..=self.settings.max_redirects {
            let client = self.check(url, &current, hop > 0).await?;
            let response = client
                .get(current.clone())
                .send()
                .await
                .map_err(|e| network(current.host_str().unwrap_or(""), e))?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        FetchFailure::new(
                            "http_status",
                            format!("{status} without a Location header"),
                        )
                    })?;
                current = current.join(location).map_err(|e| {
                    FetchFailure::new(
                        "invalid_url",
                        format!("redirect to an invalid URL {location:?}: {e}"),
                    )
                })?;
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            let message = format!("the server answered {status}");
            return Err(
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    FetchFailure::transient("http_status", message)
                } else {
                    FetchFailure::new("http_status", message)
                },
            );
        }
        Err(FetchFailure::new(
            "too_many_redirects",
            format!("more than {} redirects", self.settings.max_redirects),
        ))
    }

    /// The client to use for `url` (a hop of the bundle's `requested` URL),
    /// once its scheme and addresses pass.
    async fn check(
        &self,
        requested: &str,
        url: &Url,
        redirected: bool,
    ) -> Result<&Client, FetchFailure> {
        let what = if redirected { "a redirect" } else { "the URL" };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchFailure::new(
                "forbidden_address",
                format!(
                    "{what} refused: scheme {} is not http or https",
                    url.scheme()
                ),
            ));
        }
        let host = url.host_str().ok_or_else(|| {
            FetchFailure::new("forbidden_address", format!("{what} refused: no host"))
        })?;
        let default_port = if url.scheme() == "https" { 443 } else { 80 };
        let port = url.port().unwrap_or(default_port);
        if self
            .settings
            .allow
            .iter()
            .any(|entry| entry.matches(host, port, default_port))
        {
            return Ok(&self.open);
        }
        let addresses: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![ip.into()],
            Some(url::Host::Ipv6(ip)) => vec![ip.into()],
            _ => self.resolver.lookup(host).await.map_err(|e| {
                FetchFailure::transient("network", format!("cannot resolve {host}: {e}"))
            })?,
        };
        // Every address must be public: a name with one internal answer is
        // refused outright rather than half-trusted.
        for address in &addresses {
            if let Some(range) = forbidden_reason(*address) {
                tracing::warn!(target: "bundles", url = requested, hop = %url, %address, %range, "refused a fetch to a special-purpose address");
                // A redirect's target is not the client's to know: it may
                // name an internal host or address.
                let message = if redirected {
                    format!("a redirect was refused: its target is {NOT_PUBLIC}")
                } else {
                    format!("the URL was refused: {host} is {NOT_PUBLIC}")
                };
                return Err(FetchFailure::new("forbidden_address", message));
            }
        }
        Ok(&self.guarded)
    }
}

/// Checks the shape of a URL before any work: absolute http(s) with a host.
pub fn parse(url: &str) -> Result<Url, FetchFailure> {
    let parsed =
        Url::parse(url).map_err(|e| FetchFailure::new("invalid_url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(FetchFailure::new(
            "invalid_url",
            "only http and https URLs with a host can be fetched",
        ));
    }
    Ok(parsed)
}

/// A failure while reading the body of `url`'s answer.
pub fn body_failure(url: &str, error: reqwest::Error) -> FetchFailure {
    let host = Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
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
            allow: allow
                .iter()
                .map(|a| AllowEntry::parse(a).unwrap())
                .collect(),
            resolve: vec![
                ResolveEntry::parse("teredo.test=2001::1").unwrap(),
                ResolveEntry::parse("ietf.test=192.0.0.8").unwrap(),
                ResolveEntry::parse("compat.test=[::7f00:1]").unwrap(),
                ResolveEntry::parse("mixed.test=8.8.8.8").unwrap(),
                ResolveEntry::parse("mixed.test=10.0.0.1").unwrap(),
            ],
        })
        .unwrap()
    }

    #[tokio::test]
    async fn internal_targets_are_refused_before_connecting() {
        let fetcher = fetcher(&[]);
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]:9/",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:9/",
            "http://10.0.0.1/",
        ] {
            let failure = fetcher.open(url).await.unwrap_err();
            assert_eq!(failure.code, "forbidden_address", "{url}: {failure:?}");
        }
        assert_eq!(
            fetcher.open("ftp://example.com/x").await.unwrap_err().code,
            "invalid_url"
        );
        assert_eq!(
            fetcher.open("not a url").await.unwrap_err().code,
            "invalid_url"
        );
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused_without_saying_where() {
        let fetcher = fetcher(&[]);
        for (url, address) in [
            ("http://teredo.test/", "2001::1"),
            ("http://ietf.test/", "192.0.0.8"),
            ("http://compat.test/", "::7f00:1"),
            ("http://mixed.test/", "10.0.0.1"),
            ("http://localhost:9/", "127.0.0.1"),
        ] {
            let failure = fetcher.open(url).await.unwrap_err();
            assert_eq!(failure.code, "forbidden_address", "{url}: {failure:?}");
            assert!(failure.message.contains(NOT_PUBLIC), "{failure:?}");
            assert!(
                !failure.message.contains(address),
                "{url}: the message reveals {address}: {}",
                failure.message
            );
        }
    }

    #[test]
    fn resolve_entries() {
        assert_eq!(
            ResolveEntry::parse("Files.Test=[::1]").unwrap(),
            ResolveEntry {
                name: "files.test".into(),
                address: "::1".parse().unwrap()
            }
        );
        for bad in ["", "a", "a=", "=1.2.3.4", "a=b", "a/b=1.2.3.4"] {
            assert!(ResolveEntry::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_allow_list_is_per_host_and_port() {
        let fetcher = fetcher(&["127.0.0.1:9"]);
        // Allowed, so it gets as far as connecting (nothing listens on the discard port).
        assert_eq!(
            fetcher.open("http://127.0.0.1:9/").await.unwrap_err().code,
            "network"
        );
        assert_eq!(
            fetcher.open("http://127.0.0.1:10/").await.unwrap_err().code,
            "forbidden_address"
        );
        // Without a port, an entry allows the scheme's default port only.
        let default_port_only = super::tests::fetcher(&["localhost"]);
        assert_eq!(
            default_port_only.open("http://localhost:9/").await.unwrap_err().code,
            "forbidden_address"
        );
        assert_eq!(
            default_port_only
                .open("https://localhost:80/")
                .await
                .unwrap_err()
                .code,
            "forbidden_address"
        );
        let default_port = default_port_only.open("http://localhost/").await;
        assert!(
            default_port.is_ok() || default_port.unwrap_err().code != "forbidden_address",
            "port 80 is allowed"
        );
    }
}
