//! A loaded application: every component of the manifest compiled and
//! pre-instantiated, the router, and the per-request path from a routed
//! request to a fresh instance's response.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpView};

use crate::budget::{InstanceBudget, StopReason};
use crate::client::{IoFuture, PooledHttpClient};
use crate::engine::{load_component, new_engine};
use crate::headers::set_spin_headers;
use crate::limits::Limits;
use crate::manifest::Manifest;
use crate::well_known::AppInfo;
use crate::method_routes::MethodRoutes;
use crate::metrics::{Destination, RunnerMetrics, ShedReason};
use crate::outbound::OutboundPolicy;
use crate::routes::{RouteMatch, Router};
use crate::sidecar_hop::{SidecarHop, SidecarRoute};
use crate::slots::Slots;
use crate::state::{RequestState, bindings::fermyon::spin::variables};
use crate::streams::{HeldBody, InstanceGuard, Shape, is_event_stream, shape_of, whole_body};
use crate::variables::{AppVariables, component_variables};

pub type ComponentId = usize;

/// How long a call to the network may wait for its answer when the
/// component sets no first-byte timeout (the request timeout ends it sooner).
const NETWORK_FIRST_BYTE: std::time::Duration = std::time::Duration::from_secs(600);

/// The error of a body crossing an in-process call, whatever its side.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A body of an in-process call: read as it is written, in either direction.
pub type ServiceBody = UnsyncBoxBody<Bytes, BoxError>;
/// What an in-process call resolves to: the answer's head, its body to come.
pub type ServiceFuture = Pin<Box<dyn Future<Output = http::Response<ServiceBody>> + Send>>;

/// A service the runner calls in-process when a component sends a request
/// to its authority, skipping the TCP hop (the sidecar, beside the runner).
/// Bodies stream both ways, as over TCP: the service reads the component's
/// request body as the component writes it, and the component reads the
/// answer's body as the service produces it, so a 100 MiB download holds a
/// few chunks in memory, not the file.
pub trait InProcessService: Send + Sync {
    fn call(&self, request: http::Request<ServiceBody>) -> ServiceFuture;
}

/// How to load an application.
#[derive(Clone)]
pub struct AppConfig {
    pub manifest_path: PathBuf,
    pub cache_dir: PathBuf,
    /// Values the host offers for application variables; each is used only
    /// if the manifest declares a variable of that name.
    pub variables: HashMap<String, String>,
    pub limits: Limits,
    /// Services answered in-process, keyed by `host:port` authority.
    pub in_process: HashMap<String, Arc<dyn InProcessService>>,
    /// The sidecar's authorities (its calls are measured as the sidecar hop,
    /// bounded by its deadline and failed over between them).
    pub sidecar: SidecarRoute,
    /// Route by method from the manifest's tool tables (`method_routes`);
    /// off, every request goes to its path's component, as under Spin.
    pub route_by_method: bool,
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
    pub(crate) method_routes: MethodRoutes,
    pub limits: Limits,
    pub(crate) slots: Slots,
    in_process: HashMap<String, Arc<dyn InProcessService>>,
    sidecar: SidecarHop,
    http_client: PooledHttpClient,
    pub metrics: RunnerMetrics,
    /// What `/.well-known/spin/info` reports.
    pub app_info: AppInfo,
}

/// `spin-client-addr` of a service-chained request: Spin's
/// `CHAINED_CLIENT_ADDR` (`crates/trigger-http/src/outbound_http.rs`).
const CHAINED_CLIENT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Why a request got no response from its component.
#[derive(Debug)]
pub enum ServeError {
    /// The request cannot be given to a component as it is (400).
    BadRequest(String),
    /// No instance could be made: the pool is full or memory ran out (503).
    Instantiation(anyhow::Error),
    /// The runner stopped the instance at one of its bounds (503/504).
    Stopped(StopReason),
    /// A streaming response found every stream slot taken (503).
    StreamsFull,
    /// The component trapped, or set no response or an error code: its bug (500).
    Failed(anyhow::Error),
}

/// How an instance's task ended.
enum InstanceEnd {
    Returned,
    NotInstantiated(anyhow::Error),
    Trapped(anyhow::Error),
}

/// What an instance's task owns. Fields drop in order: the store (and with
/// it the pooled instance) goes before the slot that lets another request in.
struct Lease {
    store: Store<RequestState>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl AppShared {
    pub fn load(config: AppConfig, metrics: RunnerMetrics) -> Result<Arc<Self>> {
        config.limits.check()?;
        let manifest = Manifest::load(&config.manifest_path)?;
        let manifest_dir = config.manifest_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        // What the host offers (the sidecar's address, the link secret…)
        // reaches only applications that declare it; a test app need not.
        let offered: HashMap<String, String> =
            config.variables.iter().filter(|(name, _)| manifest.variables.contains_key(*name)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let app_variables = AppVariables::resolve(&manifest.variables, &offered, |name| std::env::var(name).ok())?;
        let (router, duplicates) = Router::build(&manifest.trigger.http)?;
        // The tables are checked even when unused, so a mistake shows at once.
        let method_routes = MethodRoutes::build(&manifest)?;
        let method_routes = if config.route_by_method { method_routes } else { MethodRoutes::default() };
        for duplicate in duplicates {
            tracing::warn!(route = %duplicate.route, replaced = %duplicate.replaced_component,
                effective = %duplicate.effective_component, "duplicate route: only the later component is used");
        }

        // One caller and one chained callee per request slot.
        let engine = new_engine(config.limits.max_instances * 2, config.limits.instance_memory_bytes)?;
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
        let metrics = metrics.for_components(components.iter().map(|component| component.id.as_str()));
        Ok(Arc::new(Self {
            components,
            by_id,
            router,
            method_routes,
            slots: Slots::new(
                config.limits.max_instances,
                config.limits.max_streams,
                config.limits.queue_timeout,
                metrics.open_streams.clone(),
            ),
            limits: config.limits,
            in_process: config.in_process,
            sidecar: SidecarHop::new(config.sidecar),
            http_client: PooledHttpClient::default(),
            metrics,
            app_info: AppInfo { name: manifest.application.name.clone(), version: manifest.application.version.clone() },
        }))
    }

    /// Waits for a slot for one incoming request, up to the queue timeout.
    /// Only requests from clients take slots: a chained call runs inside its
    /// caller's slot (the pool holds two instances per slot), so callers
    /// waiting for their callees can never hold every slot and deadlock.
    pub async fn request_slot(&self) -> Result<OwnedSemaphorePermit, crate::slots::SlotRefused> {
        self.slots.instance().await
    }

    pub fn component_id(&self, name: &str) -> Option<ComponentId> {
        self.by_id.get(name).copied()
    }

    pub fn component_name(&self, component: ComponentId) -> &str {
        &self.components[component].id
    }

    /// Runs `request` on a fresh instance of `component`. The request's
    /// body must already be within the limit; its headers get Spin's.
    /// `slot` is the client's instance slot (`None` for a chained call): it
    /// is held until the instance is gone, and a client's streaming answer
    /// also takes a stream slot until its body ends.
    pub async fn serve_component(
        self: &Arc<Self>,
        component: ComponentId,
        route: &RouteMatch,
        mut request: http::Request<WasiBody>,
        client_addr: SocketAddr,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<http::Response<HyperOutgoingBody>, ServeError> {
        set_spin_headers(&mut request, route, client_addr);
        let from_client = slot.is_some();
        let budget = InstanceBudget::new(self.limits.request_cpu, self.limits.instance_memory_bytes);
        let mut store = Store::new(self.components[component].pre.engine(), RequestState::new(self.clone(), component, budget.clone()));
        store.limiter(RequestState::limiter);
        budget.arm(&mut store);
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| ServeError::BadRequest(format!("{e:#}")))?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam = store.data_mut().http().new_response_outparam(sender).map_err(|e| ServeError::Failed(anyhow!("{e:?}")))?;

        let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
        let mut task = tokio::spawn(self.clone().run_instance(component, Lease { store, _slot: slot }, incoming, outparam, budget.clone()));
        let guard = InstanceGuard::new(task.abort_handle());
        let head = match tokio::time::timeout_at(deadline, receiver).await {
            Err(_) => {
                budget.mark(StopReason::Deadline);
                let reason = budget.stopped().unwrap_or(StopReason::Deadline);
                self.metrics.observe_stopped(component, reason);
                return Err(ServeError::Stopped(reason));
            }
            Ok(Ok(Ok(response))) => response,
            Ok(Ok(Err(code))) => {
                return Err(ServeError::Failed(anyhow!("component {} answered with error {code:?}", self.component_name(component))));
            }
            // No response will come: the task's end says why.
            Ok(Err(_)) => {
                let end = tokio::time::timeout_at(deadline, &mut task).await;
                return Err(match end {
                    Ok(Ok(InstanceEnd::NotInstantiated(error))) => ServeError::Instantiation(error),
                    Ok(Ok(InstanceEnd::Trapped(error))) => match budget.stopped() {
                        Some(reason) => ServeError::Stopped(reason),
                        None => ServeError::Failed(error),
                    },
                    Ok(Ok(InstanceEnd::Returned)) => ServeError::Failed(anyhow!("component {} set no response", self.component_name(component))),
                    Ok(Err(join)) => ServeError::Failed(anyhow!("component task failed: {join}")),
                    Err(_) => ServeError::Failed(anyhow!("component {} dropped its response and kept running", self.component_name(component))),
                });
            }
        };

        let event_stream = is_event_stream(&head);
        let (parts, body) = head.into_parts();
        if !from_client {
            // A chained call: its caller reads the body within its own bounds.
            let body = HeldBody::new(VecDeque::new(), body, guard, None, None, false).boxed();
            return Ok(http::Response::from_parts(parts, body));
        }
        match shape_of(body, event_stream).await {
            Ok(Shape::Whole { bytes, length_known }) => {
                guard.release();
                Ok(http::Response::from_parts(parts, whole_body(bytes, length_known)))
            }
            Ok(Shape::Stream { read, rest, event_stream }) => {
                let Some(stream_slot) = self.slots.stream() else {
                    self.metrics.observe_shed(ShedReason::Streams);
                    return Err(ServeError::StreamsFull);
                };
                let lifetime = Some(self.limits.stream_timeout);
                let body = HeldBody::new(read, rest, guard, Some(stream_slot), lifetime, event_stream).boxed();
                Ok(http::Response::from_parts(parts, body))
            }
            // Nothing was sent yet, so the client still gets a clear answer.
            Err(error) => Err(match budget.stopped() {
                Some(reason) => ServeError::Stopped(reason),
                None => ServeError::Failed(anyhow!("the body of component {} failed: {error}", self.component_name(component))),
            }),
        }
    }

    /// The instance's task: instantiate, handle, and count a stop. Its time
    /// on the thread is metered into the budget; it never outlives the
    /// longest stream, whatever the component waits for.
    async fn run_instance(
        self: Arc<Self>,
        component: ComponentId,
        mut lease: Lease,
        incoming: Resource<HostIncomingRequest>,
        outparam: Resource<HostResponseOutparam>,
        budget: Arc<InstanceBudget>,
    ) -> InstanceEnd {
        let work = async {
            let instantiation_started = Instant::now();
            let proxy = match self.components[component].pre.instantiate_async(&mut lease.store).await {
                Ok(proxy) => proxy,
                Err(error) => return InstanceEnd::NotInstantiated(anyhow!("{error:?}")),
            };
            self.metrics.observe_instantiation(component, instantiation_started.elapsed());
            match proxy.wasi_http_incoming_handler().call_handle(&mut lease.store, incoming, outparam).await {
                Ok(()) => InstanceEnd::Returned,
                Err(error) => InstanceEnd::Trapped(anyhow!("{error:?}")),
            }
        };
        let end = match tokio::time::timeout(self.limits.stream_timeout, budget.meter(work)).await {
            Ok(end) => end,
            Err(_) => {
                budget.mark(StopReason::Deadline);
                InstanceEnd::Trapped(anyhow!("the instance outlived the longest stream"))
            }
        };
        if let InstanceEnd::Trapped(_) = &end
            && let Some(reason) = budget.stopped()
        {
            self.metrics.observe_stopped(component, reason);
            tracing::warn!(function = %self.component_name(component), reason = reason.label(),
                busy_ms = budget.busy().as_millis() as u64, "instance stopped at a runner bound");
        }
        drop(lease);
        end
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
        let (destination, outcome) = self.clone().dispatch_outbound(request, options).await;
        self.metrics.observe_outbound(component, destination, started.elapsed());
        outcome
    }

    /// Sends an allowed request where it goes; names the destination kind.
    async fn dispatch_outbound(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> (Destination, Result<(http::Response<WasiBody>, IoFuture), HttpError>) {
        let uri = request.uri().clone();
        let host = uri.host().unwrap_or_default();
        let done: IoFuture = Box::new(async { Ok(()) });
        if let Some(target) = host.strip_suffix(".spin.internal") {
            let Some(target) = self.component_id(target) else { return (Destination::Chained, Err(HttpError::DestinationNotFound)) };
            let route = RouteMatch::chained(self.component_name(target), uri.path());
            let mut request = request;
            request.headers_mut().remove(http::header::HOST);
            let response = Box::pin(self.serve_component(target, &route, request, CHAINED_CLIENT_ADDR, None)).await.map_err(|error| match error {
                ServeError::Instantiation(_) | ServeError::StreamsFull => HttpError::DestinationUnavailable,
                ServeError::Stopped(reason) => HttpError::InternalError(Some(format!("stopped: {}", reason.label()))),
                ServeError::BadRequest(message) => HttpError::InternalError(Some(message)),
                ServeError::Failed(error) => HttpError::InternalError(Some(format!("{error:#}"))),
            });
            return (Destination::Chained, response.map(|response| (response, done)));
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if let Some(service) = self.in_process.get(authority) {
            // The same first-byte deadline as the TCP hop: a store stuck
            // behind the sidecar costs the call its store timeout.
            let deadline = self.sidecar.deadline_for(&uri);
            let request = request.map(|body| body.map_err(BoxError::from).boxed_unsync());
            let outcome = match tokio::time::timeout(deadline, service.call(request)).await {
                Ok(response) => Ok((response.map(|body| body.map_err(service_body_error).boxed_unsync()), done)),
                Err(_) => Err(HttpError::ConnectionReadTimeout),
            };
            return (Destination::Sidecar, outcome);
        }
        let to_sidecar = self.sidecar.serves(authority);
        let outcome = match uri.scheme_str() {
            Some("http") if to_sidecar => self.sidecar.send(&self.http_client, request).await,
            Some("http") => {
                let first_byte = options.and_then(|o| o.first_byte_timeout).unwrap_or(NETWORK_FIRST_BYTE);
                self.http_client.send(request, first_byte).await
            }
            _ => wasmtime_wasi_http::default_send_request(request, options)
                .await
                .map(|(response, io)| (response.map(|body| body.boxed_unsync()), Box::new(io) as IoFuture)),
        };
        (if to_sidecar { Destination::Sidecar } else { Destination::Network }, outcome)
    }
}

/// A failed answer body, as the component will read it: the runner's own
/// body errors (its request body cut, say) keep their code.
fn service_body_error(error: BoxError) -> HttpError {
    match error.downcast::<HttpError>() {
        Ok(error) => *error,
        Err(error) => HttpError::InternalError(Some(error.to_string())),
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
