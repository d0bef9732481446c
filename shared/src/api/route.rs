//! Which route a request path names, and which methods each route answers.

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    One {
        service: &'a str,
        key: &'a str,
    },
    Batch {
        service: &'a str,
    },
    Secure {
        service: &'a str,
        key: &'a str,
    },
    Explain {
        service: &'a str,
        key: &'a str,
    },
    History {
        service: &'a str,
        key: &'a str,
    },
    Rollback {
        service: &'a str,
        key: &'a str,
    },
    /// `/v1/layers/global/...` or `/v1/layers/tiers/{tier}/...`.
    Layer {
        layer: LayerName<'a>,
        service: &'a str,
        key: &'a str,
        action: LayerAction,
    },
    Tenant {
        tenant: &'a str,
    },
    /// `/v1/rollouts`: start one.
    Rollouts,
    /// `/v1/rollouts/{id}`.
    Rollout {
        id: &'a str,
    },
    /// `/v1/rollouts/{id}/{pause|resume|abort}`.
    RolloutAction {
        id: &'a str,
        action: &'a str,
    },
}

/// Which shared layer a path names (validated by the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LayerName<'a> {
    Global,
    Tier(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LayerAction {
    Entry,
    History,
    Rollback,
    Guardrail,
}

impl Route<'_> {
    /// The methods the route answers (the `Allow` header of a 405): the
    /// write routes' only while writes are on (`ADMIN_GROUP` set). Empty for
    /// a route that answers nothing then, as RFC 9110 allows for a resource
    /// disabled by configuration.
    pub(super) fn methods(&self, writes: bool) -> &'static str {
        match (self, writes) {
            (Route::One { .. }, true) => "GET, PUT, DELETE",
            (
                Route::One { .. }
                | Route::Batch { .. }
                | Route::Secure { .. }
                | Route::Explain { .. },
                _,
            ) => "GET",
            (Route::History { .. }, true) => "GET",
            (Route::Rollback { .. }, true) => "POST",
            (Route::History { .. } | Route::Rollback { .. }, false) => "",
            (Route::Layer { .. } | Route::Tenant { .. }, false) => "",
            (
                Route::Layer {
                    action: LayerAction::Entry,
                    ..
                },
                true,
            ) => "PUT, DELETE",
            (
                Route::Layer {
                    action: LayerAction::History,
                    ..
                },
                true,
            ) => "GET",
            (
                Route::Layer {
                    action: LayerAction::Rollback,
                    ..
                },
                true,
            ) => "POST",
            (
                Route::Layer {
                    action: LayerAction::Guardrail,
                    ..
                },
                true,
            ) => "GET, PUT, DELETE",
            (Route::Tenant { .. }, true) => "GET, PUT",
            (Route::Rollouts | Route::Rollout { .. } | Route::RolloutAction { .. }, false) => "",
            (Route::Rollouts | Route::RolloutAction { .. }, true) => "POST",
            (Route::Rollout { .. }, true) => "GET",
        }
    }
}

/// Every method and path the API answers, as API Gateway's resources name
/// them (`{name}` a path parameter): the template must give config-api an
/// event for each, or API Gateway refuses the route before the function
/// sees it (checked in both directions by the template test).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/config/{service}/{key}"),
    ("PUT", "/v1/config/{service}/{key}"),
    ("DELETE", "/v1/config/{service}/{key}"),
    ("GET", "/v1/config/{service}"),
    ("GET", "/v1/secure/{service}/{key}"),
    ("GET", "/v1/explain/{service}/{key}"),
    ("GET", "/v1/config/{service}/{key}/history"),
    ("POST", "/v1/config/{service}/{key}/rollback"),
    ("PUT", "/v1/layers/global/{service}/{key}"),
    ("DELETE", "/v1/layers/global/{service}/{key}"),
    ("GET", "/v1/layers/global/{service}/{key}/history"),
    ("POST", "/v1/layers/global/{service}/{key}/rollback"),
    ("GET", "/v1/layers/global/{service}/{key}/guardrail"),
    ("PUT", "/v1/layers/global/{service}/{key}/guardrail"),
    ("DELETE", "/v1/layers/global/{service}/{key}/guardrail"),
    ("PUT", "/v1/layers/tiers/{tier}/{service}/{key}"),
    ("DELETE", "/v1/layers/tiers/{tier}/{service}/{key}"),
    ("GET", "/v1/layers/tiers/{tier}/{service}/{key}/history"),
    ("POST", "/v1/layers/tiers/{tier}/{service}/{key}/rollback"),
    ("GET", "/v1/layers/tiers/{tier}/{service}/{key}/guardrail"),
    ("PUT", "/v1/layers/tiers/{tier}/{service}/{key}/guardrail"),
    (
        "DELETE",
        "/v1/layers/tiers/{tier}/{service}/{key}/guardrail",
    ),
    ("GET", "/v1/tenants/{tenant}"),
    ("PUT", "/v1/tenants/{tenant}"),
    ("POST", "/v1/rollouts"),
    ("GET", "/v1/rollouts/{id}"),
    ("POST", "/v1/rollouts/{id}/{action}"),
    // crate::ofrep::ROUTES
    (
        "POST",
        "/v1/services/{service}/ofrep/v1/evaluate/flags/{key}",
    ),
    ("POST", "/v1/services/{service}/ofrep/v1/evaluate/flags"),
    ("GET", "/v1/services/{service}/ofrep/v1/configuration"),
];

/// A path's segments from `v1` on: a leading stage segment (`/prod/v1/...`,
/// as API Gateway passes it on some integrations) is dropped.
pub(crate) fn segments(path: &str) -> Vec<&str> {
    let mut segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.first() != Some(&"v1") && segments.get(1) == Some(&"v1") {
        segments.remove(0);
    }
    segments
}

/// Matches a path. A leading stage segment (`/prod/v1/...`, as API Gateway
/// passes it on some integrations) is tolerated.
pub(super) fn route(path: &str) -> Option<Route<'_>> {
    match segments(path).as_slice() {
        ["v1", "config", service, key] => Some(Route::One { service, key }),
        ["v1", "config", service] => Some(Route::Batch { service }),
        ["v1", "secure", service, key] => Some(Route::Secure { service, key }),
        ["v1", "explain", service, key] => Some(Route::Explain { service, key }),
        ["v1", "config", service, key, "history"] => Some(Route::History { service, key }),
        ["v1", "config", service, key, "rollback"] => Some(Route::Rollback { service, key }),
        ["v1", "tenants", tenant] => Some(Route::Tenant { tenant }),
        ["v1", "rollouts"] => Some(Route::Rollouts),
        ["v1", "rollouts", id] => Some(Route::Rollout { id }),
        [
            "v1",
            "rollouts",
            id,
            action @ ("pause" | "resume" | "abort"),
        ] => Some(Route::RolloutAction { id, action }),
        ["v1", "layers", "global", rest @ ..] => layer_route(LayerName::Global, rest),
        ["v1", "layers", "tiers", tier, rest @ ..] => layer_route(LayerName::Tier(tier), rest),
        _ => None,
    }
}

/// `{service}/{key}`, then nothing, `history`, `rollback` or `guardrail`.
fn layer_route<'a>(layer: LayerName<'a>, rest: &[&'a str]) -> Option<Route<'a>> {
    let (service, key, action) = match rest {
        [service, key] => (*service, *key, LayerAction::Entry),
        [service, key, "history"] => (*service, *key, LayerAction::History),
        [service, key, "rollback"] => (*service, *key, LayerAction::Rollback),
        [service, key, "guardrail"] => (*service, *key, LayerAction::Guardrail),
        _ => return None,
    };
    Some(Route::Layer {
        layer,
        service,
        key,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_405_allows_the_write_methods_only_while_writes_are_on() {
        let one = route("/v1/config/billing/tenant_config_x").unwrap();
        assert_eq!(one.methods(true), "GET, PUT, DELETE");
        assert_eq!(one.methods(false), "GET");
        let history = route("/v1/config/billing/tenant_config_x/history").unwrap();
        assert_eq!(history.methods(true), "GET");
        assert_eq!(history.methods(false), "");
        let rollback = route("/v1/config/billing/tenant_config_x/rollback").unwrap();
        assert_eq!(rollback.methods(false), "");
        assert_eq!(route("/v1/config/billing").unwrap().methods(false), "GET");
    }

    #[test]
    fn every_listed_route_is_answered_with_its_method() {
        for (method, path) in ROUTES {
            let concrete = path
                .replace("{action}", "pause")
                .replace("{service}", "billing")
                .replace("{key}", "tenant_config_x")
                .replace("{tier}", "gold")
                .replace("{tenant}", "tenant-a")
                .replace("{id}", "r-1");
            // The OFREP routes are answered by crate::ofrep (checked there).
            if crate::ofrep::route(&concrete).is_some() {
                continue;
            }
            let route = route(&concrete).unwrap_or_else(|| panic!("{path} routes nowhere"));
            assert!(
                route.methods(true).split(", ").any(|m| m == *method),
                "{method} {path}: the route answers {}",
                route.methods(true)
            );
        }
    }

    #[test]
    fn the_platform_routes_match_their_paths_only() {
        assert_eq!(
            route("/v1/layers/tiers/gold/billing/tenant_config_x/rollback"),
            Some(Route::Layer {
                layer: LayerName::Tier("gold"),
                service: "billing",
                key: "tenant_config_x",
                action: LayerAction::Rollback
            })
        );
        assert_eq!(
            route("/v1/layers/global/billing/tenant_config_x")
                .unwrap()
                .methods(true),
            "PUT, DELETE"
        );
        assert_eq!(
            route("/v1/layers/tiers/free/billing/tenant_config_x/guardrail")
                .unwrap()
                .methods(true),
            "GET, PUT, DELETE"
        );
        assert_eq!(
            route("/v1/tenants/tenant-a"),
            Some(Route::Tenant { tenant: "tenant-a" })
        );
        assert_eq!(route("/v1/rollouts").unwrap().methods(true), "POST");
        assert_eq!(
            route("/prod/v1/rollouts/r-1/abort"),
            Some(Route::RolloutAction {
                id: "r-1",
                action: "abort"
            })
        );
        assert_eq!(route("/v1/rollouts/r-1").unwrap().methods(true), "GET");
        assert_eq!(route("/v1/rollouts/r-1").unwrap().methods(false), "");
        for unknown in [
            "/v1/layers/global/billing",
            "/v1/layers/tiers/gold/billing",
            "/v1/layers/other/billing/tenant_config_x",
            "/v1/layers/global/billing/tenant_config_x/undo",
            "/v1/tenants",
            "/v1/tenants/a/b",
            "/v1/rollouts/r-1/undo",
            "/v1/rollouts/r-1/pause/now",
        ] {
            assert_eq!(route(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn routes_match_the_documented_paths() {
        assert_eq!(
            route("/v1/config/billing/tenant_config_x"),
            Some(Route::One {
                service: "billing",
                key: "tenant_config_x"
            })
        );
        assert_eq!(
            route("/v1/config/billing"),
            Some(Route::Batch { service: "billing" })
        );
        assert_eq!(
            route("/v1/config/billing/"),
            Some(Route::Batch { service: "billing" })
        );
        assert_eq!(
            route("/prod/v1/secure/billing/param_config_pw"),
            Some(Route::Secure {
                service: "billing",
                key: "param_config_pw"
            })
        );
        for unknown in [
            "/",
            "/v1",
            "/v1/config",
            "/v2/config/a/b",
            "/v1/config/a/b/c",
            "/v1/secure/a",
        ] {
            assert_eq!(route(unknown), None, "{unknown}");
        }
    }
}
