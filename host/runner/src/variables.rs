//! Spin variables: application variables (declared with a default or as
//! required) resolved from explicit values, then `SPIN_VARIABLE_<NAME>`
//! environment variables, then defaults; component variables are templates
//! over them (`"{{ sidecar_url }}/v1"`). Everything is resolved once at start,
//! so a missing required variable stops the runner before it serves.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};

use crate::manifest::VariableDecl;

/// Application variable values, resolved.
#[derive(Debug, Clone, Default)]
pub struct AppVariables {
    values: HashMap<String, String>,
}

impl AppVariables {
    /// `overrides` win over the environment, which wins over defaults.
    pub fn resolve(
        declared: &BTreeMap<String, VariableDecl>,
        overrides: &HashMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        for name in overrides.keys() {
            if !declared.contains_key(name) {
                bail!("variable {name:?} is not declared in the manifest's [variables]");
            }
        }
        let mut values = HashMap::new();
        for (name, decl) in declared {
            check_name(name)?;
            let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
            let value = overrides.get(name).cloned().or_else(|| env(&env_name)).or_else(|| decl.default.clone());
            match value {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None if decl.required => {
                    bail!("required variable {name:?} has no value: set {env_name} or pass it explicitly")
                }
                None => {}
            }
        }
        Ok(Self { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Expands `{{ name }}` references in `template`.
    pub fn render(&self, template: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find("}}") else {
                bail!("unterminated {{{{ in {template:?}");
            };
            let name = rest[start + 2..start + end].trim();
            match self.get(name) {
                Some(value) => out.push_str(value),
                None => bail!("{template:?} refers to variable {name:?}, which has no value"),
            }
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Spin's rule for variable names: lowercase ASCII letters, digits and
/// underscores, starting with a letter.
pub fn check_name(name: &str) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!("invalid variable name {name:?}: use lowercase letters, digits and underscores");
    }
    Ok(())
}

/// A component's own variables, rendered from its templates.
pub fn component_variables(
    app: &AppVariables,
    templates: &BTreeMap<String, String>,
) -> Result<HashMap<String, String>> {
    templates
        .iter()
        .map(|(name, template)| {
            check_name(name)?;
            Ok((name.clone(), app.render(template)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> BTreeMap<String, VariableDecl> {
        let mut map = BTreeMap::new();
        map.insert("url".into(), VariableDecl { default: Some("http://d".into()), required: false, secret: false });
        map.insert("token".into(), VariableDecl { default: None, required: true, secret: true });
        map
    }

    #[test]
    fn explicit_beats_environment_beats_default() {
        let env = |name: &str| (name == "SPIN_VARIABLE_URL").then(|| "http://env".to_owned());
        let token = HashMap::from([("token".to_owned(), "t".to_owned())]);
        let vars = AppVariables::resolve(&declared(), &token, env).unwrap();
        assert_eq!(vars.get("url"), Some("http://env"));
        let explicit = HashMap::from([("token".into(), "t".into()), ("url".into(), "http://x".into())]);
        let vars = AppVariables::resolve(&declared(), &explicit, env).unwrap();
        assert_eq!(vars.get("url"), Some("http://x"));
    }

    #[test]
    fn missing_required_variable_names_the_environment_variable() {
        let error = AppVariables::resolve(&declared(), &HashMap::new(), |_| None).unwrap_err();
        assert!(error.to_string().contains("SPIN_VARIABLE_TOKEN"), "{error}");
    }

    #[test]
    fn undeclared_override_is_an_error() {
        let extra = HashMap::from([("nope".to_owned(), "1".to_owned())]);
        assert!(AppVariables::resolve(&declared(), &extra, |_| None).is_err());
    }

    #[test]
    fn templates_expand_and_fail_on_unknown_names() {
        let token = HashMap::from([("token".to_owned(), "t".to_owned())]);
        let vars = AppVariables::resolve(&declared(), &token, |_| None).unwrap();
        assert_eq!(vars.render("{{ url }}/v1?k={{token}}").unwrap(), "http://d/v1?k=t");
        assert!(vars.render("{{ missing }}").is_err());
    }

    #[test]
    fn names_follow_spin_rules() {
        assert!(check_name("sidecar_url").is_ok());
        for bad in ["Sidecar", "1x", "a-b", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
