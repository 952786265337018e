//! `up`, `serve` and `sidecar`: the long-running processes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use http_body_util::BodyExt;
use orders_runner::{
    AppConfig, AppShared, BoxError, Edge, InProcessService, MetricsSource, RunnerMetrics, ServiceBody, ServiceFuture, SidecarRoute,
};
use orders_sidecar::{Sidecar, call_router};
use orders_telemetry::Registry;

use serde::Serialize;
use url::Url;

use crate::auth_options::AuthOptions;
use crate::bundle_options::ComponentBundleOptions;
use crate::components::build_if_stale;
use crate::config::{DataDir, RunnerOptions, StoreOptions, bind, check_secret};
use crate::fd_limit;
use crate::keys::{announce_admin_key, bootstrap_admin_key};
use crate::settings::secret::Secret;

/// How the sidecar token is named in messages.
const SIDECAR_TOKEN_KEY: &str = "--sidecar-token / ORDERS_SIDECAR_TOKEN";

/// How long in-flight requests may run after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// What a sidecar call may take beyond the sidecar's store timeout (its own
/// work and the hop), before the runner gives up on it.
pub const SIDECAR_MARGIN: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address of the API.
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Address where the sidecar also listens, for tools and `spin up` beside it (port 0 picks one).
    #[arg(long, env = "ORDERS_SIDECAR_LISTEN", default_value = "127.0.0.1:0")]
    pub sidecar_listen: SocketAddr,
    #[command(flatten)]
    pub auth: AuthOptions,
    #[command(flatten)]
    pub store: StoreOptions,
    #[command(flatten)]
    pub runner: RunnerOptions,
}

impl UpArgs {
    pub fn check(&self) -> Result<()> {
        self.store.check()
    }
}

/// `Serialize`: `orders cluster` hands a sidecar its settings whole.
#[derive(Debug, Args, Serialize)]
pub struct SidecarArgs {
    /// Address of the sidecar's internal API.
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:7071")]
    pub listen: SocketAddr,
    /// Bearer token components must present.
    #[arg(long, env = "ORDERS_SIDECAR_TOKEN", hide_env_values = true)]
    pub sidecar_token: Secret,
    #[command(flatten)]
    #[serde(flatten)]
    pub auth: AuthOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreOptions,
}

impl SidecarArgs {
    pub fn check(&self) -> Result<()> {
        check_secret(&self.sidecar_token, SIDECAR_TOKEN_KEY)?;
        self.store.check()
    }
}

/// `Serialize`: `orders cluster` hands each instance its settings whole.
#[derive(Debug, Args, Serialize)]
pub struct ServeArgs {
    /// Address of the API.
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// URL of the sidecar the components call.
    #[arg(long, env = "ORDERS_SIDECAR_URL", value_parser = crate::settings::values::http_url)]
    pub sidecar_url: Url,
    /// Further sidecars (same store, same token) the runner sends a sidecar call to when
    /// the one before refuses the connection; comma-separated `http://host:port` URLs.
    #[arg(long, env = "ORDERS_SIDECAR_FAILOVER_URLS", value_delimiter = ',', value_parser = crate::settings::values::http_url)]
    pub sidecar_failover_urls: Vec<Url>,
    /// Longest wait for a sidecar's answer, in milliseconds (its store timeout plus a margin);
    /// then the call fails and the API answers 503 + Retry-After.
    #[arg(long, env = "ORDERS_SIDECAR_TIMEOUT_MS", default_value_t = 6000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub sidecar_timeout_ms: u64,
    /// Bearer token of that sidecar.
    #[arg(long, env = "ORDERS_SIDECAR_TOKEN", hide_env_values = true)]
    pub sidecar_token: Secret,
    #[command(flatten)]
    #[serde(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    #[serde(flatten)]
    pub components: ComponentBundleOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub runner: RunnerOptions,
}

impl ServeArgs {
    /// The token is the sidecar's to judge (`orders sidecar` checks its length).
    pub fn check(&self) -> Result<()> {
        self.components.check()
    }
}

/// The Spin variables the runner gives the components (`spin.toml`'s `[variables]`).
fn component_variables(sidecar_url: &str, token: &Secret, download_secret: &Secret, bundle_max_urls: u32) -> HashMap<String, String> {
    HashMap::from([
        // Without the slash a parsed URL adds: the components append `/v1/…`.
        ("sidecar_url".to_owned(), sidecar_url.trim_end_matches('/').to_owned()),
        ("sidecar_token".to_owned(), token.expose().to_owned()),
        ("download_secret".to_owned(), download_secret.expose().to_owned()),
        ("bundle_max_urls".to_owned(), bundle_max_urls.to_string()),
    ])
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

pub fn random_token() -> Secret {
    Secret::new(hex::encode(rand::random::<[u8; 24]>()))
}

struct SidecarInProcess(axum::Router);

impl InProcessService for SidecarInProcess {
    fn call(&self, request: http::Request<ServiceBody>) -> ServiceFuture {
        let router = self.0.clone();
        Box::pin(async move { call_router(router, request).await.map(|body| body.map_err(BoxError::from).boxed_unsync()) })
    }
}

/// `host:port` of a URL.
fn authority_of(url: &Url) -> Result<String> {
    let host = url.host_str().with_context(|| format!("{url} has no host"))?;
    Ok(match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// The sidecar the components call (their `sidecar_url`), then its alternates.
fn sidecar_route(sidecar_url: &Url, failover_urls: &[Url], timeout: Duration) -> Result<SidecarRoute> {
    let authorities = std::iter::once(sidecar_url).chain(failover_urls).map(authority_of).collect::<Result<_>>()?;
    Ok(SidecarRoute { authorities, first_byte_timeout: timeout })
}

fn load_app(
    runner: &RunnerOptions,
    data_dir: &std::path::Path,
    variables: HashMap<String, String>,
    in_process: HashMap<String, Arc<dyn InProcessService>>,
    sidecar: SidecarRoute,
    metrics: RunnerMetrics,
) -> Result<Arc<AppShared>> {
    if !runner.no_build {
        build_if_stale(&runner.manifest)?;
    }
    fd_limit::raise_for(runner.max_connections);
    let manifest_path =
        if runner.manifest.is_absolute() { runner.manifest.clone() } else { std::env::current_dir()?.join(&runner.manifest) };
    crate::compile::ahead_in_child(&manifest_path, data_dir)?;
    AppShared::load(
        AppConfig {
            manifest_path,
            cache_dir: crate::compile::cache_dir(data_dir),
            variables,
            limits: runner.limits()?,
            in_process,
            sidecar,
            route_by_method: runner.routing == crate::config::Routing::Method,
        },
        metrics,
    )
}

pub async fn up(args: UpArgs) -> Result<()> {
    let started = Instant::now();
    let registry = Registry::default();
    let token = random_token();
    let data_dir = args.store.data_dir();
    crate::private_files::private_data_dir(data_dir)?;
    let secret = args.store.bundles.components.secret(data_dir)?;
    let auth = args.auth.settings(args.listen, "--listen")?;
    let sidecar = Sidecar::start(args.store.sidecar_config(&token, &secret, auth)?, registry.clone()).await?;
    let admin_key = match args.auth.enabled() {
        true => bootstrap_admin_key(&*sidecar.keys, data_dir).await?,
        false => None,
    };
    let sidecar_listener = bind(args.sidecar_listen, "--sidecar-listen").await?;
    let sidecar_address = sidecar_listener.local_addr()?;
    let api_listener = bind(args.listen, "--listen").await?;

    let sidecar_url = format!("http://{sidecar_address}");
    let variables = component_variables(&sidecar_url, &token, &secret, args.store.bundles.components.bundle_max_urls);
    let in_process: HashMap<String, Arc<dyn InProcessService>> =
        HashMap::from([(sidecar_address.to_string(), Arc::new(SidecarInProcess(sidecar.router.clone())) as Arc<dyn InProcessService>)]);
    // In-process calls never reach the network; the route only names the hop.
    let sidecar_at = Url::parse(&sidecar_url).context("the sidecar's address")?;
    let route = sidecar_route(&sidecar_at, &[], Duration::from_millis(args.store.store_timeout_ms) + SIDECAR_MARGIN)?;
    let app = load_app(&args.runner, data_dir, variables, in_process, route, RunnerMetrics::new(registry))?;
    let extra: Vec<MetricsSource> = vec![Arc::new(orders_sidecar::process_metrics)];
    let edge = Edge::new(app, extra);

    let address = api_listener.local_addr()?;
    println!("orders is serving on http://{address} (sidecar on {sidecar_url}, ready in {} ms)", started.elapsed().as_millis());
    if let Some(key) = admin_key {
        announce_admin_key(&key, data_dir);
    }
    let sidecar_server = tokio::spawn(serve_sidecar(sidecar_listener, sidecar.router.clone()));
    orders_runner::serve(api_listener, edge, shutdown_signal(), DRAIN).await;
    sidecar_server.abort();
    Ok(())
}

async fn serve_sidecar(listener: tokio::net::TcpListener, router: axum::Router) {
    if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await {
        tracing::error!(%error, "sidecar server stopped");
    }
}

pub async fn sidecar(args: SidecarArgs) -> Result<()> {
    // One connection per busy instance slot of every instance calling it, plus their idle pools.
    fd_limit::raise_to_hard();
    let registry = Registry::default();
    let data_dir = args.store.data_dir();
    crate::private_files::private_data_dir(data_dir)?;
    let secret = args.store.bundles.components.secret(data_dir)?;
    // The sidecar's address stands in for the API's, which it cannot see.
    let auth = args.auth.settings(args.listen, "--listen")?;
    let sidecar = Sidecar::start(args.store.sidecar_config(&args.sidecar_token, &secret, auth)?, registry).await?;
    let listener = bind(args.listen, "--listen").await?;
    println!("orders-sidecar listening on http://{}", listener.local_addr()?);
    axum::serve(listener, sidecar.router).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let started = Instant::now();
    let registry = Registry::default();
    let data_dir = &args.dir.data_dir;
    crate::private_files::private_data_dir(data_dir)?;
    let secret = args.components.secret(data_dir)?;
    let variables = component_variables(args.sidecar_url.as_str(), &args.sidecar_token, &secret, args.components.bundle_max_urls);
    let route = sidecar_route(&args.sidecar_url, &args.sidecar_failover_urls, Duration::from_millis(args.sidecar_timeout_ms))?;
    let app = load_app(&args.runner, data_dir, variables, HashMap::new(), route, RunnerMetrics::new(registry))?;
    let extra: Vec<MetricsSource> = vec![Arc::new(orders_sidecar::process_metrics)];
    let edge = Edge::new(app, extra);
    let listener = bind(args.listen, "--listen").await?;
    println!("orders-instance listening on http://{} (ready in {} ms)", listener.local_addr()?, started.elapsed().as_millis());
    orders_runner::serve(listener, edge, shutdown_signal(), DRAIN).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::{SinkExt, channel::mpsc};
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::*;

    type Chunk = Result<Frame<Bytes>, BoxError>;

    async fn next_data(body: &mut ServiceBody) -> Option<Bytes> {
        body.frame().await.map(|frame| frame.expect("a frame").into_data().expect("data"))
    }

    /// The sidecar's in-process answer reaches the component while the
    /// component is still writing its request: neither side is collected.
    #[tokio::test]
    async fn an_in_process_call_streams_both_ways() {
        let echo = axum::Router::new().route("/v1/echo", axum::routing::post(|body: axum::body::Body| async move { body }));
        let (mut request_body, receiver) = mpsc::channel::<Chunk>(1);
        let request = http::Request::post("http://sidecar/v1/echo").body(StreamBody::new(receiver).boxed_unsync()).expect("request");
        request_body.send(Ok(Frame::data(Bytes::from_static(b"first")))).await.expect("send");

        let response = SidecarInProcess(echo).call(request).await;
        assert_eq!(response.status(), 200);
        let mut answer = response.into_body();
        assert_eq!(next_data(&mut answer).await.as_deref(), Some(&b"first"[..]), "the answer began before the request ended");

        request_body.send(Ok(Frame::data(Bytes::from_static(b"second")))).await.expect("send");
        drop(request_body);
        assert_eq!(next_data(&mut answer).await.as_deref(), Some(&b"second"[..]));
        assert_eq!(next_data(&mut answer).await, None);
    }
}
