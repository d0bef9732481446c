//! Parameter Store writer: native versions and history (the last 100
//! versions); the writer and any rollback are kept in each version's
//! description. Deleting a parameter deletes its history too (Parameter
//! Store's behaviour), so a key created again starts over at version 1.

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::{ParameterHistory, ParameterType};

use super::{
    Actor, ConfigWriter, Expected, NewValue, ValueKind, VersionRecord, WriteError, Written,
    deletable,
};
use crate::domain::{ItemKey, StoreKind, decode_text};
use crate::store::ssm::{parameter_name, sdk_error};

/// Descriptions say who wrote a version: `tenant-config by {actor}`, plus
/// ` (rollback of v{n})` for a restored version.
const DESCRIPTION_PREFIX: &str = "tenant-config by ";
const ROLLBACK_MARK: &str = " (rollback of v";
/// Parameter descriptions hold at most 1024 characters.
const MAX_ACTOR_CHARS: usize = 256;

pub struct ParameterWriter {
    client: Client,
    root: String,
}

fn parameter_type(kind: ValueKind) -> ParameterType {
    match kind {
        ValueKind::Plain => ParameterType::String,
        ValueKind::StringList => ParameterType::StringList,
        ValueKind::Secret => ParameterType::SecureString,
    }
}

fn value_kind(kind: Option<&ParameterType>) -> ValueKind {
    match kind {
        Some(ParameterType::SecureString) => ValueKind::Secret,
        Some(ParameterType::StringList) => ValueKind::StringList,
        _ => ValueKind::Plain,
    }
}

fn description(actor: &Actor, rollback_of: Option<i64>) -> String {
    let actor: String = actor.0.chars().take(MAX_ACTOR_CHARS).collect();
    match rollback_of {
        Some(from) => format!("{DESCRIPTION_PREFIX}{actor}{ROLLBACK_MARK}{from})"),
        None => format!("{DESCRIPTION_PREFIX}{actor}"),
    }
}

/// (actor, rollback_of) from a description this writer set; other writers
/// (the console, the CLI) leave the last modifying IAM principal.
fn parse_description(description: Option<&str>) -> (Option<String>, Option<i64>) {
    let Some(rest) = description.and_then(|d| d.strip_prefix(DESCRIPTION_PREFIX)) else {
        return (None, None);
    };
    match rest.rsplit_once(ROLLBACK_MARK) {
        Some((actor, tail)) => (
            Some(actor.to_owned()),
            tail.strip_suffix(')').and_then(|n| n.parse().ok()),
        ),
        None => (Some(rest.to_owned()), None),
    }
}

impl ParameterWriter {
    pub fn new(client: Client, root: impl Into<String>) -> Self {
        Self {
            client,
            root: root.into(),
        }
    }

    fn name(&self, item: &ItemKey) -> String {
        parameter_name(&self.root, &item.tenant, &item.service, &item.key)
    }

    async fn current_version(&self, name: &str) -> Result<Option<i64>, WriteError> {
        match self.client.get_parameter().name(name).send().await {
            Ok(output) => Ok(output.parameter.map(|p| p.version)),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(err) => Err(sdk_error(err).into()),
        }
    }

    /// Every version, oldest first (pages of 50), decrypted when asked.
    async fn versions(
        &self,
        name: &str,
        decrypt: bool,
    ) -> Result<Vec<ParameterHistory>, WriteError> {
        let mut versions = Vec::new();
        let mut token = None;
        loop {
            let result = self
                .client
                .get_parameter_history()
                .name(name)
                .with_decryption(decrypt)
                .max_results(50)
                .set_next_token(token)
                .send()
                .await;
            let output = match result {
                Ok(output) => output,
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_parameter_not_found()) =>
                {
                    return Ok(versions);
                }
                Err(err) => return Err(sdk_error(err).into()),
            };
            versions.extend(output.parameters.unwrap_or_default());
            match output.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(versions),
            }
        }
    }

    async fn write(
        &self,
        item: &ItemKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
        rollback_of: Option<i64>,
    ) -> Result<Written, WriteError> {
        value.check(StoreKind::ParameterStore)?;
        let name = self.name(item);
        let previous = match expected {
            Expected::Any | Expected::Absent => self.current_version(&name).await?,
            Expected::Version(v) => {
                let current = self.current_version(&name).await?;
                if current != Some(v) {
                    return Err(WriteError::Conflict { current });
                }
                current
            }
        };
        if expected == Expected::Absent && previous.is_some() {
            return Err(WriteError::Conflict { current: previous });
        }
        let result = self
            .client
            .put_parameter()
            .name(&name)
            .value(value.stored_text())
            .r#type(parameter_type(value.kind))
            .description(description(actor, rollback_of))
            .overwrite(expected != Expected::Absent)
            .send()
            .await;
        let version = match result {
            Ok(output) => output.version,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_already_exists()) =>
            {
                let current = self.current_version(&name).await?;
                return Err(WriteError::Conflict { current });
            }
            Err(err) => return Err(sdk_error(err).into()),
        };
        // No conditional write in Parameter Store: a write that raced in
        // between the check and ours shows as a skipped version.
        if let Expected::Version(v) = expected
            && version != v + 1
        {
            return Err(WriteError::Conflict {
                current: Some(version),
            });
        }
        Ok(Written { version, previous })
    }
}

#[async_trait]
impl ConfigWriter for ParameterWriter {
    fn kind(&self) -> StoreKind {
        StoreKind::ParameterStore
    }

    async fn put(
        &self,
        item: &ItemKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError> {
        self.write(item, value, expected, actor, None).await
    }

    async fn delete(
        &self,
        item: &ItemKey,
        expected: Expected,
        _actor: &Actor,
    ) -> Result<i64, WriteError> {
        let name = self.name(item);
        let current = self.current_version(&name).await?;
        let version = deletable(current, expected)?;
        match self.client.delete_parameter().name(&name).send().await {
            Ok(_) => Ok(version),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Err(WriteError::NotFound)
            }
            Err(err) => Err(sdk_error(err).into()),
        }
    }

    async fn history(
        &self,
        item: &ItemKey,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, WriteError> {
        let versions = self.versions(&self.name(item), false).await?;
        Ok(versions
            .into_iter()
            .rev()
            .take(limit)
            .map(|version| {
                let kind = value_kind(version.r#type.as_ref());
                let (actor, rollback_of) = parse_description(version.description.as_deref());
                VersionRecord {
                    version: version.version,
                    value: match kind {
                        ValueKind::Secret => None,
                        ValueKind::StringList => version.value.as_deref().map(|v| {
                            serde_json::Value::Array(
                                v.split(',')
                                    .map(|s| serde_json::Value::String(s.to_owned()))
                                    .collect(),
                            )
                        }),
                        ValueKind::Plain => version.value.as_deref().map(decode_text),
                    },
                    kind,
                    written_at_ms: version
                        .last_modified_date
                        .map(|d| d.to_millis().unwrap_or_default())
                        .unwrap_or_default(),
                    actor: actor.or(version.last_modified_user),
                    deleted: false,
                    rollback_of,
                }
            })
            .collect())
    }

    async fn rollback(
        &self,
        item: &ItemKey,
        to: i64,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError> {
        // Decrypted only here, to store the old SecureString again; the value
        // never leaves this function.
        let versions = self.versions(&self.name(item), true).await?;
        let old = versions
            .into_iter()
            .find(|v| v.version == to)
            .ok_or(WriteError::UnknownVersion(to))?;
        let value = NewValue::text(
            old.value.unwrap_or_default(),
            value_kind(old.r#type.as_ref()),
        );
        self.write(item, &value, expected, actor, Some(to)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_carry_the_actor_and_the_rollback() {
        let actor = Actor("user-123".into());
        assert_eq!(
            parse_description(Some(&description(&actor, None))),
            (Some("user-123".into()), None)
        );
        assert_eq!(
            parse_description(Some(&description(&actor, Some(4)))),
            (Some("user-123".into()), Some(4))
        );
        assert_eq!(parse_description(Some("set by hand")), (None, None));
        let long = Actor("x".repeat(2000));
        assert!(description(&long, Some(1)).len() < 1024);
    }
}
