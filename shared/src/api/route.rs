//! Which route a request path names, and which methods each route answers.

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    One { service: &'a str, key: &'a str },
    Batch { service: &'a str },
    Secure { service: &'a str, key: &'a str },
    History { service: &'a str, key: &'a str },
    Rollback { service: &'a str, key: &'a str },
}

impl Route<'_> {
    /// The methods the route answers (the `Allow` header of a 405): the
    /// write routes' only while writes are on (`ADMIN_GROUP` set). Empty for
    /// a route that answers nothing then, as RFC 9110 allows for a resource
    /// disabled by configuration.
    pub(super) fn methods(&self, writes: bool) -> &'static str {
        match (self, writes) {
            (Route::One { .. }, true) => "GET, PUT, DELETE",
            (Route::One { .. } | Route::Batch { .. } | Route::Secure { .. }, _) => "GET",
            (Route::History { .. }, true) => "GET",
            (Route::Rollback { .. }, true) => "POST",
            (Route::History { .. } | Route::Rollback { .. }, false) => "",
        }
    }
}

/// Matches a path. A leading stage segment (`/prod/v1/...`, as API Gateway
/// passes it on some integrations) is tolerated.
pub(super) fn route(path: &str) -> Option<Route<'_>> {
    let mut segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.first() != Some(&"v1") && segments.get(1) == Some(&"v1") {
        segments.remove(0);
    }
    match segments.as_slice() {
        ["v1", "config", service, key] => Some(Route::One { service, key }),
        ["v1", "config", service] => Some(Route::Batch { service }),
        ["v1", "secure", service, key] => Some(Route::Secure { service, key }),
        ["v1", "config", service, key, "history"] => Some(Route::History { service, key }),
        ["v1", "config", service, key, "rollback"] => Some(Route::Rollback { service, key }),
        _ => None,
    }
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
