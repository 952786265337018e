//! The subset of a Spin manifest (version 2) the runner serves: application
//! variables, HTTP triggers, and per-component source, variables,
//! environment and `allowed_outbound_hosts`. Unknown keys are ignored, as
//! Spin ignores keys of triggers and features it does not use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub spin_manifest_version: u32,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// An application variable: a default, or `required = true`.
#[derive(Debug, Clone, Deserialize)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpTrigger {
    pub route: RouteDecl,
    pub component: String,
}

/// A trigger's route: a pattern, or `{ private = true }` for a component
/// reachable only through service chaining.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteDecl {
    Pattern(String),
    Private { private: bool },
}

#[derive(Debug, Clone, Deserialize)]
pub struct ComponentDecl {
    pub source: String,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Tables for tools other than Spin, by tool name (Spin ignores them);
    /// the runner reads its own (`method_routes::TOOL`).
    #[serde(default)]
    pub tool: BTreeMap<String, toml::Value>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the Spin manifest {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid Spin manifest", path.display()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<()> {
        if self.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported, found {}", self.spin_manifest_version);
        }
        for trigger in &self.trigger.http {
            if !self.component.contains_key(&trigger.component) {
                bail!("trigger for route {:?} names unknown component {:?}", trigger.route, trigger.component);
            }
            if let RouteDecl::Private { private: false } = trigger.route {
                bail!("route must be a pattern or {{ private = true }} (component {:?})", trigger.component);
            }
        }
        Ok(())
    }

    /// The component's Wasm file, relative paths taken from the manifest's directory.
    pub fn source_path(manifest_dir: &Path, component: &ComponentDecl) -> PathBuf {
        manifest_dir.join(&component.source)
    }
}
