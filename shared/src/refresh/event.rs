//! "Parameter Store Change" events from EventBridge → change records.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::change::Subject;
use super::change::{ChangeAudit, ChangeRecord, Classified, valid_change_id};
use super::proto::Operation;
use crate::domain::{ItemKey, ValueKind};
use crate::kinds::StoreKind;
use crate::layers::TIERS_SEGMENT;
use crate::routing::KeyRouter;
use crate::write::ssm::WriterDescription;

pub const SOURCE: &str = "aws.ssm";
pub const DETAIL_TYPE: &str = "Parameter Store Change";

/// The `detail` of a Parameter Store Change event. It never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ParameterStoreChange {
    pub operation: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub parameter_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

pub type ParameterChangeEvent = EventBridgeEvent<ParameterStoreChange>;

/// Why an event was rejected: it is not what the rule should deliver.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EventError {
    #[error(
        "not a Parameter Store Change event (source '{source_name}', detail-type '{detail_type}')"
    )]
    NotAParameterChange {
        source_name: String,
        detail_type: String,
    },
    #[error("unknown operation '{0}'")]
    UnknownOperation(String),
    #[error("event has no usable id")]
    BadEventId,
}

pub fn operation(name: &str) -> Option<Operation> {
    Some(match name {
        "Create" => Operation::Create,
        "Update" => Operation::Update,
        "Delete" => Operation::Delete,
        "LabelParameterVersion" => Operation::LabelParameterVersion,
        _ => return None,
    })
}

/// Why a parameter name names no tenant entry.
#[derive(Debug, Clone, Error)]
pub enum NameError {
    #[error("outside the parameter root '{0}'")]
    OutsideRoot(String),
    #[error("not of the form {{root}}/{{tenant}}/{{service}}/{{key}}")]
    WrongShape,
    #[error(transparent)]
    Invalid(#[from] crate::error::ConfigError),
}

/// Splits `{root}/{tenant}/{service}/{key}` into validated parts.
pub fn parse_parameter_name(name: &str, root: &str) -> Result<ItemKey, NameError> {
    match parse_layer_parameter_name(name, root)? {
        Subject::Entry(item) => Ok(item),
        _ => Err(NameError::WrongShape),
    }
}

/// Splits a parameter name of any layer into validated parts:
/// `{root}/{tenant}/{service}/{key}`, `{root}/_global/{service}/{key}` or
/// `{root}/_tiers/{tier}/{service}/{key}`.
pub fn parse_layer_parameter_name(name: &str, root: &str) -> Result<Subject, NameError> {
    let rest = name
        .strip_prefix(root)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| NameError::OutsideRoot(root.to_owned()))?;
    // A tier's segment is two: `_tiers/{tier}`.
    let (layer, rest) = match rest.split_once('/') {
        Some((TIERS_SEGMENT, rest)) => {
            let (tier, rest) = rest.split_once('/').ok_or(NameError::WrongShape)?;
            (format!("{TIERS_SEGMENT}/{tier}"), rest)
        }
        Some((first, rest)) => (first.to_owned(), rest),
        None => return Err(NameError::WrongShape),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let [service, key] = segments.as_slice() else {
        return Err(NameError::WrongShape);
    };
    Ok(Subject::from_wire(&layer, service, key)?)
}

/// Decides what an event means for the agents' caches.
pub fn classify(
    event: &ParameterChangeEvent,
    root: &str,
    router: &KeyRouter,
) -> Result<Classified, EventError> {
    if event.source != SOURCE || event.detail_type != DETAIL_TYPE {
        return Err(EventError::NotAParameterChange {
            source_name: event.source.clone(),
            detail_type: event.detail_type.clone(),
        });
    }
    let operation = operation(&event.detail.operation)
        .ok_or_else(|| EventError::UnknownOperation(event.detail.operation.clone()))?;
    let event_id = event
        .id
        .as_deref()
        .filter(|id| valid_change_id(id))
        .ok_or(EventError::BadEventId)?;
    let subject = match parse_layer_parameter_name(&event.detail.name, root) {
        Ok(subject) => subject,
        Err(reason) => {
            return Ok(Classified::Ignore(format!(
                "parameter '{}': {reason}",
                event.detail.name
            )));
        }
    };
    let Some(key) = subject.key() else {
        return Ok(Classified::Ignore(format!(
            "parameter '{}' names no configuration key",
            event.detail.name
        )));
    };
    if router.route(key).ok() != Some(StoreKind::ParameterStore) {
        return Ok(Classified::Ignore(format!(
            "key '{key}' is not routed to Parameter Store, so no agent caches it from there"
        )));
    }
    Ok(Classified::Refresh(ChangeRecord {
        subject,
        store: StoreKind::ParameterStore,
        operation,
        change_id: event_id.to_owned(),
        time_unix_ms: event.time.map(|t| t.timestamp_millis()).unwrap_or(0),
        audit: audit(operation, event.detail.description.as_deref()),
        value_type: event
            .detail
            .parameter_type
            .as_deref()
            .and_then(ValueKind::from_parameter_type),
    }))
}

/// What the event says about who changed the parameter, from the
/// description tenant-config's writer sets. Parameter Store numbers versions
/// from 1 and by one per write, so a write that replaced v{n} made v{n+1}.
/// A delete's description is the last writer's, not the deleter's: it is
/// journaled without an actor (CloudTrail's DeleteParameter names it).
fn audit(operation: Operation, description: Option<&str>) -> ChangeAudit {
    let described = description.and_then(WriterDescription::parse);
    match operation {
        Operation::Create | Operation::Update => ChangeAudit {
            actor: described
                .as_ref()
                .and_then(|d| ChangeAudit::clean_actor(&d.actor)),
            from_version: described.as_ref().and_then(|d| d.from_version),
            to_version: match (operation, &described) {
                (Operation::Create, _) => Some(1),
                (_, Some(d)) => d.from_version.map(|v| v + 1),
                _ => None,
            },
            rollback_of: described.and_then(|d| d.rollback_of),
        },
        _ => ChangeAudit::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOT: &str = "/config-service";

    fn event(operation: &str, name: &str) -> ParameterChangeEvent {
        serde_json::from_value(json!({
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "Parameter Store Change",
            "source": "aws.ssm",
            "account": "123456789012",
            "time": "2026-11-23T09:00:00Z",
            "region": "us-east-1",
            "resources": [format!("arn:aws:ssm:us-east-1:123456789012:parameter{name}")],
            "detail": {"operation": operation, "name": name, "type": "String", "description": ""}
        }))
        .unwrap()
    }

    fn classify_default(event: &ParameterChangeEvent) -> Result<Classified, EventError> {
        classify(event, ROOT, &KeyRouter::default())
    }

    #[test]
    fn a_shared_layers_parameter_is_a_change_of_that_layer() {
        let subject = |name: &str| match classify_default(&event("Update", name)).unwrap() {
            Classified::Refresh(change) => Some(change.subject.to_string()),
            Classified::Ignore(_) => None,
        };
        assert_eq!(
            subject(&format!("{ROOT}/_global/billing/param_config_endpoint")).as_deref(),
            Some("global:billing:param_config_endpoint")
        );
        assert_eq!(
            subject(&format!("{ROOT}/_tiers/gold/billing/param_config_endpoint")).as_deref(),
            Some("tier:gold:billing:param_config_endpoint")
        );
        // neither an unknown reserved name nor a tier without its name
        for name in [
            format!("{ROOT}/_other/billing/param_config_endpoint"),
            format!("{ROOT}/_tiers/billing/param_config_endpoint"),
            format!("{ROOT}/_tiers/_x/billing/param_config_endpoint"),
        ] {
            assert_eq!(subject(&name), None, "{name}");
        }
    }

    #[test]
    fn the_sample_events_parse_and_name_their_entry() {
        for (file, op) in [
            (
                include_str!("../../../events/parameter-store-change-update.json"),
                Operation::Update,
            ),
            (
                include_str!("../../../events/parameter-store-change-create.json"),
                Operation::Create,
            ),
            (
                include_str!("../../../events/parameter-store-change-delete.json"),
                Operation::Delete,
            ),
        ] {
            let event: ParameterChangeEvent = serde_json::from_str(file).unwrap();
            let Classified::Refresh(target) = classify_default(&event).unwrap() else {
                panic!("{file}");
            };
            assert_eq!(target.operation, op);
            assert_eq!(
                target.subject.to_string(),
                "tenant-a:billing:param_config_endpoint"
            );
        }
    }

    #[test]
    fn every_documented_operation_refreshes() {
        for op in ["Create", "Update", "Delete", "LabelParameterVersion"] {
            let classified =
                classify_default(&event(op, "/config-service/t1/svc/param_config_x")).unwrap();
            let Classified::Refresh(target) = classified else {
                panic!("{op}")
            };
            assert_eq!(target.time_unix_ms, 1_795_424_400_000);
            assert_eq!(target.change_id, "6a7e8feb-b491-4cf7-a9f1-bf3703467718");
            assert_eq!(target.store, StoreKind::ParameterStore);
        }
    }

    #[test]
    fn the_writers_description_becomes_the_journaled_audit() {
        let with_description = |op: &str, description: &str| {
            let mut e = event(op, "/config-service/t1/svc/param_config_x");
            e.detail.description = Some(description.into());
            match classify_default(&e).unwrap() {
                Classified::Refresh(change) => change.audit,
                other => panic!("{other:?}"),
            }
        };
        // GIVEN the description tenant-config's writer set for an update
        // WHEN the change event arrives
        let audit = with_description(
            "Update",
            "tenant-config by sub-dana (from v3) (rollback of v1)",
        );
        // THEN the journaled record says who, from which version to which
        assert_eq!(audit.to_string(), "v3 -> v4 by sub-dana (rollback of v1)");
        assert_eq!(
            with_description("Create", "tenant-config by sub-dana").to_string(),
            "new -> v1 by sub-dana"
        );
        // A description set by hand names nobody; a delete names no deleter.
        assert_eq!(
            with_description("Update", "rotated by hand").to_string(),
            "? -> ? by unknown"
        );
        assert_eq!(
            with_description("Delete", "tenant-config by sub-dana (from v3)"),
            ChangeAudit::default()
        );
    }

    #[test]
    fn names_outside_the_root_or_not_ours_are_ignored_with_a_reason() {
        for name in [
            "/other-service/t1/svc/param_config_x",
            "/config-service-evil/t1/svc/param_config_x",
            "/config-service/t1/param_config_x",
            "/config-service/t1/svc/param_config_x/extra",
            "/config-service/t 1/svc/param_config_x",
            "/config-service/t1/svc/tenant_config_x",
            "/config-service/t1/svc/other_x",
        ] {
            let classified = classify_default(&event("Update", name)).unwrap();
            assert!(
                matches!(classified, Classified::Ignore(_)),
                "{name}: {classified:?}"
            );
        }
    }

    #[test]
    fn events_that_are_not_parameter_changes_are_rejected() {
        let mut wrong_source = event("Update", "/config-service/t1/svc/param_config_x");
        wrong_source.source = "aws.ec2".into();
        assert!(matches!(
            classify_default(&wrong_source),
            Err(EventError::NotAParameterChange { .. })
        ));
        assert_eq!(
            classify_default(&event("Rename", "/config-service/t1/svc/param_config_x")),
            Err(EventError::UnknownOperation("Rename".into()))
        );
        let mut no_id = event("Update", "/config-service/t1/svc/param_config_x");
        no_id.id = Some("id with spaces".into());
        assert_eq!(classify_default(&no_id), Err(EventError::BadEventId));
    }
}
