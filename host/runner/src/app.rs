//! A loaded application: every component of the manifest compiled and
//! pre-instantiated, the router, and the per-request path from a routed
//! request to a fresh instance's response.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpView};

use crate::client::{IoFuture, PooledHttpClient};
use crate::engine::{load_component, new_engine};
use crate::headers::set_spin_headers;
use crate::manifest::Manifest;
use crate::metrics::RunnerMetrics;
use crate::outbound::OutboundPolicy;
use crate::routes::{RouteMatch, Router};
use crate::state::{RequestState, bindings::fermyon::spin::variables};
use crate::variables::{AppVariables, component_variables};

pub type ComponentId = usize;

/// A service the runner calls in-process when a component sends a request
/// to its authority, skipping the TCP hop (the sidecar, beside the runner).
pub trait InProcessService: Send + Sync {
    fn call(&self, request: http::Request<Bytes>) -> Pin<Box<dyn Future<Output = http::Response<Bytes>> + Send>>;
}

/// How to load an application.
#[derive(Clone)]
pub struct AppConfig {
    pub manifest_path: PathBuf,
    pub cache_dir: PathBuf,
    /// Values the host offers for application variables; each is used only
    /// if the manifest declares a variable of that name.
    pub variables: HashMap<String, String>,
    pub max_instances: u32,
    /// Services answered in-process, keyed by `host:port` authority.
    pub in_process: HashMap<String, Arc<dyn InProcessService>>,
    /// Authorities of the sidecar, so its calls are measured as the sidecar hop.
    pub sidecar_authorities: Vec<String>,
}

pub(crate) struct ComponentSpec {
    pub id: String,
    pub pre: ProxyPre<RequestState>,
    pub variables: Arc<HashMap<String, String>>,
    pub environment: Vec<(String, String)>,
    pub policy: OutboundPolicy,
}

/// What every request of the application shares.
pub struct AppShared {
    pub(crate) components: Vec<ComponentSpec>,
    by_id: HashMap<String, ComponentId>,
    pub(crate) router: Router,
    instance_permits: Semaphore,
    in_process: HashMap<String, Arc<dyn InProcessService>>,
    sidecar_authorities: Vec<String>,
    http_client: PooledHttpClient,
    pub metrics: RunnerMetrics,
}


impl AppShared {
    pub fn load(config: AppConfig, metrics: RunnerMetrics) -> Result<Arc<Self>> {
        let manifest = Manifest::load(&config.manifest_path)?;
        let manifest_dir = config.manifest_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        // What the host offers (the sidecar's address, the link secret…)
        // reaches only applications that declare it; a test app need not.
        let offered: HashMap<String, String> =
            config.variables.iter().filter(|(name, _)| manifest.variables.contains_key(*name)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let app_variables = AppVariables::resolve(&manifest.variables, &offered, |name| std::env::var(name).ok())?;
        let (router, duplicates) = Router::build(&manifest.trigger.http)?;
        for duplicate in duplicates {
            tracing::warn!(route = %duplicate.route, replaced = %duplicate.replaced_component,
                effective = %duplicate.effective_component, "duplicate route: only the later component is used");
        }

        // One caller and one chained callee per request slot.
        let engine = new_engine(config.max_instances * 2)?;
        let linker = new_linker(&engine)?;
        let mut components = Vec::new();
        let mut by_id = HashMap::new();
        for (id, decl) in &manifest.component {
            let started = Instant::now();
            let wasm = Manifest::source_path(&manifest_dir, decl);
            let component = load_component(&engine, &wasm, &config.cache_dir)?;
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(|e| anyhow!("component {id:?} imports something the runner does not provide: {e}"))?;
            let pre = ProxyPre::new(instance_pre)
                .map_err(|e| anyhow!("component {id:?} does not export wasi:http/incoming-handler: {e}"))?;
            let allowed: Vec<String> = decl
                .allowed_outbound_hosts
                .iter()
                .map(|entry| app_variables.render(entry))
                .collect::<Result<_>>()
                .with_context(|| format!("allowed_outbound_hosts of component {id:?}"))?;
            let policy = OutboundPolicy::parse(&allowed).with_context(|| format!("allowed_outbound_hosts of component {id:?}"))?;
            let variables = component_variables(&app_variables, &decl.variables)
                .with_context(|| format!("variables of component {id:?}"))?;
            let environment = decl.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            tracing::debug!(component = %id, elapsed_ms = started.elapsed().as_millis() as u64, "component ready");
            by_id.insert(id.clone(), components.len());
            components.push(ComponentSpec { id: id.clone(), pre, variables: Arc::new(variables), environment, policy });
        }
        Ok(Arc::new(Self {
            components,
            by_id,
            router,
            instance_permits: Semaphore::new(config.max_instances as usize),
            in_process: config.in_process,
            sidecar_authorities: config.sidecar_authorities,
            http_client: PooledHttpClient::default(),
            metrics,
        }))
    }

    /// Waits for a slot for one incoming request. Only requests from
    /// clients take slots: a chained call runs inside its caller's slot (the
    /// pool holds two instances per slot), so callers waiting for their
    /// callees can never hold every slot and deadlock.
    pub async fn request_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.instance_permits.acquire().await.context("runner is shutting down")
    }

    pub fn component_id(&self, name: &str) -> Option<ComponentId> {
        self.by_id.get(name).copied()
    }

    pub fn component_name(&self, component: ComponentId) -> &str {
        &self.components[component].id
    }

    /// Runs `request` on a fresh instance of `component`. The request's
    /// body must already be within the limit; its headers get Spin's.
    pub async fn serve_component(
        self: &Arc<Self>,
        component: ComponentId,
        route: &RouteMatch,
        mut request: http::Request<WasiBody>,
        client_addr: SocketAddr,
    ) -> Result<http::Response<HyperOutgoingBody>> {
        set_spin_headers(&mut request, route, client_addr)?;
        let mut store = Store::new(self.components[component].pre.engine(), RequestState::new(self.clone(), component));
        let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, request)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam = store.data_mut().http().new_response_outparam(sender)?;

        let instantiation_started = Instant::now();
        let proxy = self.components[component].pre.instantiate_async(&mut store).await?;
        self.metrics.observe_instantiation(self.component_name(component), instantiation_started.elapsed());

        let task = tokio::spawn(async move {
            proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, outparam).await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(anyhow!("component {} failed: {code:?}", self.component_name(component))),
            Err(_) => {
                let outcome = task.await.context("component task panicked")?;
                let detail = outcome.err().map(|e| format!("{e:?}")).unwrap_or_else(|| "no response set".into());
                Err(anyhow!("component {} did not respond: {detail}", self.component_name(component)))
            }
        }
    }

    /// An outgoing request of `component`: checked against its
    /// allow-list, then answered by another component (service chaining),
    /// an in-process service, or the network.
    pub(crate) async fn send_outbound(
        self: Arc<Self>,
        component: ComponentId,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("http");
        let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
        if !self.components[component].policy.allows(scheme, host, uri.port_u16()) {
            tracing::warn!(component = %self.component_name(component), destination = %uri,
                "outbound request denied: not in allowed_outbound_hosts");
            return Err(HttpError::HttpRequestDenied);
        }
        let started = Instant::now();
        let function = self.component_name(component).to_owned();
        let (destination, outcome) = self.clone().dispatch_outbound(request, options).await;
        self.metrics.observe_outbound(&function, destination, started.elapsed());
        outcome
    }

    /// Sends an allowed request where it goes; names the destination kind.
    async fn dispatch_outbound(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> (&'static str, Result<(http::Response<WasiBody>, IoFuture), HttpError>) {
        let uri = request.uri().clone();
        let host = uri.host().unwrap_or_default();
        let done: IoFuture = Box::new(async { Ok(()) });
        if let Some(target) = host.strip_suffix(".spin.internal") {
            let Some(target) = self.component_id(target) else { return ("chained", Err(HttpError::DestinationNotFound)) };
            let route = RouteMatch::chained(self.component_name(target), uri.path());
            let mut request = request;
            request.headers_mut().remove(http::header::HOST);
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let response = Box::pin(self.serve_component(target, &route, request, loopback))
                .await
                .map_err(|e| HttpError::InternalError(Some(e.to_string())));
            return ("chained", response.map(|response| (response, done)));
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if let Some(service) = self.in_process.get(authority) {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => return ("sidecar", Err(error)),
            };
            let response = service.call(http::Request::from_parts(parts, body)).await;
            return ("sidecar", Ok((response.map(full_body), done)));
        }
        let destination = if self.sidecar_authorities.iter().any(|a| a == authority) { "sidecar" } else { "network" };
        let outcome = match uri.scheme_str() {
            Some("http") => self.http_client.send(request, options).await,
            _ => wasmtime_wasi_http::default_send_request(request, options)
                .await
                .map(|(response, io)| (response.map(|body| body.boxed_unsync()), Box::new(io) as IoFuture)),
        };
        (destination, outcome)
    }
}

pub fn full_body(bytes: Bytes) -> WasiBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

fn new_linker(engine: &Engine) -> Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow!("{e}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| anyhow!("{e}"))?;
    variables::add_to_linker::<RequestState, HasSelf<RequestState>>(&mut linker, |state| state)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(linker)
}
