//! Parameter Store writer: native versions and history (the last 100
//! versions); the writer and any rollback are kept in each version's
//! description. Deleting a parameter deletes its history too (Parameter
//! Store's behaviour), so a key created again starts over at version 1.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::{ParameterHistory, ParameterType};

use super::lock::{Claim, LockState, VersionLocks};
use super::{
    Actor, ConfigWriter, Expected, NewValue, ValueKind, VersionRecord, WriteError, Written,
    deletable, now_ms, replaceable,
};
use crate::credentials::TenantClient;
use crate::domain::{StoreKind, decode_text};
use crate::layers::EntryKey;
use crate::store::ssm::{layer_parameter_name, sdk_error};

/// Descriptions say who wrote a version and from which one:
/// `tenant-config by {actor}`, then ` (from v{n})` when a version was
/// replaced and ` (rollback of v{n})` for a restored version. The change
/// event carries the description, so config-refresh journals the same facts.
const DESCRIPTION_PREFIX: &str = "tenant-config by ";
const FROM_MARK: &str = " (from v";
const ROLLBACK_MARK: &str = " (rollback of v";
/// Parameter descriptions hold at most 1024 characters.
const MAX_ACTOR_CHARS: usize = 256;

pub struct ParameterWriter {
    /// The process's client, or one per tenant with vended credentials.
    clients: TenantClient<Client>,
    root: String,
    /// The KMS key SecureStrings are written with; `None`: `aws/ssm`.
    secure_string_key: Option<String>,
    /// Where each key's version lock is claimed before a write
    /// ([`super::lock`]); `None`: check-then-write, where a write racing into
    /// the window between the check and the write also lands.
    locks: Option<Arc<dyn VersionLocks>>,
}

/// A key claimed for one write: its lock as claimed, and Parameter Store's
/// version when it was claimed.
struct Held {
    claimed: LockState,
    current: Option<i64>,
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

/// What a description written by this writer says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterDescription {
    pub actor: String,
    /// The version this write replaced (`None`: it created the parameter).
    pub from_version: Option<i64>,
    pub rollback_of: Option<i64>,
}

impl WriterDescription {
    pub fn render(&self) -> String {
        let actor: String = self.actor.chars().take(MAX_ACTOR_CHARS).collect();
        let mut text = format!("{DESCRIPTION_PREFIX}{actor}");
        if let Some(from) = self.from_version {
            text.push_str(&format!("{FROM_MARK}{from})"));
        }
        if let Some(of) = self.rollback_of {
            text.push_str(&format!("{ROLLBACK_MARK}{of})"));
        }
        text
    }

    /// `None` for a description this writer did not set (the console, the
    /// AWS CLI): those leave the last modifying IAM principal instead.
    pub fn parse(description: &str) -> Option<Self> {
        let rest = description.strip_prefix(DESCRIPTION_PREFIX)?;
        let (rest, rollback_of) = split_number_mark(rest, ROLLBACK_MARK);
        let (actor, from_version) = split_number_mark(rest, FROM_MARK);
        Some(Self {
            actor: actor.to_owned(),
            from_version,
            rollback_of,
        })
    }
}

/// Splits `"{head}{mark}{digits})"` into head and number; anything else is
/// all head.
fn split_number_mark<'a>(text: &'a str, mark: &str) -> (&'a str, Option<i64>) {
    text.rsplit_once(mark)
        .and_then(|(head, tail)| {
            let digits = tail.strip_suffix(')')?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok().map(|n| (head, Some(n))))
                .flatten()
        })
        .unwrap_or((text, None))
}

impl ParameterWriter {
    pub fn new(client: impl Into<TenantClient<Client>>, root: impl Into<String>) -> Self {
        Self {
            clients: client.into(),
            root: root.into(),
            secure_string_key: None,
            locks: None,
        }
    }

    /// Claims each key's version lock in `locks` before writing it, so that
    /// `If-Match` is a compare-and-swap: of concurrent writers from one
    /// version exactly one lands.
    pub fn with_version_locks(mut self, locks: Arc<dyn VersionLocks>) -> Self {
        self.locks = Some(locks);
        self
    }

    /// Claims the key: reads its lock, reads Parameter Store's version, and
    /// swaps the lock to "claimed at that version" if no other writer
    /// changed it meanwhile. A live claim of another writer is a conflict; an
    /// abandoned one is taken over.
    async fn claim(&self, locks: &dyn VersionLocks, item: &EntryKey) -> Result<Held, WriteError> {
        // A lost swap means another writer moved first; one retry sees its
        // claim (a conflict) or its finished write.
        for _ in 0..3 {
            let observed = locks.read(item).await?;
            if let Some(LockState {
                version,
                claim: Some(claim),
                ..
            }) = &observed
                && !claim.abandoned(now_ms())
            {
                return Err(WriteError::Conflict {
                    current: (*version > 0).then_some(*version),
                });
            }
            let claimed = LockState {
                version: observed.as_ref().map_or(0, |o| o.version),
                claim: Some(Claim::new(now_ms())),
                generation: observed.as_ref().map_or(0, |o| o.generation) + 1,
            };
            if locks.swap(item, observed.as_ref(), &claimed).await? {
                // Read while holding the claim: no locked write can land
                // between this read and ours.
                let held = Held {
                    claimed,
                    current: None,
                };
                return match self.current_version(item).await {
                    Ok(current) => Ok(Held { current, ..held }),
                    Err(err) => {
                        let left = held.claimed.version;
                        self.release(locks, item, &held, left).await;
                        Err(err)
                    }
                };
            }
        }
        let current = self.current_version(item).await?;
        Err(WriteError::Conflict { current })
    }

    /// Hands the key back at `version` (0: absent). A failure leaves the
    /// claim to expire ([`super::lock::CLAIM_TIMEOUT`]); the write itself
    /// stands.
    async fn release(&self, locks: &dyn VersionLocks, item: &EntryKey, held: &Held, version: i64) {
        let free = LockState {
            version,
            claim: None,
            generation: held.claimed.generation + 1,
        };
        match locks.swap(item, Some(&held.claimed), &free).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                layer = %item.layer, service = %item.service, key = %item.key,
                "a parameter's version lock was taken over before this write released it"
            ),
            Err(error) => tracing::warn!(
                layer = %item.layer, service = %item.service, key = %item.key, %error,
                "a parameter's version lock could not be released; it expires by itself"
            ),
        }
    }

    /// Encrypts every SecureString it writes with `key` (id, ARN or alias):
    /// without it Parameter Store uses the account's `aws/ssm` key, and a
    /// key policy or an encryption-context condition on a key of one's own
    /// restricts nothing.
    pub fn with_secure_string_key(mut self, key: Option<String>) -> Self {
        self.secure_string_key = key;
        self
    }

    fn name(&self, item: &EntryKey) -> String {
        layer_parameter_name(&self.root, item)
    }

    fn client(&self, item: &EntryKey) -> Client {
        self.clients.for_layer(&item.layer)
    }

    async fn current_version(&self, item: &EntryKey) -> Result<Option<i64>, WriteError> {
        let name = self.name(item);
        match self.client(item).get_parameter().name(name).send().await {
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
        item: &EntryKey,
        decrypt: bool,
    ) -> Result<Vec<ParameterHistory>, WriteError> {
        let (client, name) = (self.client(item), self.name(item));
        let mut versions = Vec::new();
        let mut token = None;
        loop {
            let result = client
                .get_parameter_history()
                .name(&name)
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
        item: &EntryKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
        rollback_of: Option<i64>,
    ) -> Result<Written, WriteError> {
        value.check(StoreKind::ParameterStore)?;
        let Some(locks) = self.locks.as_deref() else {
            return self
                .check_then_write(item, value, expected, actor, rollback_of)
                .await;
        };
        let held = self.claim(locks, item).await?;
        let result = match replaceable(held.current, expected) {
            Ok(previous) => self
                .put_parameter(item, value, expected, actor, previous, rollback_of)
                .await
                .map(|version| Written { version, previous }),
            Err(err) => Err(err),
        };
        let left = match &result {
            Ok(written) => written.version,
            Err(_) => held.current.unwrap_or(0),
        };
        self.release(locks, item, &held, left).await;
        result
    }

    async fn delete_parameter(&self, item: &EntryKey) -> Result<(), WriteError> {
        match self
            .client(item)
            .delete_parameter()
            .name(self.name(item))
            .send()
            .await
        {
            Ok(_) => Ok(()),
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

    /// Without locks: the expected version checked just before the write.
    async fn check_then_write(
        &self,
        item: &EntryKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
        rollback_of: Option<i64>,
    ) -> Result<Written, WriteError> {
        let previous = replaceable(self.current_version(item).await?, expected)?;
        let version = self
            .put_parameter(item, value, expected, actor, previous, rollback_of)
            .await?;
        // No conditional write in Parameter Store: a write that raced in
        // between the check and ours shows as a skipped version.
        if let Expected::Version(v) = expected
            && v.checked_add(1) != Some(version)
        {
            return Err(WriteError::Conflict {
                current: Some(version),
            });
        }
        Ok(Written { version, previous })
    }

    /// PutParameter (creating only when `expected` is `Absent`); the new version.
    async fn put_parameter(
        &self,
        item: &EntryKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
        previous: Option<i64>,
        rollback_of: Option<i64>,
    ) -> Result<i64, WriteError> {
        let name = self.name(item);
        let result = self
            .client(item)
            .put_parameter()
            .name(&name)
            .value(value.stored_text())
            .r#type(parameter_type(value.kind))
            // Only a SecureString takes a key (Parameter Store refuses one
            // for the other types).
            .set_key_id(match value.kind {
                ValueKind::Secret => self.secure_string_key.clone(),
                _ => None,
            })
            .description(
                WriterDescription {
                    actor: actor.0.clone(),
                    from_version: previous,
                    rollback_of,
                }
                .render(),
            )
            .overwrite(expected != Expected::Absent)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.version),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_already_exists()) =>
            {
                let current = self.current_version(item).await?;
                Err(WriteError::Conflict { current })
            }
            Err(err) => Err(sdk_error(err).into()),
        }
    }
}

#[async_trait]
impl ConfigWriter for ParameterWriter {
    fn kind(&self) -> StoreKind {
        StoreKind::ParameterStore
    }

    async fn put(
        &self,
        item: &EntryKey,
        value: &NewValue,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError> {
        self.write(item, value, expected, actor, None).await
    }

    async fn delete(
        &self,
        item: &EntryKey,
        expected: Expected,
        _actor: &Actor,
    ) -> Result<i64, WriteError> {
        let Some(locks) = self.locks.as_deref() else {
            let current = self.current_version(item).await?;
            let version = deletable(current, expected)?;
            return self.delete_parameter(item).await.map(|()| version);
        };
        // Claimed, so no write lands between the check and the delete (a
        // DELETE never removes a version written after its check).
        let held = self.claim(locks, item).await?;
        let result = match deletable(held.current, expected) {
            Ok(version) => self.delete_parameter(item).await.map(|()| version),
            Err(err) => Err(err),
        };
        let left = match &result {
            Ok(_) => 0,
            Err(_) => held.current.unwrap_or(0),
        };
        self.release(locks, item, &held, left).await;
        result
    }

    async fn history(
        &self,
        item: &EntryKey,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, WriteError> {
        let versions = self.versions(item, false).await?;
        Ok(versions
            .into_iter()
            .rev()
            .take(limit)
            .map(|version| {
                let kind = value_kind(version.r#type.as_ref());
                let described = version
                    .description
                    .as_deref()
                    .and_then(WriterDescription::parse);
                let rollback_of = described.as_ref().and_then(|d| d.rollback_of);
                let actor = described.map(|d| d.actor);
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
        item: &EntryKey,
        to: i64,
        expected: Expected,
        actor: &Actor,
    ) -> Result<Written, WriteError> {
        // Decrypted only here, to store the old SecureString again; the value
        // never leaves this function.
        let versions = self.versions(item, true).await?;
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
    fn descriptions_carry_the_actor_the_replaced_version_and_the_rollback() {
        let described = |from_version, rollback_of| WriterDescription {
            actor: "user-123".into(),
            from_version,
            rollback_of,
        };
        for d in [
            described(None, None),
            described(Some(3), None),
            described(Some(3), Some(1)),
            described(None, Some(2)),
        ] {
            assert_eq!(WriterDescription::parse(&d.render()), Some(d.clone()));
        }
        assert_eq!(
            described(Some(3), Some(1)).render(),
            "tenant-config by user-123 (from v3) (rollback of v1)"
        );
        assert_eq!(WriterDescription::parse("set by hand"), None);
        // An actor that looks like a mark stays the actor.
        let odd = WriterDescription::parse("tenant-config by a (from vx)").unwrap();
        assert_eq!(
            (odd.actor.as_str(), odd.from_version),
            ("a (from vx)", None)
        );
        let long = WriterDescription {
            actor: "x".repeat(2000),
            from_version: Some(i64::MAX),
            rollback_of: Some(i64::MAX),
        };
        assert!(long.render().len() < 1024);
    }
}
