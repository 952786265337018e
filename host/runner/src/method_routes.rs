//! Routing by method, the runner's own: Spin routes by path only, so the
//! manifest gives `/orders` and `/orders/:id` to a router component that
//! hands each method on to its endpoint component by service chaining — two
//! instances, and the request crossing the guest boundary four times. A
//! component may say in a tool table (Spin ignores `tool` tables) which
//! route and methods it serves:
//!
//! ```toml
//! [component.orders-get.tool.orders-runner]
//! route = "/orders/:id"
//! methods = ["GET"]
//! ```
//!
//! and the runner then sends those requests straight to it, after routing
//! the path exactly as Spin does. What no table covers (another method, a
//! route without tables) still goes to the route's own component, so the
//! router keeps answering the rest (405 with `Allow`), and the manifest runs
//! unchanged on Spin.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use http::Method;
use serde::Deserialize;

use crate::manifest::{Manifest, RouteDecl};

/// The name of the runner's tool table under `[component.<id>.tool]`.
pub const TOOL: &str = "orders-runner";

/// One component's table: the trigger route it serves and for which methods.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodRouteDecl {
    route: String,
    methods: Vec<String>,
}

/// For each trigger route (as written) with tables, the component of each method.
#[derive(Debug, Clone, Default)]
pub struct MethodRoutes {
    by_route: HashMap<String, Vec<(Method, String)>>,
}

impl MethodRoutes {
    /// The tables of every component, checked: each names a route some
    /// trigger declares, methods that parse, and no route and method twice.
    pub fn build(manifest: &Manifest) -> Result<Self> {
        let mut by_route: HashMap<String, Vec<(Method, String)>> = HashMap::new();
        for (component, decl) in &manifest.component {
            let Some(table) = decl.tool.get(TOOL) else {
                continue;
            };
            let table: MethodRouteDecl =
                table.clone().try_into().with_context(|| format!("[component.{component}.tool.{TOOL}] needs `route` and `methods`"))?;
            let declared = manifest.trigger.http.iter().any(|t| matches!(&t.route, RouteDecl::Pattern(route) if *route == table.route));
            if !declared {
                bail!("[component.{component}.tool.{TOOL}]: no HTTP trigger has the route {:?}", table.route);
            }
            if table.methods.is_empty() {
                bail!("[component.{component}.tool.{TOOL}]: `methods` is empty");
            }
            let served = by_route.entry(table.route.clone()).or_default();
            for method in &table.methods {
                let parsed = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .with_context(|| format!("[component.{component}.tool.{TOOL}]: {method:?} is not an HTTP method"))?;
                if let Some((_, other)) = served.iter().find(|(m, _)| *m == parsed) {
                    bail!("{parsed} {} is claimed by both {other:?} and {component:?}", table.route);
                }
                served.push((parsed, component.clone()));
            }
        }
        Ok(Self { by_route })
    }

    /// The component serving `method` on the trigger route `raw_route`, if a table says so.
    pub fn target(&self, raw_route: &str, method: &Method) -> Option<&str> {
        let served = self.by_route.get(raw_route)?;
        served.iter().find(|(m, _)| m == method).map(|(_, component)| component.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.by_route.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(components: &str) -> Manifest {
        let text = format!(
            r#"spin_manifest_version = 2
[application]
name = "t"
[[trigger.http]]
route = "/orders/:id"
component = "router"
[[trigger.http]]
route = {{ private = true }}
component = "get"
[[trigger.http]]
route = {{ private = true }}
component = "put"
[component.router]
source = "router.wasm"
{components}"#
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn a_table_routes_its_methods_and_nothing_else() {
        let routes = MethodRoutes::build(&manifest(
            r#"[component.get]
source = "get.wasm"
[component.get.tool.orders-runner]
route = "/orders/:id"
methods = ["GET", "head"]
[component.put]
source = "put.wasm"
[component.put.tool.orders-runner]
route = "/orders/:id"
methods = ["PUT"]
[component.put.tool.another-tool]
anything = 1"#,
        ))
        .unwrap();
        assert_eq!(routes.target("/orders/:id", &Method::GET), Some("get"));
        assert_eq!(routes.target("/orders/:id", &Method::HEAD), Some("get"));
        assert_eq!(routes.target("/orders/:id", &Method::PUT), Some("put"));
        assert_eq!(routes.target("/orders/:id", &Method::DELETE), None, "left to the route's own component");
        assert_eq!(routes.target("/orders", &Method::GET), None);
    }

    #[test]
    fn a_route_no_trigger_declares_is_refused() {
        let error = MethodRoutes::build(&manifest(
            "[component.get]\nsource = \"get.wasm\"\n[component.get.tool.orders-runner]\nroute = \"/order/:id\"\nmethods = [\"GET\"]",
        ))
        .unwrap_err();
        assert!(format!("{error:#}").contains("no HTTP trigger has the route \"/order/:id\""), "{error:#}");
    }

    #[test]
    fn a_method_claimed_twice_is_refused() {
        let error = MethodRoutes::build(&manifest(
            r#"[component.get]
source = "get.wasm"
[component.get.tool.orders-runner]
route = "/orders/:id"
methods = ["GET"]
[component.put]
source = "put.wasm"
[component.put.tool.orders-runner]
route = "/orders/:id"
methods = ["get"]"#,
        ))
        .unwrap_err();
        assert!(format!("{error:#}").contains("claimed by both"), "{error:#}");
    }

    #[test]
    fn a_malformed_table_is_refused_with_its_name() {
        let error = MethodRoutes::build(&manifest(
            "[component.get]\nsource = \"get.wasm\"\n[component.get.tool.orders-runner]\nroute = \"/orders/:id\"\nmethod = \"GET\"",
        ))
        .unwrap_err();
        assert!(format!("{error:#}").contains("[component.get.tool.orders-runner]"), "{error:#}");
    }
}
