//! The store adapters against moto server: real SDK calls, real wire format.

use std::collections::HashMap;

use serde_json::json;
use tenant_config_admin::values::{ParameterKind, put_item, put_parameter};
use tenant_config_local_stack::moto::MotoServer;
use tenant_config_local_stack::seed;
use tenant_config_shared::domain::{Found, ReadMode};
use tenant_config_shared::store::{ConfigStore, DynamoDbStore, ParameterStore};
use tenant_config_shared::{ConfigKey, ServiceName, StoreError, TenantId};
use tenant_config_testkit::values::item;

const TABLE: &str = "adapter-test";
const ROOT: &str = "/config-service";

fn plain_value(found: Option<Found>) -> serde_json::Value {
    match found {
        Some(Found::Plain(v)) => v.value.clone(),
        other => panic!("expected a plain value, got {other:?}"),
    }
}

#[tokio::test]
async fn dynamodb_adapter_reads_single_items_and_batches() {
    // GIVEN a table with items for two tenants
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_table(&aws, TABLE).await.unwrap();
    put_item(
        &aws,
        TABLE,
        &item("t1", "svc", "tenant_config_doc"),
        r#"{"a":[1,2]}"#,
    )
    .await
    .unwrap();
    // a second write: the version the reader sees is the writer's
    put_item(
        &aws,
        TABLE,
        &item("t1", "svc", "tenant_config_doc"),
        r#"{"a":[1,2]}"#,
    )
    .await
    .unwrap();
    put_item(
        &aws,
        TABLE,
        &item("t1", "svc", "tenant_config_text"),
        "hello",
    )
    .await
    .unwrap();
    put_item(
        &aws,
        TABLE,
        &item("t2", "svc", "tenant_config_only_t2"),
        "t2-value",
    )
    .await
    .unwrap();
    for i in 0..30 {
        put_item(
            &aws,
            TABLE,
            &item("t1", "bulk", &format!("tenant_config_{i}")),
            &i.to_string(),
        )
        .await
        .unwrap();
    }
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), TABLE);

    // WHEN single items are read THEN documents, text and version come back
    let doc = store
        .get(&item("t1", "svc", "tenant_config_doc"), ReadMode::Plain)
        .await
        .unwrap();
    match &doc {
        Some(Found::Plain(v)) => assert_eq!(v.version, Some(2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(plain_value(doc), json!({"a": [1, 2]}));
    assert_eq!(
        plain_value(
            store
                .get(&item("t1", "svc", "tenant_config_text"), ReadMode::Plain)
                .await
                .unwrap()
        ),
        json!("hello")
    );
    // AND another tenant's key is simply not there
    assert!(
        store
            .get(&item("t1", "svc", "tenant_config_only_t2"), ReadMode::Plain)
            .await
            .unwrap()
            .is_none()
    );

    // WHEN 40 keys (30 present) are batch-read THEN exactly the present ones come back
    let keys: Vec<ConfigKey> = (0..40)
        .map(|i| ConfigKey::parse(&format!("tenant_config_{i}")).unwrap())
        .collect();
    let found = store
        .get_many(
            &TenantId::parse("t1").unwrap(),
            &ServiceName::parse("bulk").unwrap(),
            &keys,
            ReadMode::Plain,
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 30);
    assert_eq!(plain_value(found.get(&keys[12]).cloned()), json!("12"));
    assert!(!found.contains_key(&keys[35]));

    // WHEN a whole service is listed THEN every key of that tenant's service
    // comes back in key order, and nothing of another tenant or service
    let t1 = TenantId::parse("t1").unwrap();
    let bulk = store
        .list(&t1, &ServiceName::parse("bulk").unwrap())
        .await
        .unwrap();
    assert_eq!(bulk.entries.len(), 30);
    assert!(!bulk.truncated);
    assert!(bulk.entries.windows(2).all(|w| w[0].0 < w[1].0));
    let svc = store
        .list(&t1, &ServiceName::parse("svc").unwrap())
        .await
        .unwrap();
    let names: Vec<&str> = svc.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["tenant_config_doc", "tenant_config_text"]);
    // AND a service that is a prefix of another does not pick up its keys
    assert!(
        store
            .list(&t1, &ServiceName::parse("bul").unwrap())
            .await
            .unwrap()
            .entries
            .is_empty()
    );
}

#[tokio::test]
async fn dynamodb_adapter_reports_a_missing_table_as_a_store_failure() {
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), "no-such-table");
    let err = store
        .get(&item("t1", "svc", "tenant_config_x"), ReadMode::Plain)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn parameter_store_adapter_reads_types_and_never_returns_ciphertext() {
    // GIVEN String, StringList and SecureString parameters
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    let put = |key: &'static str, value: &'static str, kind: ParameterKind| {
        let aws = aws.clone();
        async move {
            put_parameter(&aws, ROOT, &item("t1", "svc", key), value, kind)
                .await
                .unwrap()
        }
    };
    put(
        "param_config_url",
        "https://x.example",
        ParameterKind::String,
    )
    .await;
    put("param_config_list", "a,b,c", ParameterKind::StringList).await;
    put(
        "param_config_json",
        r#"{"enabled":true}"#,
        ParameterKind::String,
    )
    .await;
    put(
        "param_config_secret",
        "s3cr3t-value",
        ParameterKind::SecureString,
    )
    .await;
    let store = ParameterStore::new(aws_sdk_ssm::Client::new(&aws), ROOT);
    let get = |key: &str, mode| {
        let store = store.clone();
        let item = item("t1", "svc", key);
        async move { store.get(&item, mode).await.unwrap() }
    };

    assert_eq!(
        plain_value(get("param_config_url", ReadMode::Plain).await),
        json!("https://x.example")
    );
    assert_eq!(
        plain_value(get("param_config_list", ReadMode::Plain).await),
        json!(["a", "b", "c"])
    );
    assert_eq!(
        plain_value(get("param_config_json", ReadMode::Plain).await),
        json!({"enabled": true})
    );
    assert!(get("param_config_absent", ReadMode::Plain).await.is_none());

    // THEN a SecureString read without decryption carries no value at all
    assert_eq!(
        get("param_config_secret", ReadMode::Plain).await,
        Some(Found::Secret(None))
    );
    // AND with decryption it is the clear value
    match get("param_config_secret", ReadMode::Decrypt).await {
        Some(Found::Secret(Some(secret))) => assert_eq!(secret.expose(), &json!("s3cr3t-value")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn parameter_store_adapter_batches_in_chunks_of_ten() {
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    for i in 0..23 {
        put_parameter(
            &aws,
            ROOT,
            &item("t1", "bulk", &format!("param_config_{i}")),
            &format!("v{i}"),
            ParameterKind::String,
        )
        .await
        .unwrap();
    }
    put_parameter(
        &aws,
        ROOT,
        &item("t1", "bulk", "param_config_secret"),
        "x",
        ParameterKind::SecureString,
    )
    .await
    .unwrap();
    let store = ParameterStore::new(aws_sdk_ssm::Client::new(&aws), ROOT);
    let mut keys: Vec<ConfigKey> = (0..27)
        .map(|i| ConfigKey::parse(&format!("param_config_{i}")).unwrap())
        .collect();
    keys.push(ConfigKey::parse("param_config_secret").unwrap());
    let found: HashMap<ConfigKey, Found> = store
        .get_many(
            &TenantId::parse("t1").unwrap(),
            &ServiceName::parse("bulk").unwrap(),
            &keys,
            ReadMode::Plain,
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 24, "23 strings and the secret");
    assert_eq!(plain_value(found.get(&keys[22]).cloned()), json!("v22"));
    assert!(!found.contains_key(&keys[25]));
    assert_eq!(found.get(&keys[27]), Some(&Found::Secret(None)));

    // WHEN the whole service is listed (three pages of ten) THEN all 24
    // come back in key order, the SecureString without its ciphertext
    let listing = store
        .list(
            &TenantId::parse("t1").unwrap(),
            &ServiceName::parse("bulk").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(listing.entries.len(), 24);
    assert!(listing.entries.windows(2).all(|w| w[0].0 < w[1].0));
    let secret = listing
        .entries
        .iter()
        .find(|(k, _)| k.as_str() == "param_config_secret")
        .map(|(_, found)| found);
    assert_eq!(secret, Some(&Found::Secret(None)));
    // AND another tenant's path lists nothing
    assert!(
        store
            .list(
                &TenantId::parse("t2").unwrap(),
                &ServiceName::parse("bulk").unwrap()
            )
            .await
            .unwrap()
            .entries
            .is_empty()
    );
}

#[tokio::test]
async fn one_key_of_many_tenants_is_read_in_batches_from_both_stores() {
    // GIVEN 230 tenants, of which every third holds its own value of a key
    // in each store (a SecureString among them in Parameter Store)
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_table(&aws, TABLE).await.unwrap();
    let tenants: Vec<TenantId> = (0..230)
        .map(|n| TenantId::parse(&format!("across-{n:03}")).unwrap())
        .collect();
    for (n, tenant) in tenants.iter().enumerate().filter(|(n, _)| n % 3 == 0) {
        let tenant = tenant.as_str();
        put_item(
            &aws,
            TABLE,
            &item(tenant, "svc", "tenant_config_limit"),
            &format!(r#"{{"n":{n}}}"#),
        )
        .await
        .unwrap();
        let kind = if n == 3 {
            ParameterKind::SecureString
        } else {
            ParameterKind::String
        };
        put_parameter(
            &aws,
            ROOT,
            &item(tenant, "svc", "param_config_limit"),
            &format!("p{n}"),
            kind,
        )
        .await
        .unwrap();
    }
    // a value of another key is not read as this one's
    put_item(
        &aws,
        TABLE,
        &item("across-001", "svc", "tenant_config_other"),
        "x",
    )
    .await
    .unwrap();
    let service = ServiceName::parse("svc").unwrap();

    // WHEN the key is read across every tenant from DynamoDB
    let dynamodb = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), TABLE);
    let key = ConfigKey::parse("tenant_config_limit").unwrap();
    let across = dynamodb.get_across(&tenants, &service, &key).await.unwrap();
    // THEN exactly the holders come back, each with its own value, in three
    // BatchGetItem calls (100 keys each), not 230 reads
    assert_eq!(across.calls, 3);
    assert_eq!(across.found.len(), 77);
    assert_eq!(
        plain_value(across.found.get(&tenants[0]).cloned()),
        json!({"n": 0})
    );
    assert_eq!(
        plain_value(across.found.get(&tenants[228]).cloned()),
        json!({"n": 228})
    );
    assert!(!across.found.contains_key(&tenants[1]));

    // WHEN the same is asked of Parameter Store
    let parameters = ParameterStore::new(aws_sdk_ssm::Client::new(&aws), ROOT);
    let key = ConfigKey::parse("param_config_limit").unwrap();
    let across = parameters
        .get_across(&tenants, &service, &key)
        .await
        .unwrap();
    // THEN in 23 GetParameters calls (10 names each), the SecureString by
    // its type only, never its value
    assert_eq!(across.calls, 23);
    assert_eq!(across.found.len(), 77);
    assert_eq!(
        plain_value(across.found.get(&tenants[6]).cloned()),
        json!("p6")
    );
    assert_eq!(across.found.get(&tenants[3]), Some(&Found::Secret(None)));
    assert!(!across.found.contains_key(&tenants[229]));
}

#[tokio::test]
async fn the_journal_table_pages_a_batch_that_shares_one_millisecond_by_position() {
    use tenant_config_shared::refresh::change::ChangeRecord;
    use tenant_config_shared::refresh::journal::ChangeJournal;
    use tenant_config_shared::refresh::journal_table::JournalTable;
    use tenant_config_shared::refresh::proto::Operation;
    // GIVEN the journal table in moto and five changes journaled in one batch
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_journal_table(&aws, "journal-test")
        .await
        .unwrap();
    let journal = JournalTable::new(aws_sdk_dynamodb::Client::new(&aws), "journal-test");
    let changes: Vec<ChangeRecord> = (0..5)
        .map(|i| ChangeRecord {
            subject: tenant_config_shared::refresh::change::Subject::Entry(item(
                "tenant-a",
                "billing",
                &format!("tenant_config_k{i}"),
            )),
            store: tenant_config_shared::StoreKind::DynamoDb,
            operation: Operation::Update,
            change_id: format!("c{i}"),
            time_unix_ms: 0,
            audit: Default::default(),
            value_type: None,
        })
        .collect();
    let appended = journal.append(&changes).await.unwrap();
    assert!(
        appended
            .iter()
            .all(|e| e.journaled_at_ms == appended[0].journaled_at_ms)
    );
    // WHEN it is read in pages of two, each after the last one's last entry
    let mut pages = vec![journal.since(0, 2).await.unwrap()];
    while pages.last().unwrap().len() == 2 {
        let last = pages.last().unwrap().last().unwrap().position.clone();
        pages.push(journal.after(&last, 2).await.unwrap());
    }
    // THEN every change comes once, in order, though all share one millisecond
    let read: Vec<String> = pages
        .iter()
        .flatten()
        .map(|e| e.change.change_id.clone())
        .collect();
    assert_eq!(read, ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
}

#[tokio::test]
async fn the_tenant_registry_lands_one_of_concurrent_writers_and_refuses_a_malformed_record() {
    use tenant_config_shared::TierName;
    use tenant_config_shared::layers::registry::{
        DynamoDbRegistry, REGISTRY_PARTITION, TenantRecord, TenantRegistry, registry_sort_key,
    };
    // GIVEN the config table with no registry records
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_table(&aws, TABLE).await.unwrap();
    let registry = DynamoDbRegistry::new(aws_sdk_dynamodb::Client::new(&aws), TABLE);
    let tenant = TenantId::parse("t1").unwrap();
    assert_eq!(registry.get(&tenant).await.unwrap(), None);
    // WHEN ten administrators register the tenant at once, each in another tier
    let writes = (0..10).map(|i| {
        let (registry, tenant) = (registry.clone(), tenant.clone());
        async move {
            let record = TenantRecord {
                tier: Some(TierName::parse(&format!("tier-{i}")).unwrap()),
                active: true,
            };
            (
                i,
                registry
                    .put(&tenant, &record, None, &format!("admin-{i}"), 1_000 + i)
                    .await
                    .unwrap(),
            )
        }
    });
    let landed: Vec<(i64, i64)> = futures::future::join_all(writes)
        .await
        .into_iter()
        .filter_map(|(i, version)| version.map(|v| (i, v)))
        .collect();
    // THEN exactly one lands, as version 1, and the stored record is its
    assert_eq!(landed.len(), 1, "{landed:?}");
    let (winner, version) = landed[0];
    assert_eq!(version, 1);
    let stored = registry.get(&tenant).await.unwrap().unwrap();
    assert_eq!(
        stored.record.tier.as_ref().map(|t| t.to_string()),
        Some(format!("tier-{winner}"))
    );
    assert_eq!(stored.updated_by, Some(format!("admin-{winner}")));
    // AND a change from version 1 lands as 2; one from a stale version does not
    let inactive = TenantRecord {
        tier: None,
        active: false,
    };
    assert_eq!(
        registry
            .put(&tenant, &inactive, Some(1), "p", 2)
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        registry
            .put(&tenant, &inactive, Some(1), "p", 3)
            .await
            .unwrap(),
        None
    );
    // (a version that cannot exist is a lost race too, as in memory)
    assert_eq!(
        registry
            .put(&tenant, &inactive, Some(i64::MAX), "p", 3)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        registry.get(&tenant).await.unwrap().unwrap().record,
        inactive
    );
    // AND the counts and tier members followed every landed write only: the
    // tenant left its tier's members and counts as it became inactive
    let counts = registry.counts().await.unwrap();
    assert!(counts.active.values().all(|n| *n == 0), "{counts:?}");
    assert_eq!(counts.inactive.get(&None), Some(&1), "{counts:?}");
    let winner_tier = TierName::parse(&format!("tier-{winner}")).unwrap();
    assert!(
        registry
            .members(Some(&winner_tier), 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // AND an import registers many at once, counted and listed by tier
    let gold = TierName::parse("gold").unwrap();
    let imported: Vec<(TenantId, TenantRecord)> = (0..30)
        .map(|n| {
            (
                TenantId::parse(&format!("imported-{n:02}")).unwrap(),
                TenantRecord {
                    tier: (n % 2 == 0).then(|| gold.clone()),
                    active: true,
                },
            )
        })
        .collect();
    registry.import(&imported, "op", 5).await.unwrap();
    let counts = registry.counts().await.unwrap();
    assert_eq!(counts.active.get(&Some(gold.clone())), Some(&15));
    assert_eq!(counts.active.get(&None), Some(&15));
    let members = registry.members(Some(&gold), 5).await.unwrap().items;
    assert_eq!(
        members.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        [
            "imported-00",
            "imported-02",
            "imported-04",
            "imported-06",
            "imported-08"
        ]
    );
    let many = registry
        .get_many(&[imported[1].0.clone(), TenantId::parse("nobody").unwrap()])
        .await
        .unwrap();
    assert_eq!(many.items.len(), 1);
    assert_eq!(many.items[0].1.record, imported[1].1);
    // AND a record written by hand without `active` is a store failure, never a guess
    aws_sdk_dynamodb::Client::new(&aws)
        .put_item()
        .table_name(TABLE)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(REGISTRY_PARTITION.into()),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(registry_sort_key(&tenant)),
        )
        .item(
            "version",
            aws_sdk_dynamodb::types::AttributeValue::N("3".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(matches!(
        registry.get(&tenant).await,
        Err(StoreError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn rollouts_are_stored_one_live_per_entry_and_updated_only_over_the_revision_read() {
    use tenant_config_shared::rollouts::plan::{Progress, State};
    use tenant_config_shared::rollouts::record::{Rollout, RolloutRequest};
    use tenant_config_shared::rollouts::store::{DynamoDbRolloutStore, RolloutStore, Written};
    // GIVEN the config table with no rollouts
    let moto = MotoServer::start().await.unwrap();
    let aws = moto.sdk_config().await;
    seed::create_table(&aws, TABLE).await.unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let store = DynamoDbRolloutStore::new(dynamodb.clone(), TABLE);
    let request = RolloutRequest::parse(&json!({
        "layer": "global", "service": "billing", "key": "tenant_config_limits",
        "value": {"max": 10}, "steps": [{"canary": ["t1"]}, {"percent": 50}, "everyone"],
        "bake_seconds": 30, "alarms": ["errors-high"]
    }))
    .unwrap();
    let rollout = |id: &str, state: State, step: usize, revision: u64| {
        let progress = Progress {
            state,
            step,
            since_ms: 1_000 * revision as i64,
        };
        Rollout::new(
            id,
            request.clone(),
            progress,
            "platform-admin",
            1_000,
            revision,
        )
    };
    // WHEN a rollout of the entry is created
    let first = rollout("r1", State::Rolling, 0, 1);
    assert_eq!(store.create(&first).await.unwrap(), Written::Stored);
    // THEN a second rollout of the same entry is refused, and readers see the one
    let second = rollout("r2", State::Rolling, 0, 1);
    assert_eq!(store.create(&second).await.unwrap(), Written::Conflict);
    assert_eq!(store.live().await.unwrap(), vec![first.clone()]);
    assert_eq!(store.get("r2").await.unwrap(), None);
    // WHEN a driver and an administrator both change it from revision 1
    let baking = rollout("r1", State::Baking, 0, 2);
    let paused = rollout("r1", State::Paused, 0, 2);
    // THEN only the first lands, on the record and on its live copy alike
    assert_eq!(store.update(&baking).await.unwrap(), Written::Stored);
    assert_eq!(store.update(&paused).await.unwrap(), Written::Conflict);
    assert_eq!(store.live().await.unwrap(), vec![baking.clone()]);
    assert_eq!(store.get("r1").await.unwrap(), Some(baking));
    // WHEN it ends
    let done = rollout("r1", State::Done, 2, 3);
    assert_eq!(store.update(&done).await.unwrap(), Written::Stored);
    // THEN readers no longer see it, its record stays, and the entry takes a new one
    assert!(store.live().await.unwrap().is_empty());
    assert_eq!(store.get("r1").await.unwrap(), Some(done));
    assert_eq!(store.create(&second).await.unwrap(), Written::Stored);
    assert_eq!(store.live().await.unwrap(), vec![second.clone()]);
    // AND a live item no reader can read is skipped, not an error for every read
    dynamodb
        .put_item()
        .table_name(TABLE)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("ROLLOUTS".to_owned()),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(
                "global#billing#tenant_config_other".to_owned(),
            ),
        )
        .item(
            "record",
            aws_sdk_dynamodb::types::AttributeValue::S(
                "{\"written by\": \"a newer version\"}".to_owned(),
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(store.live().await.unwrap(), vec![second]);
}
