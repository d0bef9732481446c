//! `POST /v1/rollouts`, `GET /v1/rollouts/{id}` and `POST
//! /v1/rollouts/{id}/pause|resume|abort`: platform administrators only,
//! never cached.

use serde_json::{Value, json};

use super::responses::json_response;
use super::route::Route;
use super::writes::parse_body;
use super::{ApiRequest, ApiResponse, ConfigApi};
use crate::error::ConfigError;
use crate::rollouts::control::{Action, RolloutControl};
use crate::write::now_ms;

impl ConfigApi {
    pub(super) async fn rollouts(
        &self,
        control: &RolloutControl,
        route: Route<'_>,
        request: &ApiRequest<'_>,
    ) -> Result<ApiResponse, ConfigError> {
        let identity = self.verifier.verify_header(request.authorization).await?;
        match (route, request.method) {
            (Route::Rollouts, "POST") => {
                let body: Value = parse_body(
                    request.body,
                    r#"{"layer", "service", "key", "value", "steps": [...], "bake_seconds", "alarms": [...]}"#,
                )?;
                let rollout = control.start(&identity, &body, now_ms()).await?;
                let mut response = json_response(201, "no-store", &rollout.to_json());
                response
                    .headers
                    .push(("location", format!("/v1/rollouts/{}", rollout.id)));
                Ok(response)
            }
            (Route::Rollout { id }, "GET") => {
                let rollout = control.get(&identity, id).await?;
                let tenants = control.tenants(&rollout).await?;
                let mut body = rollout.to_json();
                body["tenants"] = json!({
                    "new": tenants.new,
                    "previous": tenants.previous,
                    "partial": tenants.partial,
                });
                Ok(json_response(200, "no-store", &body))
            }
            (Route::RolloutAction { id, action }, "POST") => {
                let action = Action::parse(action).ok_or(ConfigError::RouteNotFound)?;
                let rollout = control.act(&identity, id, action, now_ms()).await?;
                Ok(json_response(200, "no-store", &rollout.to_json()))
            }
            _ => Err(ConfigError::MethodNotAllowed),
        }
    }
}
