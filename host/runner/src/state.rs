//! What one request's `Store` holds: WASI and wasi:http contexts, the
//! component's variables, and the outbound hooks that enforce its
//! allow-list and route its calls (service chaining, in-process services).

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::app::{AppShared, ComponentId};
use crate::budget::{InstanceBudget, MemoryLimiter};
use crate::client::IoFuture;

pub mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package orders:runner;
            world spin-host {
                import fermyon:spin/variables@2.0.0;
            }
        ",
        path: "wit",
        imports: { default: async },
    });
}

use bindings::fermyon::spin::variables;

pub struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    variables: Arc<HashMap<String, String>>,
    limiter: MemoryLimiter,
}

impl RequestState {
    pub fn new(shared: Arc<AppShared>, component: ComponentId, budget: Arc<InstanceBudget>) -> Self {
        let spec = &shared.components[component];
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr().envs(&spec.environment);
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            variables: spec.variables.clone(),
            hooks: OutboundHooks { shared, component },
            limiter: MemoryLimiter { budget },
        }
    }

    /// The store's resource limiter (`Store::limiter`).
    pub fn limiter(&mut self) -> &mut dyn wasmtime::ResourceLimiter {
        &mut self.limiter
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl variables::Host for RequestState {
    async fn get(&mut self, name: String) -> Result<String, variables::Error> {
        if crate::variables::check_name(&name).is_err() {
            return Err(variables::Error::InvalidName(name));
        }
        self.variables.get(&name).cloned().ok_or(variables::Error::Undefined(name))
    }
}

/// Routes a component's outgoing requests (see `AppShared::send_outbound`).
pub struct OutboundHooks {
    shared: Arc<AppShared>,
    component: ComponentId,
}


impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoFuture,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<(http::Response<wasmtime_wasi_http::WasiBody>, IoFuture), wasmtime_wasi_http::Error>,
            > + Send,
    > {
        let shared = self.shared.clone();
        let component = self.component;
        Box::new(async move { shared.send_outbound(component, request, options).await })
    }
}
