//! The writer port's adapters against moto server: versions, conflicts,
//! history with who wrote each version, rollback, delete, and what readers
//! see afterwards (through the read adapters).

use serde_json::json;
use tenant_config_local_stack::moto::MotoServer;
use tenant_config_local_stack::seed;
use tenant_config_shared::domain::{Found, ReadMode};
use tenant_config_shared::layers::EntryKey;
use tenant_config_shared::store::{ConfigStore, DynamoDbStore, ParameterStore};
use tenant_config_shared::write::{
    Actor, ConfigWriter, DynamoDbVersionLocks, DynamoDbWriter, Expected, NewValue, ParameterWriter,
    ValueKind, WriteError,
};
use tenant_config_shared::{ServiceName, TenantId};
use tenant_config_testkit::values::item;

const TABLE: &str = "writer-test";
const ROOT: &str = "/config-service";

fn plain(found: Option<Found>) -> (serde_json::Value, Option<i64>) {
    match found {
        Some(Found::Plain(v)) => (v.value.clone(), v.version),
        other => panic!("expected a plain value, got {other:?}"),
    }
}

fn alice() -> Actor {
    Actor("sub-alice".into())
}

#[tokio::test]
async fn dynamodb_writes_are_versioned_conditional_and_kept_in_history() {
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_table(&aws, TABLE).await.unwrap();
    let writer = DynamoDbWriter::new(aws_sdk_dynamodb::Client::new(&aws), TABLE);
    let reader = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), TABLE);
    let limits = item("t1", "billing", "tenant_config_limits");
    let value = |v: serde_json::Value| NewValue::json(&v, ValueKind::Plain).unwrap();

    // GIVEN a new entry (create only) and an update from the version read
    let created = writer
        .put(
            &EntryKey::from(&limits),
            &value(json!({"max": 5})),
            Expected::Absent,
            &alice(),
        )
        .await
        .unwrap();
    assert_eq!((created.version, created.previous), (1, None));
    let updated = writer
        .put(
            &EntryKey::from(&limits),
            &value(json!({"max": 10})),
            Expected::Version(1),
            &alice(),
        )
        .await
        .unwrap();
    assert_eq!((updated.version, updated.previous), (2, Some(1)));
    assert_eq!(
        plain(reader.get(&limits, ReadMode::Plain).await.unwrap()),
        (json!({"max": 10}), Some(2))
    );

    // WHEN someone writes from a version that is no longer current
    let stale = writer
        .put(
            &EntryKey::from(&limits),
            &value(json!({"max": 99})),
            Expected::Version(1),
            &alice(),
        )
        .await;
    // THEN it is a conflict naming the current version, and nothing changed
    assert!(
        matches!(stale, Err(WriteError::Conflict { current: Some(2) })),
        "{stale:?}"
    );
    let again = writer
        .put(
            &EntryKey::from(&limits),
            &value(json!(1)),
            Expected::Absent,
            &alice(),
        )
        .await;
    assert!(matches!(
        again,
        Err(WriteError::Conflict { current: Some(2) })
    ));
    assert_eq!(
        plain(reader.get(&limits, ReadMode::Plain).await.unwrap()).0,
        json!({"max": 10})
    );

    // WHEN version 1 is restored
    let restored = writer
        .rollback(
            &EntryKey::from(&limits),
            1,
            Expected::Version(2),
            &Actor("sub-bob".into()),
        )
        .await
        .unwrap();
    assert_eq!(restored.version, 3);
    assert_eq!(
        plain(reader.get(&limits, ReadMode::Plain).await.unwrap()),
        (json!({"max": 5}), Some(3))
    );
    // THEN the history shows every version, newest first, with who and what
    let history = writer.history(&EntryKey::from(&limits), 10).await.unwrap();
    let versions: Vec<i64> = history.iter().map(|h| h.version).collect();
    assert_eq!(versions, [3, 2, 1]);
    assert_eq!(history[0].rollback_of, Some(1));
    assert_eq!(history[0].actor.as_deref(), Some("sub-bob"));
    assert_eq!(history[1].value, Some(json!({"max": 10})));
    assert!(history[2].written_at_ms > 1_600_000_000_000);

    // WHEN it is deleted and created again THEN versions keep growing
    assert_eq!(
        writer
            .delete(&EntryKey::from(&limits), Expected::Version(3), &alice())
            .await
            .unwrap(),
        3
    );
    assert!(
        reader
            .get(&limits, ReadMode::Plain)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        writer
            .delete(&EntryKey::from(&limits), Expected::Any, &alice())
            .await,
        Err(WriteError::NotFound)
    ));
    let recreated = writer
        .put(
            &EntryKey::from(&limits),
            &value(json!("back")),
            Expected::Absent,
            &alice(),
        )
        .await
        .unwrap();
    assert_eq!(recreated.version, 5, "after the tombstone (4)");
    let history = writer.history(&EntryKey::from(&limits), 10).await.unwrap();
    assert!(history[1].deleted && history[1].value.is_none());
    assert!(matches!(
        writer
            .rollback(&EntryKey::from(&limits), 4, Expected::Any, &alice())
            .await,
        Err(WriteError::Invalid(_))
    ));
    assert!(matches!(
        writer
            .rollback(&EntryKey::from(&limits), 42, Expected::Any, &alice())
            .await,
        Err(WriteError::UnknownVersion(42))
    ));

    // AND history items are not configuration: the whole-service listing
    // has exactly the one entry
    let listing = reader
        .list(
            &TenantId::parse("t1").unwrap(),
            &ServiceName::parse("billing").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(listing.entries.len(), 1);
    // AND DynamoDB refuses secrets and lists
    assert!(matches!(
        writer
            .put(
                &EntryKey::from(&limits),
                &NewValue::text("x", ValueKind::Secret),
                Expected::Any,
                &alice()
            )
            .await,
        Err(WriteError::Invalid(_))
    ));
}

#[tokio::test]
async fn parameter_store_writes_use_native_versions_and_restore_secrets_unseen() {
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    let writer = ParameterWriter::new(aws_sdk_ssm::Client::new(&aws), ROOT);
    let reader = ParameterStore::new(aws_sdk_ssm::Client::new(&aws), ROOT);
    let endpoint = item("t1", "billing", "param_config_endpoint");

    // GIVEN a parameter created and updated from the version read
    let text = |t: &str| NewValue::text(t, ValueKind::Plain);
    assert_eq!(
        writer
            .put(
                &EntryKey::from(&endpoint),
                &text("https://v1"),
                Expected::Absent,
                &alice()
            )
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        writer
            .put(
                &EntryKey::from(&endpoint),
                &text("https://v2"),
                Expected::Version(1),
                &alice()
            )
            .await
            .unwrap()
            .version,
        2
    );
    // WHEN a write comes from an old version THEN it conflicts
    let stale = writer
        .put(
            &EntryKey::from(&endpoint),
            &text("https://v9"),
            Expected::Version(1),
            &alice(),
        )
        .await;
    assert!(
        matches!(stale, Err(WriteError::Conflict { current: Some(2) })),
        "{stale:?}"
    );
    assert!(matches!(
        writer
            .put(
                &EntryKey::from(&endpoint),
                &text("x"),
                Expected::Absent,
                &alice()
            )
            .await,
        Err(WriteError::Conflict { current: Some(2) })
    ));
    let history = writer
        .history(&EntryKey::from(&endpoint), 10)
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|h| h.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(history[0].actor.as_deref(), Some("sub-alice"));
    assert_eq!(history[1].value, Some(json!("https://v1")));

    // GIVEN a SecureString with two versions
    let password = item("t1", "billing", "param_config_db_password");
    let secret = |t: &str| NewValue::text(t, ValueKind::Secret);
    writer
        .put(
            &EntryKey::from(&password),
            &secret("first-secret"),
            Expected::Absent,
            &alice(),
        )
        .await
        .unwrap();
    writer
        .put(
            &EntryKey::from(&password),
            &secret("second-secret"),
            Expected::Version(1),
            &alice(),
        )
        .await
        .unwrap();
    // WHEN version 1 is restored
    let restored = writer
        .rollback(
            &EntryKey::from(&password),
            1,
            Expected::Version(2),
            &alice(),
        )
        .await
        .unwrap();
    assert_eq!(restored.version, 3);
    // THEN readers that decrypt get the first secret again, still a SecureString
    match reader.get(&password, ReadMode::Decrypt).await.unwrap() {
        Some(Found::Secret(Some(value))) => assert_eq!(value.expose(), &json!("first-secret")),
        other => panic!("{other:?}"),
    }
    // AND the history never shows a secret's value
    let history = writer
        .history(&EntryKey::from(&password), 10)
        .await
        .unwrap();
    assert_eq!(history[0].rollback_of, Some(1));
    assert!(
        history
            .iter()
            .all(|h| h.value.is_none() && h.kind == ValueKind::Secret)
    );
    assert!(!format!("{history:?}").contains("secret\""));

    // AND a StringList round-trips as an array
    let regions = item("t1", "billing", "param_config_regions");
    writer
        .put(
            &EntryKey::from(&regions),
            &NewValue::json(&json!(["eu-west-1", "us-east-1"]), ValueKind::StringList).unwrap(),
            Expected::Any,
            &alice(),
        )
        .await
        .unwrap();
    assert_eq!(
        plain(reader.get(&regions, ReadMode::Plain).await.unwrap()).0,
        json!(["eu-west-1", "us-east-1"])
    );
    // AND a delete from a stale version conflicts; from the current one it works
    assert!(matches!(
        writer
            .delete(&EntryKey::from(&endpoint), Expected::Version(1), &alice())
            .await,
        Err(WriteError::Conflict { current: Some(2) })
    ));
    assert_eq!(
        writer
            .delete(&EntryKey::from(&endpoint), Expected::Version(2), &alice())
            .await
            .unwrap(),
        2
    );
    assert!(
        reader
            .get(&endpoint, ReadMode::Plain)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_configured_kms_key_encrypts_every_secure_string_version_and_nothing_else() {
    // GIVEN a writer configured with the stack's own key, as config-api and
    // the CLI are when SecureStringKmsKeyArn is set
    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/0f3c1a4e-7f1e-4f7e-9c63-1a2b3c4d5e6f";
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&aws);
    let writer = ParameterWriter::new(ssm.clone(), ROOT).with_secure_string_key(Some(KEY.into()));
    let secret = item("t1", "billing", "param_config_db_password");
    let endpoint = item("t1", "billing", "param_config_endpoint");
    let secret_text = |t: &str| NewValue::text(t, ValueKind::Secret);

    // WHEN a secret is created, updated and rolled back, and a plain value written
    writer
        .put(
            &EntryKey::from(&secret),
            &secret_text("s1"),
            Expected::Absent,
            &alice(),
        )
        .await
        .unwrap();
    writer
        .put(
            &EntryKey::from(&secret),
            &secret_text("s2"),
            Expected::Version(1),
            &alice(),
        )
        .await
        .unwrap();
    writer
        .rollback(&EntryKey::from(&secret), 1, Expected::Version(2), &alice())
        .await
        .unwrap();
    writer
        .put(
            &EntryKey::from(&endpoint),
            &NewValue::text("https://v1", ValueKind::Plain),
            Expected::Absent,
            &alice(),
        )
        .await
        .unwrap();

    // THEN every version of the secret, the restored one too, is under the key
    let history = ssm
        .get_parameter_history()
        .name(format!("{ROOT}/t1/billing/param_config_db_password"))
        .send()
        .await
        .unwrap();
    let keys: Vec<Option<&str>> = history.parameters().iter().map(|p| p.key_id()).collect();
    assert_eq!(keys, [Some(KEY); 3]);
    // AND the plain value names no key (Parameter Store refuses one there)
    let plain = ssm
        .get_parameter_history()
        .name(format!("{ROOT}/t1/billing/param_config_endpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.parameters()[0].key_id(), None);

    // AND a writer without a key leaves Parameter Store's default
    let unkeyed = item("t1", "billing", "param_config_api_token");
    ParameterWriter::new(ssm.clone(), ROOT)
        .put(
            &EntryKey::from(&unkeyed),
            &secret_text("t"),
            Expected::Absent,
            &alice(),
        )
        .await
        .unwrap();
    let default = ssm
        .get_parameter_history()
        .name(format!("{ROOT}/t1/billing/param_config_api_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(default.parameters()[0].key_id(), Some("alias/aws/ssm"));
}

/// A Parameter Store writer whose `If-Match` is a compare-and-swap: each key's
/// version lock in the table (as config-api and the CLI write).
macro_rules! locked_writer {
    ($aws:expr) => {
        ParameterWriter::new(aws_sdk_ssm::Client::new($aws), ROOT).with_version_locks(
            std::sync::Arc::new(DynamoDbVersionLocks::new(
                aws_sdk_dynamodb::Client::new($aws),
                TABLE,
            )),
        )
    };
}

#[tokio::test]
async fn of_twenty_parameter_store_writers_from_one_version_exactly_one_lands() {
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_table(&aws, TABLE).await.unwrap();
    let endpoint = item("t1", "billing", "param_config_endpoint");
    let reader = ParameterStore::new(aws_sdk_ssm::Client::new(&aws), ROOT);
    let text = |t: &str| NewValue::text(t, ValueKind::Plain);
    locked_writer!(&aws)
        .put(
            &EntryKey::from(&endpoint),
            &text("https://v1"),
            Expected::Absent,
            &alice(),
        )
        .await
        .unwrap();

    for round in 1..=3_i64 {
        // GIVEN twenty writers (each its own clients, as separate config-api
        // containers) that all read version `round`
        let writers: Vec<ParameterWriter> = (0..20).map(|_| locked_writer!(&aws)).collect();
        // WHEN they all write from it at once
        let results = futures::future::join_all(writers.iter().enumerate().map(|(i, writer)| {
            let (endpoint, value) = (
                &endpoint,
                text(&format!("https://round-{round}-writer-{i}")),
            );
            async move {
                writer
                    .put(
                        &EntryKey::from(endpoint),
                        &value,
                        Expected::Version(round),
                        &alice(),
                    )
                    .await
            }
        }))
        .await;
        // THEN exactly one lands, at the next version, and the other 19 get a conflict
        let landed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(landed.len(), 1, "round {round}: {results:?}");
        let winner = landed[0];
        assert_eq!(results[winner].as_ref().unwrap().version, round + 1);
        for (i, result) in results.iter().enumerate() {
            if i != winner {
                assert!(
                    matches!(result, Err(WriteError::Conflict { .. })),
                    "round {round}, writer {i}: {result:?}"
                );
            }
        }
        // AND the stored value is the winner's
        let stored = reader.get(&endpoint, ReadMode::Plain).await.unwrap();
        assert_eq!(
            plain(stored),
            (
                json!(format!("https://round-{round}-writer-{winner}")),
                Some(round + 1)
            )
        );
    }
}

#[tokio::test]
async fn a_parameter_store_delete_never_removes_a_version_written_after_its_check() {
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_table(&aws, TABLE).await.unwrap();
    let text = |t: &str| NewValue::text(t, ValueKind::Plain);
    for round in 0..10 {
        let key = EntryKey::from(&item(
            "t1",
            "billing",
            &format!("param_config_race_{round}"),
        ));
        let (deleter, putters) = (
            locked_writer!(&aws),
            [locked_writer!(&aws), locked_writer!(&aws)],
        );
        deleter
            .put(&key, &text("v1"), Expected::Absent, &alice())
            .await
            .unwrap();
        // GIVEN a DELETE and two updates, all from version 1, at once
        let actor = alice();
        let (deleted, updated) = tokio::join!(
            deleter.delete(&key, Expected::Version(1), &actor),
            futures::future::join_all(putters.iter().map(|writer| {
                let key = &key;
                async move {
                    writer
                        .put(key, &text("v2"), Expected::Version(1), &alice())
                        .await
                }
            }))
        );
        let current = aws_sdk_ssm::Client::new(&aws)
            .get_parameter()
            .name(format!("{ROOT}/t1/billing/param_config_race_{round}"))
            .send()
            .await
            .ok()
            .and_then(|o| o.parameter)
            .map(|p| p.version);
        let landed = updated.iter().filter(|r| r.is_ok()).count();
        // THEN exactly one of the three lands, and what it did is what stays:
        // a delete leaves nothing, an update its version (never deleted after)
        assert_eq!(
            usize::from(deleted.is_ok()) + landed,
            1,
            "round {round}: {deleted:?} {updated:?}"
        );
        if deleted.is_ok() {
            assert_eq!(current, None, "round {round}");
        } else {
            assert_eq!(current, Some(2), "round {round}: {deleted:?}");
        }
    }
}

#[tokio::test]
async fn dynamodb_keeps_booleans_and_numbers_typed_through_history_and_rollback() {
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_table(&aws, TABLE).await.unwrap();
    let writer = DynamoDbWriter::new(aws_sdk_dynamodb::Client::new(&aws), TABLE);
    let reader = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), TABLE);
    let flag = item("t1", "billing", "tenant_config_new_checkout");
    let entry = EntryKey::from(&flag);
    let value = |v: serde_json::Value| NewValue::json(&v, ValueKind::Plain).unwrap();

    // GIVEN a boolean, then a number, then text that looks like a boolean
    writer
        .put(&entry, &value(json!(true)), Expected::Absent, &alice())
        .await
        .unwrap();
    // THEN each reads back with its type (a flag is a boolean, not "true")
    assert_eq!(
        plain(reader.get(&flag, ReadMode::Plain).await.unwrap()),
        (json!(true), Some(1))
    );
    writer
        .put(&entry, &value(json!(0.25)), Expected::Version(1), &alice())
        .await
        .unwrap();
    assert_eq!(
        plain(reader.get(&flag, ReadMode::Plain).await.unwrap()).0,
        json!(0.25)
    );
    writer
        .put(
            &entry,
            &value(json!("true")),
            Expected::Version(2),
            &alice(),
        )
        .await
        .unwrap();
    assert_eq!(
        plain(reader.get(&flag, ReadMode::Plain).await.unwrap()).0,
        json!("true")
    );
    // AND in the history, and when an older version is restored
    let history = writer.history(&entry, 10).await.unwrap();
    let values: Vec<_> = history.iter().map(|h| h.value.clone().unwrap()).collect();
    assert_eq!(values, [json!("true"), json!(0.25), json!(true)]);
    writer
        .rollback(&entry, 1, Expected::Version(3), &alice())
        .await
        .unwrap();
    assert_eq!(
        plain(reader.get(&flag, ReadMode::Plain).await.unwrap()),
        (json!(true), Some(4))
    );
    // AND the whole-service listing serves the type too
    let listing = reader
        .list(
            &TenantId::parse("t1").unwrap(),
            &ServiceName::parse("billing").unwrap(),
        )
        .await
        .unwrap();
    let (_, found) = &listing.entries[0];
    assert_eq!(plain(Some(found.clone())).0, json!(true));
}
