//! The change history an operator lists: journal entries and an entry's
//! versions as text lines.

use tenant_config_shared::refresh::change::Subject;
use tenant_config_shared::refresh::journal::JournalEntry;
use tenant_config_shared::write::{ValueKind, VersionRecord};

fn timestamp(ms: i64) -> String {
    aws_smithy_types::DateTime::from_millis(ms)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| ms.to_string())
}

/// One line per version: version, when, who, what (a SecureString's value
/// is never shown: the writer port does not return it).
pub fn version_line(version: &VersionRecord) -> String {
    let what = if version.deleted {
        "(deleted)".to_owned()
    } else if version.kind == ValueKind::Secret {
        "(SecureString)".to_owned()
    } else {
        version
            .value
            .as_ref()
            .map_or_else(|| "(no value)".to_owned(), ToString::to_string)
    };
    let rollback = version
        .rollback_of
        .map(|from| format!("  (rollback of v{from})"))
        .unwrap_or_default();
    format!(
        "v{}  {}  by {}{rollback}  {what}",
        version.version,
        timestamp(version.written_at_ms),
        version.actor.as_deref().unwrap_or("unknown"),
    )
}

/// `--since`: a duration back from `now_ms` (`90s`, `15m`, `2h`, `1d`) or an
/// absolute Unix time in milliseconds.
pub fn since_ms(since: &str, now_ms: i64) -> Result<i64, String> {
    let since = since.trim();
    let unit_ms = match since.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => {
            return since
                .parse::<i64>()
                .map_err(|_| format!("--since '{since}': use 90s, 15m, 2h, 1d or Unix ms"));
        }
    };
    let amount: i64 = since[..since.len() - 1]
        .parse()
        .map_err(|_| format!("--since '{since}': use 90s, 15m, 2h, 1d or Unix ms"))?;
    Ok(now_ms - amount * unit_ms)
}

/// One line per change: journal time, entry, store, operation, versions and
/// who (the audit), change id. Never a value: the journal holds none.
/// What changed, as a path: `tenant/service/key`, `global/service/key`,
/// `tier:gold/service/key`, `registration/tenant`.
fn subject_path(subject: &Subject) -> String {
    match subject {
        Subject::Entry(item) => format!("{}/{}/{}", item.tenant, item.service, item.key),
        Subject::Shared {
            layer,
            service,
            key,
        } => format!("{layer}/{service}/{key}"),
        Subject::Registration(tenant) => format!("registration/{tenant}"),
        Subject::Rollout(entry) => format!("rollout/{entry}"),
    }
}

pub fn line(entry: &JournalEntry) -> String {
    let change = &entry.change;
    let at = timestamp(entry.journaled_at_ms);
    format!(
        "{at}  {}  {}  {}  {}  {}",
        subject_path(&change.subject),
        change.store,
        change.operation.as_str_name(),
        change.audit,
        change.change_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenant_config_shared::refresh::change::ChangeRecord;
    use tenant_config_shared::refresh::proto::Operation;
    use tenant_config_shared::{ItemKey, StoreKind};

    #[test]
    fn since_takes_durations_and_absolute_times() {
        let now = 10_000_000;
        assert_eq!(since_ms("90s", now), Ok(now - 90_000));
        assert_eq!(since_ms("15m", now), Ok(now - 900_000));
        assert_eq!(since_ms("2h", now), Ok(now - 7_200_000));
        assert_eq!(since_ms("1d", now), Ok(now - 86_400_000));
        assert_eq!(since_ms("1795424400000", now), Ok(1_795_424_400_000));
        assert!(since_ms("yesterday", now).is_err());
        assert!(since_ms("xm", now).is_err());
    }

    #[test]
    fn a_version_line_says_who_and_what_but_never_a_secret() {
        let record = |kind, value: Option<serde_json::Value>| VersionRecord {
            version: 3,
            value,
            kind,
            written_at_ms: 1_795_424_400_000,
            actor: Some("sub-bob".into()),
            deleted: false,
            rollback_of: Some(1),
        };
        assert_eq!(
            version_line(&record(
                ValueKind::Plain,
                Some(serde_json::json!({"max": 5}))
            )),
            r#"v3  2026-11-23T09:00:00Z  by sub-bob  (rollback of v1)  {"max":5}"#
        );
        assert!(version_line(&record(ValueKind::Secret, None)).ends_with("(SecureString)"));
    }

    #[test]
    fn a_line_names_the_entry_and_what_happened() {
        let entry = JournalEntry::new(
            ChangeRecord {
                subject: Subject::Entry(
                    ItemKey::parse("tenant-a", "billing", "tenant_config_limits").unwrap(),
                ),
                store: StoreKind::DynamoDb,
                operation: Operation::Update,
                change_id: "c4ca4238".into(),
                time_unix_ms: 0,
                audit: Default::default(),
                value_type: None,
            },
            1_795_424_400_000,
        );
        assert_eq!(
            line(&entry),
            "2026-11-23T09:00:00Z  tenant-a/billing/tenant_config_limits  dynamodb  OPERATION_UPDATE  ? -> ? by unknown  c4ca4238"
        );
    }
}
