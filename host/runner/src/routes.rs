//! Spin's HTTP routing, reproduced where a component can tell the
//! difference: exact segments, `:name` captures, a trailing `/...` (or
//! `/*`) wildcard, private routes left out, a later duplicate of the same
//! written route replacing an earlier one, and the most specific route
//! winning (exact beats a capture, a capture beats a wildcard, the longest
//! wildcard prefix wins). Spin's rules are in `crates/routes/src/lib.rs`
//! of `spinframework/spin`.

use std::cmp::Ordering;

use anyhow::{Result, bail};

use crate::manifest::{HttpTrigger, RouteDecl};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
}

#[derive(Debug, Clone)]
struct Route {
    component_id: String,
    /// The route as written in the manifest.
    raw: String,
    /// The route Spin matches on (`sanitize_with_base` with base `/`): made
    /// absolute, one trailing `/` dropped, so `/` becomes the empty string.
    based: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

/// The outcome of routing one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub component_id: String,
    /// The route as written in the manifest (`spin-raw-component-route`).
    pub raw_route: String,
    /// The route as Spin matched it (`spin-matched-route`).
    pub based_route: String,
    /// The path after a wildcard route's prefix (`spin-path-info`).
    pub path_info: String,
    /// `:name` captures (`spin-path-match-<name>`).
    pub captures: Vec<(String, String)>,
}

impl RouteMatch {
    /// The written route without a trailing `/...` (`spin-component-route`;
    /// Spin's `raw_route_or_prefix` leaves a `/*` in place).
    pub fn component_route(&self) -> &str {
        self.raw_route.strip_suffix("/...").unwrap_or(&self.raw_route)
    }

    /// The match Spin synthesises for a service-chained request: the whole
    /// path is path info under a `/...` route.
    pub fn chained(component_id: &str, path: &str) -> Self {
        Self {
            component_id: component_id.to_owned(),
            raw_route: "/...".to_owned(),
            based_route: "/...".to_owned(),
            path_info: path.to_owned(),
            captures: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// A route that a later trigger replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateRoute {
    pub route: String,
    pub replaced_component: String,
    pub effective_component: String,
}

impl Router {
    pub fn build(triggers: &[HttpTrigger]) -> Result<(Self, Vec<DuplicateRoute>)> {
        let mut routes: Vec<Route> = Vec::new();
        let mut duplicates = Vec::new();
        for trigger in triggers {
            let RouteDecl::Pattern(raw) = &trigger.route else { continue };
            let route = parse_route(raw, &trigger.component)?;
            match routes.iter_mut().find(|existing| existing.raw == route.raw) {
                Some(existing) => {
                    duplicates.push(DuplicateRoute {
                        route: raw.clone(),
                        replaced_component: existing.component_id.clone(),
                        effective_component: route.component_id.clone(),
                    });
                    *existing = route;
                }
                None => routes.push(route),
            }
        }
        Ok((Self { routes }, duplicates))
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let path_segments: Vec<&str> = split_path(path);
        self.routes
            .iter()
            .filter_map(|route| route.matches(&path_segments, path).map(|m| (route, m)))
            .max_by(|(a, _), (b, _)| a.specificity_cmp(b))
            .map(|(_, found)| found)
    }
}

fn split_path(path: &str) -> Vec<&str> {
    path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect()
}

fn parse_route(raw: &str, component_id: &str) -> Result<Route> {
    let absolute = if raw.starts_with('/') { raw.to_owned() } else { format!("/{raw}") };
    let based = absolute.strip_suffix('/').unwrap_or(&absolute).to_owned();
    let (prefix, wildcard) = match absolute.strip_suffix("/...").or_else(|| absolute.strip_suffix("/*")) {
        Some(prefix) => (prefix.to_owned(), true),
        None => (absolute.trim_end_matches('/').to_owned(), false),
    };
    let mut segments = Vec::new();
    for segment in split_path(&prefix) {
        if segment.contains("...") || segment.contains('*') {
            bail!("route {raw:?} of component {component_id:?}: a wildcard may only end a route, as /...");
        }
        segments.push(match segment.strip_prefix(':') {
            Some("") => bail!("route {raw:?} of component {component_id:?}: a capture needs a name"),
            Some(name) => Segment::Capture(name.to_owned()),
            None => Segment::Literal(segment.to_owned()),
        });
    }
    Ok(Route { component_id: component_id.to_owned(), raw: raw.to_owned(), based, segments, wildcard })
}

impl Route {
    fn matches(&self, path_segments: &[&str], path: &str) -> Option<RouteMatch> {
        let fixed = self.segments.len();
        if path_segments.len() < fixed || (!self.wildcard && path_segments.len() != fixed) {
            return None;
        }
        let mut captures = Vec::new();
        for (segment, actual) in self.segments.iter().zip(path_segments) {
            match segment {
                Segment::Literal(literal) if literal == actual => {}
                Segment::Literal(_) => return None,
                Segment::Capture(name) => captures.push((name.clone(), (*actual).to_owned())),
            }
        }
        let path_info = if self.wildcard {
            let rest = path_segments[fixed..].join("/");
            match (rest.is_empty(), path.ends_with('/') && path != "/") {
                (true, false) => String::new(),
                (true, true) => "/".to_owned(),
                (false, false) => format!("/{rest}"),
                (false, true) => format!("/{rest}/"),
            }
        } else {
            String::new()
        };
        Some(RouteMatch {
            component_id: self.component_id.clone(),
            raw_route: self.raw.clone(),
            based_route: self.based.clone(),
            path_info,
            captures,
        })
    }

    /// Segment by segment, a literal beats a capture, and any segment beats
    /// running out into a wildcard; an exact route beats a wildcard one.
    fn specificity_cmp(&self, other: &Route) -> Ordering {
        fn rank(segment: &Segment) -> u8 {
            match segment {
                Segment::Literal(_) => 2,
                Segment::Capture(_) => 1,
            }
        }
        let mine: Vec<u8> = self.segments.iter().map(rank).collect();
        let theirs: Vec<u8> = other.segments.iter().map(rank).collect();
        for (a, b) in mine.iter().zip(&theirs) {
            match a.cmp(b) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        mine.len().cmp(&theirs.len()).then_with(|| other.wildcard.cmp(&self.wildcard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        let triggers: Vec<HttpTrigger> = routes
            .iter()
            .map(|(route, component)| HttpTrigger {
                route: RouteDecl::Pattern((*route).to_owned()),
                component: (*component).to_owned(),
            })
            .collect();
        Router::build(&triggers).unwrap().0
    }

    fn component(router: &Router, path: &str) -> Option<String> {
        router.route(path).map(|m| m.component_id)
    }

    #[test]
    fn exact_routes_match_only_their_path() {
        let r = router(&[("/foo", "foo"), ("/foo/bar", "foobar")]);
        assert_eq!(component(&r, "/foo").as_deref(), Some("foo"));
        assert_eq!(component(&r, "/foo/bar").as_deref(), Some("foobar"));
        assert_eq!(component(&r, "/foo/baz"), None);
    }

    #[test]
    fn catch_all_wildcard_matches_everything() {
        let r = router(&[("/...", "all")]);
        for path in ["/", "/foo/bar", "/abc/"] {
            assert_eq!(component(&r, path).as_deref(), Some("all"), "{path}");
        }
    }

    #[test]
    fn exact_beats_wildcard() {
        let r = router(&[("/...", "wildcard"), ("/one", "one_exact")]);
        assert_eq!(component(&r, "/one").as_deref(), Some("one_exact"));
    }

    #[test]
    fn longest_wildcard_prefix_wins_regardless_of_order() {
        let r = router(&[("/one/two/three/...", "three"), ("/one/...", "one"), ("/one/two/...", "two")]);
        assert_eq!(component(&r, "/one/two/three/four").as_deref(), Some("three"));
        assert_eq!(component(&r, "/one/two").as_deref(), Some("two"));
        assert_eq!(component(&r, "/one/x").as_deref(), Some("one"));
    }

    #[test]
    fn captures_are_named_and_beaten_by_literals() {
        let r = router(&[("/orders/:id", "item"), ("/orders/new", "form"), ("/...", "fallback")]);
        let found = r.route("/orders/65a1").unwrap();
        assert_eq!(found.component_id, "item");
        assert_eq!(found.captures, vec![("id".to_owned(), "65a1".to_owned())]);
        assert_eq!(component(&r, "/orders/new").as_deref(), Some("form"));
        assert_eq!(component(&r, "/orders/a/b").as_deref(), Some("fallback"));
    }

    #[test]
    fn path_info_follows_spin_trailing_slash_rules() {
        let r = router(&[("/foo/...", "foo")]);
        let info = |path: &str| r.route(path).unwrap().path_info;
        assert_eq!(info("/foo"), "");
        assert_eq!(info("/foo/"), "/");
        assert_eq!(info("/foo/bar"), "/bar");
        assert_eq!(info("/foo/bar/"), "/bar/");
    }

    #[test]
    fn component_route_drops_the_wildcard() {
        let r = router(&[("/foo/:user/...", "foo")]);
        let found = r.route("/foo/42/bar").unwrap();
        assert_eq!(found.component_route(), "/foo/:user");
        assert_eq!(found.path_info, "/bar");
    }

    #[test]
    fn later_duplicate_replaces_earlier() {
        let triggers = vec![
            HttpTrigger { route: RouteDecl::Pattern("/a".into()), component: "first".into() },
            HttpTrigger { route: RouteDecl::Pattern("/a".into()), component: "second".into() },
        ];
        let (r, duplicates) = Router::build(&triggers).unwrap();
        assert_eq!(component(&r, "/a").as_deref(), Some("second"));
        assert_eq!(duplicates.len(), 1);
    }

    #[test]
    fn private_routes_are_not_reachable() {
        let triggers = vec![HttpTrigger { route: RouteDecl::Private { private: true }, component: "hidden".into() }];
        let (r, _) = Router::build(&triggers).unwrap();
        assert_eq!(component(&r, "/hidden"), None);
    }

    #[test]
    fn routes_are_reported_as_written_and_as_spin_matched_them() {
        let r = router(&[("/", "root"), ("api/", "api"), ("/files/*", "files"), ("/foo/...", "foo")]);
        let found = |path: &str| r.route(path).unwrap();
        let root = found("/");
        assert_eq!((root.raw_route.as_str(), root.based_route.as_str(), root.component_route()), ("/", "", "/"));
        let api = found("/api");
        assert_eq!((api.raw_route.as_str(), api.based_route.as_str(), api.component_route()), ("api/", "/api", "api/"));
        let files = found("/files/a/b");
        assert_eq!((files.component_id.as_str(), files.path_info.as_str()), ("files", "/a/b"));
        assert_eq!((files.raw_route.as_str(), files.based_route.as_str(), files.component_route()), ("/files/*", "/files/*", "/files/*"));
        let foo = found("/foo/x");
        assert_eq!((foo.raw_route.as_str(), foo.based_route.as_str(), foo.component_route()), ("/foo/...", "/foo/...", "/foo"));
    }

    #[test]
    fn trailing_slash_on_exact_routes_is_ignored() {
        let r = router(&[("/orders", "list")]);
        assert_eq!(component(&r, "/orders/").as_deref(), Some("list"));
    }
}
