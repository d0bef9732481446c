//! `GET /v1/explain/{service}/{key}`: the effective value with where each
//! part of it came from. Never cached (a route of its own, so the stage
//! cache can never answer a plain read with it or the other way round).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::responses::json_response;
use super::{ApiResponse, ConfigApi};
use crate::auth::Identity;
use crate::error::ConfigError;
use crate::grants::Access;
use crate::validate::{ConfigKey, ServiceName};

#[derive(Serialize)]
struct ExplainBody<'a> {
    service: &'a str,
    key: &'a str,
    value: &'a Value,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    /// Every layer holding the key, bottom (global) to top (the tenant's).
    layers: Vec<LayerBody<'a>>,
    /// Each leaf of the value (a JSON pointer, `""` for the whole value)
    /// and the layer that set it.
    leaves: BTreeMap<&'a str, String>,
    /// A live rollout of the key's shared entry: where it stands and which
    /// version this tenant reads (never the staged value of another).
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<RolloutBody<'a>>,
}

#[derive(Serialize)]
struct RolloutBody<'a> {
    id: &'a str,
    layer: String,
    state: &'static str,
    /// The step reached, 0-based, of `steps`.
    step: usize,
    steps: usize,
    version: &'static str,
}

#[derive(Serialize)]
struct LayerBody<'a> {
    layer: String,
    value: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at_ms: Option<i64>,
}

impl ConfigApi {
    pub(super) async fn explain(
        &self,
        identity: &Identity,
        service: &str,
        key: &str,
    ) -> Result<ApiResponse, ConfigError> {
        let tenant = identity.require_tenant()?;
        let (service, key) = (ServiceName::parse(service)?, ConfigKey::parse(key)?);
        self.granted(identity, &service, Access::Plain).await?;
        let explained = self.reads.explain(tenant, &service, &key).await?;
        let body = ExplainBody {
            service: service.as_str(),
            key: key.as_str(),
            value: &explained.entry.value.value,
            source: explained.entry.source.as_str(),
            version: explained.entry.value.version,
            layers: explained
                .layers
                .iter()
                .map(|(layer, value)| LayerBody {
                    layer: layer.to_string(),
                    value: &value.value,
                    version: value.version,
                    updated_by: value.written.actor.as_deref(),
                    updated_at_ms: value.written.at_ms,
                })
                .collect(),
            leaves: explained
                .leaves
                .iter()
                .map(|(pointer, layer)| (pointer.as_str(), layer.to_string()))
                .collect(),
            rollout: explained.rollout.as_ref().map(|applied| {
                let rollout = &applied.live.rollout;
                RolloutBody {
                    id: &rollout.id,
                    layer: rollout.entry.layer.to_string(),
                    state: rollout.progress.state.as_str(),
                    step: rollout.progress.step,
                    steps: rollout.steps.len(),
                    version: applied.version.as_str(),
                }
            }),
        };
        Ok(json_response(200, "no-store", &body))
    }
}
