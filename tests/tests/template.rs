//! Security properties of `template.yaml` that a later edit must not lose:
//! a stage cache keyed by the caller's identity and encrypted, a secure route
//! that is never cached, an immutable tenant attribute the app cannot write,
//! and IAM scoped to the parameter root.

use serde_norway::Value;

use crate::cfn::{Resolved, template};

fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    let resource = &template["Resources"][name];
    assert!(!resource.is_null(), "resource {name} exists");
    &resource["Properties"]
}

/// The request parameters of one Api event, as (name, caching) pairs.
fn request_parameters(template: &Value, event: &str) -> Vec<(String, bool)> {
    let event = &resource(template, "ConfigApiFunction")["Events"][event]["Properties"];
    event["RequestParameters"]
        .as_sequence()
        .expect("RequestParameters is a list")
        .iter()
        .flat_map(|entry| entry.as_mapping().into_iter().flatten())
        .map(|(name, settings)| {
            (
                name.as_str().unwrap_or_default().to_owned(),
                settings["Caching"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn event_path(template: &Value, event: &str) -> String {
    resource(template, "ConfigApiFunction")["Events"][event]["Properties"]["Path"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// API Gateway's escaped resource path for a route (`/` → `~1`).
fn method_setting_path(path: &str) -> String {
    format!("/{}", path.replace('/', "~1"))
}

fn method_setting<'a>(template: &'a Value, path: &str) -> &'a Value {
    resource(template, "ConfigApi")["MethodSettings"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["ResourcePath"].as_str() == Some(&method_setting_path(path)))
        .unwrap_or_else(|| panic!("a method setting for {path}"))
}

#[test]
fn the_stage_cache_key_includes_the_callers_identity_on_every_cached_route() {
    let template = template();
    for event in ["GetConfig", "GetConfigs"] {
        let parameters = request_parameters(&template, event);
        assert!(
            parameters.contains(&("method.request.header.Authorization".to_owned(), true)),
            "{event} must cache by Authorization: {parameters:?}"
        );
        for (name, caching) in &parameters {
            if name.starts_with("method.request.path.") {
                assert!(
                    caching,
                    "{event}: path parameter {name} must be in the cache key"
                );
            }
        }
        let setting = method_setting(&template, &event_path(&template, event));
        assert_eq!(
            setting["CachingEnabled"].as_bool(),
            Some(true),
            "{event} is cached"
        );
        assert_eq!(
            setting["CacheDataEncrypted"].as_bool(),
            Some(true),
            "{event} cache is encrypted"
        );
    }
    assert!(
        request_parameters(&template, "GetConfigs")
            .contains(&("method.request.querystring.keys".to_owned(), true)),
        "the batch route caches by its keys"
    );
    assert_eq!(
        resource(&template, "ConfigApi")["CacheClusterEnabled"].as_bool(),
        Some(true)
    );
}

#[test]
fn every_cached_method_setting_is_encrypted_and_the_default_caches_nothing() {
    let template = template();
    for setting in resource(&template, "ConfigApi")["MethodSettings"]
        .as_sequence()
        .unwrap()
    {
        if setting["ResourcePath"].as_str() == Some("/*") {
            assert_eq!(
                setting["CachingEnabled"].as_bool(),
                Some(false),
                "default is uncached"
            );
        }
        if setting["CachingEnabled"].as_bool() == Some(true) {
            assert_eq!(
                setting["CacheDataEncrypted"].as_bool(),
                Some(true),
                "{setting:?}"
            );
        }
    }
}

#[test]
fn every_method_setting_repeats_metrics_and_throttling_and_the_patch_knows_every_cached_method() {
    let template = template();
    let settings = resource(&template, "ConfigApi")["MethodSettings"]
        .as_sequence()
        .unwrap();
    // A method's own settings replace the stage-wide ones for that method.
    for setting in settings {
        assert_eq!(
            setting["MetricsEnabled"].as_bool(),
            Some(true),
            "{setting:?}"
        );
        assert_eq!(
            strings(&setting["ThrottlingRateLimit"]),
            vec!["ThrottlingRateLimit"],
            "{setting:?}"
        );
        assert_eq!(
            strings(&setting["ThrottlingBurstLimit"]),
            vec!["ThrottlingBurstLimit"],
            "{setting:?}"
        );
    }
    // `tenant-config-admin stage-settings` patches exactly the cached methods.
    let mut cached: Vec<String> = settings
        .iter()
        .filter(|s| s["CachingEnabled"].as_bool() == Some(true))
        .map(|s| {
            format!(
                "{}/{}",
                s["ResourcePath"].as_str().unwrap(),
                s["HttpMethod"].as_str().unwrap()
            )
        })
        .collect();
    let mut patched: Vec<String> = tenant_config_shared::stage_settings::CACHED_METHODS
        .iter()
        .map(|(r, m)| tenant_config_shared::stage_settings::method_settings_path(r, m))
        .collect();
    cached.sort();
    patched.sort();
    assert_eq!(cached, patched);
}

#[test]
fn the_authorizer_checks_every_request_so_no_cached_answer_outlives_its_token() {
    let template = template();
    let authorizer = &resource(&template, "ConfigApi")["Auth"]["Authorizers"]["CognitoAuthorizer"];
    assert_eq!(
        authorizer["Identity"]["ReauthorizeEvery"].as_u64(),
        Some(0),
        "{authorizer:?}"
    );
}

#[test]
fn config_refresh_pushes_only_inside_the_agents_networks_and_alarms_on_strangers_and_jumps() {
    let template = template();
    let refresh = resource(&template, "ConfigRefreshFunction");
    assert_eq!(
        strings(&refresh["Environment"]["Variables"]["AGENT_NETWORKS"]),
        vec!["AgentNetworks"]
    );
    // AND agents are called over TLS only: config-refresh reads the CA from
    // the path agent-tls writes to (the output), may read that parameter, and
    // no function is told plaintext is allowed
    let ca = format!(
        "{}/ca",
        strings(&template["Outputs"]["AgentTlsParameterPath"]["Value"])[0]
    );
    assert_eq!(
        strings(&refresh["Environment"]["Variables"]["REFRESH_TLS_CA_PARAMETER"]),
        vec![ca.clone()]
    );
    assert!(
        strings(&refresh["Policies"])
            .iter()
            .any(|resource| resource.ends_with(&format!(":parameter{ca}"))),
        "config-refresh may not read {ca}"
    );
    assert!(
        !serde_norway::to_string(&template["Resources"])
            .unwrap()
            .contains("REFRESH_PLAINTEXT")
    );
    let default = template["Parameters"]["AgentNetworks"]["Default"]
        .as_str()
        .unwrap();
    let networks = tenant_config_shared::refresh::networks::AgentNetworks::parse(default).unwrap();
    assert!(
        !networks.allows("52.94.0.1".parse().unwrap()),
        "no public address by default"
    );
    let ignored = resource(&template, "RefreshIgnoredAgentsAlarm");
    assert_eq!(ignored["MetricName"].as_str(), Some("IgnoredInstances"));
    assert_eq!(ignored["Threshold"].as_u64(), Some(0));
    let jump = resource(&template, "RefreshAgentCountJumpAlarm");
    let metrics = jump["Metrics"].as_sequence().unwrap();
    assert!(
        metrics.iter().any(
            |m| m["MetricStat"]["Metric"]["MetricName"].as_str() == Some("DiscoveredInstances")
        )
    );
    assert!(
        metrics
            .iter()
            .any(|m| m["Expression"].as_str() == Some("DIFF(discovered)")
                && m["ReturnData"].as_bool() == Some(true))
    );
}

#[test]
fn by_default_the_platform_registers_agents_and_the_agent_role_cannot() {
    let template = template();
    assert_eq!(
        template["Parameters"]["AgentRegistration"]["Default"].as_str(),
        Some("platform")
    );
    let statements = resource(&template, "AgentTaskPolicy")["PolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap();
    for statement in statements {
        let registers = strings(statement)
            .iter()
            .any(|s| s.starts_with("servicediscovery:Register"));
        if !registers {
            continue;
        }
        // Only inside `!If [AgentsRegisterThemselves, …, NoValue]`.
        let Value::Tagged(tagged) = statement else {
            panic!("unconditional registration: {statement:?}");
        };
        assert_eq!(tagged.tag.to_string(), "!If");
        assert_eq!(tagged.value[0].as_str(), Some("AgentsRegisterThemselves"));
    }
    assert_eq!(
        strings(&template["Conditions"]["AgentsRegisterThemselves"]),
        vec!["AgentRegistration", "self"]
    );
}

#[test]
fn only_config_refresh_can_read_the_signing_key_and_every_decrypt_is_scoped_by_parameter() {
    let template = template();
    let key_parameter = "RefreshKeyParameterName";
    for (owner, statement) in statements(&template) {
        let resources = strings(&statement["Resource"]);
        let names_key = resources.iter().any(|r| r.contains(key_parameter))
            || strings(&statement["Condition"])
                .iter()
                .any(|c| c.contains(key_parameter));
        if names_key {
            assert_eq!(
                owner, "ConfigRefreshFunction",
                "{owner} can reach the signing key"
            );
        }
        let actions = strings(&statement["Action"]);
        if actions.iter().any(|a| a == "kms:Decrypt") && !seals_agent_snapshots(&statement) {
            let context = strings(&statement["Condition"]);
            assert!(
                context.iter().any(|c| c.contains("parameter${")),
                "{owner}: kms:Decrypt without an encryption context condition: {statement:?}"
            );
        }
    }
}

#[test]
fn reads_and_writes_assume_separate_tenant_roles_and_config_api_keeps_no_tenant_data_access() {
    // (What each role can then do is the IAM matrix's: iam_matrix.rs.)
    let template = template();
    assert_eq!(
        template["Parameters"]["VendTenantCredentials"]["Default"].as_str(),
        Some("true")
    );
    // GIVEN the defaults THEN config-api reads with the read role and writes
    // with the write role
    let stack = Resolved::new(template.clone(), &[]);
    let variables = |stack: &Resolved| {
        stack
            .resolve(&resource(&stack.template, "ConfigApiFunction")["Environment"]["Variables"])
            .unwrap()
    };
    let env = variables(&stack);
    assert_eq!(env["TENANT_ROLE_ARN"], stack.arn("TenantReadRole"));
    assert_eq!(env["TENANT_WRITE_ROLE_ARN"], stack.arn("TenantWriteRole"));
    // AND without tenant credentials there is neither (its own role reads)
    let own = Resolved::new(
        template.clone(),
        &[("VendTenantCredentials", "false".into())],
    );
    let env = variables(&own);
    assert!(env.get("TENANT_ROLE_ARN").is_none() && env.get("TENANT_WRITE_ROLE_ARN").is_none());
    // AND with them, config-api's own policies reach only the schemas, the
    // service grants, the journal, and (read only) the shared layers and
    // the registrations
    for policy in stack.identity_policies("ConfigApiFunctionRole") {
        for statement in policy["Statement"].as_array().unwrap() {
            let sid = statement["Sid"].as_str().unwrap_or_default();
            assert!(
                [
                    "ReadSchemasServiceGrantsAndGuardrails",
                    "CatchUpFromTheJournal",
                    "ReadSharedLayers",
                    "ReadTenantRegistrations",
                    "ReadSharedLayerParameters",
                    "ConfirmAdministratorsWithThePool",
                    "AskForAStageCacheFlushAfterDegradedAnswers",
                    "AssumeTheTenantRolesTaggedWithTheCallersTenant",
                    "AssumeThePlatformWriteRole"
                ]
                .contains(&sid),
                "config-api statement {sid} with tenant credentials"
            );
        }
    }
}

#[test]
fn the_secure_route_is_never_cached() {
    let template = template();
    let path = event_path(&template, "GetSecure");
    assert_eq!(path, "/v1/secure/{service}/{key}");
    assert_eq!(
        method_setting(&template, &path)["CachingEnabled"].as_bool(),
        Some(false)
    );
    for (name, caching) in request_parameters(&template, "GetSecure") {
        assert!(
            !caching,
            "nothing of the secure route is a cache key ({name})"
        );
    }
}

#[test]
fn the_tenant_attribute_is_immutable_and_the_app_cannot_write_it() {
    let template = template();
    let schema = resource(&template, "UserPool")["Schema"]
        .as_sequence()
        .unwrap();
    let tenant = schema
        .iter()
        .find(|a| a["Name"].as_str() == Some("tenantId"))
        .expect("a tenantId attribute");
    assert_eq!(tenant["Mutable"].as_bool(), Some(false));
    let client = resource(&template, "UserPoolClient");
    assert_eq!(
        client["GenerateSecret"].as_bool(),
        Some(false),
        "public client has no secret"
    );
    let writable: Vec<&str> = client["WriteAttributes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!writable.contains(&"custom:tenantId"), "{writable:?}");
}

/// Every IAM statement of the template that grants (a Deny takes away, so the checks of what
/// a role may do skip it), with the resource it belongs to.
fn statements(template: &Value) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        let name = name.as_str().unwrap_or_default().to_owned();
        let properties = &resource["Properties"];
        let documents = properties["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&properties["PolicyDocument"]));
        for document in documents {
            for statement in document["Statement"].as_sequence().into_iter().flatten() {
                let statement = when_enabled(statement);
                if statement["Effect"].as_str() != Some("Deny") {
                    found.push((name.clone(), statement.clone()));
                }
            }
        }
    }
    found
}

/// A statement behind `!If [condition, statement, AWS::NoValue]` is checked
/// as the statement it is when the condition holds.
fn when_enabled(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) if tagged.tag == "If" => &tagged.value[1],
        other => other,
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        Value::Mapping(map) => map.values().flat_map(strings).collect(),
        Value::Tagged(tagged) => strings(&tagged.value),
        _ => Vec::new(),
    }
}

#[test]
fn iam_is_scoped_to_the_parameter_root_and_named_resources() {
    let template = template();
    let all = statements(&template);
    assert!(all.len() >= 8, "statements were found: {}", all.len());
    for (owner, statement) in &all {
        let actions = strings(&statement["Action"]);
        assert!(
            !actions.iter().any(|a| a == "*" || a.ends_with(":*")),
            "{owner}: wildcard action {actions:?}"
        );
        if statement["Principal"].is_null() {
            let resources = strings(&statement["Resource"]);
            if resources.iter().any(|r| r == "*") {
                assert_eq!(
                    actions,
                    vec!["servicediscovery:DiscoverInstances"],
                    "{owner}: only DiscoverInstances may use *"
                );
                assert!(
                    !statement["Condition"].is_null(),
                    "{owner}: * is narrowed by a condition"
                );
            }
        }
        if actions.iter().any(|a| a.starts_with("ssm:")) {
            for resource in strings(&statement["Resource"]) {
                assert!(
                    resource.ends_with("parameter${ParameterRoot}/*")
                        || resource.ends_with("parameter${ParameterRoot}/_global/*")
                        || resource.ends_with("parameter${ParameterRoot}/_tiers/*")
                        || resource.ends_with("parameter${RefreshKeyParameterName}")
                        || resource
                            .ends_with("parameter/tenant-config/${AWS::StackName}/agents/tls/ca"),
                    "{owner}: SSM access outside the root: {resource}"
                );
            }
        }
        if actions.iter().any(|a| a == "kms:Decrypt") && !seals_agent_snapshots(statement) {
            let condition = strings(&statement["Condition"]);
            assert!(
                condition
                    .iter()
                    .any(|c| c == "ssm.${AWS::Region}.amazonaws.com"),
                "{owner}: kms:Decrypt only via SSM"
            );
        }
    }
}

#[test]
fn parameter_changes_reach_config_refresh_with_retries_and_a_dead_letter_queue() {
    let template = template();
    let rule = resource(&template, "ParameterChangeRule");
    let pattern = &rule["EventPattern"];
    assert_eq!(strings(&pattern["source"]), vec!["aws.ssm"]);
    assert_eq!(
        strings(&pattern["detail-type"]),
        vec!["Parameter Store Change"]
    );
    assert_eq!(
        strings(&pattern["detail"]["name"]),
        vec!["${ParameterRoot}/"]
    );
    let mut operations = strings(&pattern["detail"]["operation"]);
    operations.sort();
    assert_eq!(
        operations,
        vec!["Create", "Delete", "LabelParameterVersion", "Update"]
    );
    let target = &rule["Targets"][0];
    assert!(!target["RetryPolicy"].is_null());
    assert!(!target["DeadLetterConfig"]["Arn"].is_null());
    let function = resource(&template, "ConfigRefreshFunction");
    assert!(!function["EventInvokeConfig"]["DestinationConfig"]["OnFailure"].is_null());
    let table = resource(&template, "ConfigTable");
    assert_eq!(
        table["SSESpecification"]["SSEEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
}

#[test]
fn dynamodb_changes_reach_config_refresh_with_images_for_the_audit_and_partial_batch_retries() {
    let template = template();
    let table = resource(&template, "ConfigTable");
    assert_eq!(
        table["StreamSpecification"]["StreamViewType"].as_str(),
        Some("NEW_AND_OLD_IMAGES"),
        "the journal's audit reads the writer's attributes from both images"
    );
    let mapping = resource(&template, "ConfigStreamMapping");
    assert_eq!(
        strings(&mapping["EventSourceArn"]),
        vec!["ConfigTable.StreamArn"]
    );
    assert_eq!(
        strings(&mapping["FunctionName"]),
        vec!["ConfigRefreshFunction"]
    );
    assert_eq!(
        strings(&mapping["FunctionResponseTypes"]),
        vec!["ReportBatchItemFailures"]
    );
    assert_eq!(mapping["BisectBatchOnFunctionError"].as_bool(), Some(true));
    assert!(
        mapping["MaximumRetryAttempts"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert_eq!(
        strings(&mapping["DestinationConfig"]["OnFailure"]["Destination"]),
        vec!["RefreshDlq.Arn"]
    );
    let filters: Vec<serde_json::Value> = mapping["FilterCriteria"]["Filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| serde_json::from_str(&strings(&f["Pattern"])[0]).unwrap())
        .collect();
    assert_eq!(
        filters,
        vec![
            serde_json::json!({"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "CONFIG#"}]}}}}),
            serde_json::json!({"eventName": ["INSERT"], "dynamodb": {
                "Keys": {"sk": {"S": [{"prefix": "HISTORY#"}]}},
                "NewImage": {"deleted": {"BOOL": [true]}}}}),
            serde_json::json!({"dynamodb": {"Keys": {"pk": {"S": ["REGISTRY"]}}}}),
            serde_json::json!({"dynamodb": {"Keys": {"pk": {"S": ["ROLLOUTS"]}}}}),
        ],
        "only configuration items (of every layer), delete tombstones, registrations and live rollouts are delivered"
    );
    // Of the configuration table, the function reads that one stream and
    // writes only the override index's marks (the journal is checked below).
    let refresh_statements: Vec<Value> = statements(&template)
        .into_iter()
        .filter(|(owner, _)| owner == "ConfigRefreshFunction")
        .map(|(_, statement)| statement)
        .collect();
    for statement in &refresh_statements {
        let actions = strings(&statement["Action"]);
        let resources = strings(&statement["Resource"]);
        if resources
            .iter()
            .any(|r| r.starts_with("ChangeJournalTable"))
        {
            continue;
        }
        if resources == vec!["ConfigTable.Arn"] {
            assert_eq!(actions, vec!["dynamodb:PutItem"], "{statement:?}");
            assert_eq!(
                strings(&statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]),
                vec!["OVERRIDES#*"],
                "config-refresh writes only the override index: {statement:?}"
            );
            continue;
        }
        if actions.iter().any(|a| a.starts_with("dynamodb:")) {
            assert!(
                resources == vec!["ConfigTable.StreamArn"]
                    || resources == vec!["${ConfigTable.Arn}/stream/*"],
                "{actions:?} on {resources:?}"
            );
            assert!(
                actions.iter().all(|a| matches!(
                    a.as_str(),
                    "dynamodb:DescribeStream"
                        | "dynamodb:GetRecords"
                        | "dynamodb:GetShardIterator"
                        | "dynamodb:ListStreams"
                )),
                "{actions:?}"
            );
        }
    }
}

#[test]
fn the_journal_is_written_only_by_config_refresh_and_only_queried_by_readers() {
    let template = template();
    let journal = resource(&template, "ChangeJournalTable");
    assert_eq!(
        journal["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some("expires_at")
    );
    assert_eq!(
        journal["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
    for function in ["ConfigApiFunction", "ConfigRefreshFunction"] {
        assert_eq!(
            strings(
                &resource(&template, function)["Environment"]["Variables"]["JOURNAL_TABLE_NAME"]
            ),
            vec!["ChangeJournalTable"],
            "{function} knows the journal"
        );
    }
    let mut journal_access: Vec<(String, Vec<String>)> = statements(&template)
        .into_iter()
        .filter(|(_, statement)| {
            strings(&statement["Resource"])
                .iter()
                .any(|r| r.starts_with("ChangeJournalTable"))
        })
        .map(|(owner, statement)| (owner, strings(&statement["Action"])))
        .collect();
    journal_access.sort();
    assert_eq!(
        journal_access,
        vec![
            (
                "AgentTaskPolicy".to_owned(),
                vec!["dynamodb:Query".to_owned()]
            ),
            (
                "ConfigApiFunction".to_owned(),
                vec!["dynamodb:Query".to_owned()]
            ),
            (
                "ConfigRefreshFunction".to_owned(),
                vec!["dynamodb:BatchWriteItem".to_owned()]
            ),
            // The sequence counter, in its own partition only.
            (
                "ConfigRefreshFunction".to_owned(),
                vec![
                    "dynamodb:UpdateItem".to_owned(),
                    "dynamodb:GetItem".to_owned()
                ]
            ),
        ]
    );
    let counter = statements(&template)
        .into_iter()
        .find(|(_, statement)| statement["Sid"].as_str() == Some("AllocateSequenceNumbers"))
        .expect("the sequence counter's statement")
        .1;
    assert_eq!(
        strings(&counter["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"]),
        vec!["sequence"]
    );
}

#[test]
fn the_stage_cache_is_flushed_through_a_delayed_batched_queue_and_only_that_stage() {
    let template = template();
    let refresh = resource(&template, "ConfigRefreshFunction");
    let env = &refresh["Environment"]["Variables"];
    assert!(strings(&env["STAGE_CACHE_REST_API_ID"]).contains(&"ConfigApi".to_owned()));
    assert!(strings(&env["FLUSH_QUEUE_URL"]).contains(&"StageCacheFlushQueue".to_owned()));
    assert_eq!(
        strings(&env["STAGE_CACHE_FLUSH_DELAY_SECS"]),
        vec!["StageCacheFlushDelaySeconds"]
    );
    let delay = &template["Parameters"]["StageCacheFlushDelaySeconds"];
    assert!(
        delay["MinValue"].as_u64() >= Some(2),
        "a flush may not precede config-api's catch-up (1 s)"
    );
    let mapping = resource(&template, "StageCacheFlushMapping");
    assert_eq!(
        strings(&mapping["EventSourceArn"]),
        vec!["StageCacheFlushQueue.Arn"]
    );
    assert_eq!(
        strings(&mapping["MaximumBatchingWindowInSeconds"]),
        vec!["StageCacheFlushWindowSeconds"]
    );
    let queue = resource(&template, "StageCacheFlushQueue");
    assert_eq!(
        strings(&queue["RedrivePolicy"]["deadLetterTargetArn"]),
        vec!["RefreshDlq.Arn"]
    );
    let flush: Vec<Value> = statements(&template)
        .into_iter()
        .filter(|(_, s)| {
            strings(&s["Action"])
                .iter()
                .any(|a| a.starts_with("apigateway:"))
        })
        .map(|(owner, s)| {
            assert_eq!(owner, "ConfigRefreshFunction");
            s
        })
        .collect();
    assert_eq!(flush.len(), 1);
    assert_eq!(strings(&flush[0]["Action"]), vec!["apigateway:DELETE"]);
    assert_eq!(
        strings(&flush[0]["Resource"]),
        vec![
            "arn:${AWS::Partition}:apigateway:${AWS::Region}::/restapis/${ConfigApi}/stages/${StageName}/cache/data"
        ]
    );
}

#[test]
fn degraded_answers_can_ask_for_a_flush_and_stale_answers_and_store_errors_alarm() {
    let template = template();
    let api = resource(&template, "ConfigApiFunction");
    let env = &api["Environment"]["Variables"];
    assert!(strings(&env["FLUSH_QUEUE_URL"]).contains(&"StageCacheFlushQueue".to_owned()));
    assert_eq!(strings(&env["MAX_STALE_SECS"]), vec!["MaxStaleSeconds"]);
    // config-api may only send to the flush queue: no receive, no delete.
    let sends: Vec<Value> = statements(&template)
        .into_iter()
        .filter(|(owner, s)| {
            owner == "ConfigApiFunction"
                && strings(&s["Action"]).iter().any(|a| a.starts_with("sqs:"))
        })
        .map(|(_, s)| s)
        .collect();
    assert_eq!(sends.len(), 1);
    assert_eq!(strings(&sends[0]["Action"]), vec!["sqs:SendMessage"]);
    assert_eq!(
        strings(&sends[0]["Resource"]),
        vec!["StageCacheFlushQueue.Arn"]
    );
    for (alarm, metric) in [
        ("ConfigApiStaleAnswersAlarm", "StaleAnswers"),
        ("ConfigApiStoreErrorsAlarm", "StoreErrors"),
    ] {
        let alarm = resource(&template, alarm);
        assert_eq!(alarm["MetricName"].as_str(), Some(metric));
        // the namespace config-api's EMF lines are written to
        assert_eq!(
            strings(&alarm["Namespace"]),
            strings(&env["METRICS_NAMESPACE"])
        );
        assert_eq!(strings(&alarm["Dimensions"]), vec!["Service", "config-api"]);
    }
}

#[test]
fn writes_are_for_the_admin_group_uncached_and_only_config_api_may_make_them() {
    let template = template();
    let group = resource(&template, "AdminGroup");
    assert_eq!(strings(&group["GroupName"]), vec!["AdminGroupName"]);
    let api = resource(&template, "ConfigApiFunction");
    assert_eq!(
        strings(&api["Environment"]["Variables"]["ADMIN_GROUP"]),
        vec!["AdminGroupName"]
    );
    for (event, method) in [
        ("PutConfig", "PUT"),
        ("DeleteConfig", "DELETE"),
        ("GetHistory", "GET"),
        ("Rollback", "POST"),
    ] {
        let properties = &api["Events"][event]["Properties"];
        assert_eq!(properties["Method"].as_str(), Some(method), "{event}");
        let path = properties["Path"].as_str().unwrap();
        // no method setting caches a write route
        let setting = method_setting_path(path);
        let cached = template["Resources"]["ConfigApi"]["Properties"]["MethodSettings"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|s| {
                s["ResourcePath"].as_str() == Some(setting.as_str())
                    && s["HttpMethod"].as_str() == Some(method)
                    && s["CachingEnabled"].as_bool() == Some(true)
            });
        assert!(!cached, "{event} must not be cached");
    }
    for (owner, statement) in statements(&template) {
        let actions = strings(&statement["Action"]);
        let writes = actions.iter().any(|a| {
            [
                "dynamodb:PutItem",
                "dynamodb:DeleteItem",
                "ssm:PutParameter",
                "ssm:DeleteParameter",
            ]
            .contains(&a.as_str())
        });
        if writes && owner == "RolloutDriverFunction" {
            // The driver lands a finished rollout's value in a shared layer
            // and keeps rollouts: never a tenant's own configuration.
            let keys =
                strings(&statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]);
            let resources = strings(&statement["Resource"]);
            let shared_only = if actions.iter().any(|a| a.starts_with("dynamodb:")) {
                !keys.is_empty()
                    && keys
                        .iter()
                        .all(|k| ["LAYER#*", "ROLLOUT#*", "ROLLOUTS"].contains(&k.as_str()))
            } else {
                resources.iter().all(|r| {
                    r.ends_with("parameter${ParameterRoot}/_global/*")
                        || r.ends_with("parameter${ParameterRoot}/_tiers/*")
                })
            };
            assert!(
                shared_only,
                "the rollout driver writes shared layers and rollouts only: {statement:?}"
            );
        } else if writes && owner != "ConfigRefreshFunction" {
            assert_eq!(
                owner, "ConfigApiFunction",
                "{owner} may not write configuration"
            );
        }
        if actions
            .iter()
            .any(|a| a == "kms:Encrypt" || a == "kms:GenerateDataKey")
            && !seals_agent_snapshots(&statement)
        {
            let condition = strings(&statement["Condition"]);
            assert!(
                condition
                    .iter()
                    .any(|c| c == "ssm.${AWS::Region}.amazonaws.com"),
                "{owner}: encrypt only via SSM"
            );
            assert!(
                condition
                    .iter()
                    .any(|c| c.ends_with("parameter${ParameterRoot}/*")),
                "{owner}: encrypt only for parameters under the root"
            );
        }
    }
}

/// A YAML fragment as the template would spell it (short-form tags included).
fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).expect("a YAML fragment")
}

/// The topic every alarm notifies: the one given, else the stack's own.
const EFFECTIVE_ALARM_TOPIC: &str = "!If [HasAlarmTopic, !Ref AlarmTopicArn, !Ref AlarmTopic]";

/// Logical id and properties of every resource of `kind`.
fn resources_of<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(name, r)| (name.as_str().unwrap(), &r["Properties"]))
        .collect()
}

#[test]
fn every_alarm_notifies_the_effective_topic_in_alarm_and_back_to_ok_under_the_stacks_name() {
    // GIVEN the template's alarms
    let template = template();
    let alarms = resources_of(&template, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 8, "alarms were found: {}", alarms.len());
    let topic = vec![yaml(EFFECTIVE_ALARM_TOPIC)];
    let mut names = std::collections::BTreeSet::new();
    for (id, alarm) in alarms {
        // THEN each names the effective topic whatever AlarmTopicArn is
        // (never "no action when the parameter is empty")
        for actions in ["AlarmActions", "OKActions"] {
            assert_eq!(alarm[actions].as_sequence(), Some(&topic), "{id}.{actions}");
        }
        // AND is named "{stack}-{logical id without Alarm}", which is how
        // `tenant-config-admin verify` finds the stack's alarms
        let name = id.strip_suffix("Alarm").expect("alarm ids end in Alarm");
        assert_eq!(
            alarm["AlarmName"],
            yaml(&format!("!Sub \"${{AWS::StackName}}-{name}\"")),
            "{id}"
        );
        assert!(names.insert(name), "two alarms named {name}");
    }
    // AND the topic output is that same effective topic
    assert_eq!(
        template["Outputs"]["AlarmTopicArn"]["Value"],
        yaml(EFFECTIVE_ALARM_TOPIC)
    );
}

#[test]
fn the_stack_creates_its_alarm_topic_unless_given_one_with_a_key_cloudwatch_may_use() {
    let template = template();
    // GIVEN the conditions: the topic is created exactly when none is given
    assert_eq!(
        template["Conditions"]["CreatesAlarmTopic"],
        yaml("!Equals [!Ref AlarmTopicArn, \"\"]")
    );
    assert_eq!(
        template["Conditions"]["HasAlarmTopic"],
        yaml("!Not [!Equals [!Ref AlarmTopicArn, \"\"]]")
    );
    assert_eq!(
        template["Parameters"]["AlarmTopicArn"]["Default"].as_str(),
        Some("")
    );
    for resource in ["AlarmTopic", "AlarmTopicKey"] {
        assert_eq!(
            template["Resources"][resource]["Condition"].as_str(),
            Some("CreatesAlarmTopic"),
            "{resource}"
        );
    }
    // THEN the created topic is encrypted with the stack's own key, not
    // alias/aws/sns: CloudWatch cannot use the AWS managed key (its policy
    // cannot be changed), and alarms would publish nothing
    let topic = resource(&template, "AlarmTopic");
    assert_eq!(topic["KmsMasterKeyId"], yaml("!Ref AlarmTopicKey"));
    let key = resource(&template, "AlarmTopicKey");
    assert_eq!(key["EnableKeyRotation"].as_bool(), Some(true));
    let cloudwatch = key["KeyPolicy"]["Statement"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| strings(&s["Principal"]) == vec!["cloudwatch.amazonaws.com"])
        .expect("a key policy statement for CloudWatch");
    let mut actions = strings(&cloudwatch["Action"]);
    actions.sort();
    assert_eq!(actions, vec!["kms:Decrypt", "kms:GenerateDataKey*"]);
    // AND an address given as AlarmEmail is subscribed to the effective topic
    let subscription = &template["Resources"]["AlarmEmailSubscription"];
    assert_eq!(subscription["Condition"].as_str(), Some("HasAlarmEmail"));
    let subscription = &subscription["Properties"];
    assert_eq!(subscription["TopicArn"], yaml(EFFECTIVE_ALARM_TOPIC));
    assert_eq!(subscription["Protocol"].as_str(), Some("email"));
    assert_eq!(subscription["Endpoint"], yaml("!Ref AlarmEmail"));
    assert_eq!(
        template["Parameters"]["AlarmEmail"]["Default"].as_str(),
        Some("")
    );
}

#[test]
fn every_output_is_exported_as_stack_dash_output_and_the_deploy_tools_find_theirs() {
    let template = template();
    let outputs = template["Outputs"].as_mapping().unwrap();
    // THEN each output is exported under "{stack}-{output}" (what
    // agent-service.yaml imports)
    for (name, output) in outputs {
        let name = name.as_str().unwrap();
        assert_eq!(
            output["Export"]["Name"],
            yaml(&format!("!Sub \"${{AWS::StackName}}-{name}\"")),
            "{name}"
        );
    }
    // AND the outputs the runbook, tenant-config-admin --stack and the ECS
    // example read are all there
    for name in [
        "ApiUrl",
        "ApiId",
        "StageName",
        "UserPoolId",
        "UserPoolClientId",
        "Issuer",
        "AdminGroupName",
        "TableName",
        "ChangeJournalTableName",
        "ParameterRoot",
        "RefreshKeyParameterName",
        "DlqUrl",
        "AgentNamespaceName",
        "AgentServiceName",
        "AgentServiceId",
        "AgentServiceArn",
        "TenantReadRoleArn",
        "AgentTaskRoleArn",
        "AgentTaskPolicyArn",
        "AlarmTopicArn",
    ] {
        assert!(!template["Outputs"][name].is_null(), "output {name}");
    }
    // AND the Cloud Map service ARN exists with an existing service too
    // (an ECS service's serviceRegistries needs it either way)
    assert!(template["Outputs"]["AgentServiceArn"]["Condition"].is_null());
}

#[test]
fn every_dead_letter_queue_has_an_output_that_verify_checks() {
    // GIVEN every queue something sends its failures to
    let template = template();
    let mut dead_letter_queues = std::collections::BTreeSet::new();
    for (_, properties) in template["Resources"].as_mapping().unwrap() {
        let properties = &properties["Properties"];
        for target in [
            &properties["RedrivePolicy"]["deadLetterTargetArn"],
            &properties["DestinationConfig"]["OnFailure"]["Destination"],
            &properties["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"],
        ] {
            dead_letter_queues.extend(strings(target));
        }
        for target in properties["Targets"].as_sequence().into_iter().flatten() {
            dead_letter_queues.extend(strings(&target["DeadLetterConfig"]["Arn"]));
        }
    }
    let dead_letter_queues: std::collections::BTreeSet<String> = dead_letter_queues
        .into_iter()
        .map(|arn| arn.trim_end_matches(".Arn").to_owned())
        .collect();
    assert!(
        dead_letter_queues.contains("RefreshDlq"),
        "{dead_letter_queues:?}"
    );
    // THEN each is the value of an output ending in DlqUrl (verify checks
    // every such output's queue is empty)
    let dlq_outputs: std::collections::BTreeSet<String> = template["Outputs"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.as_str().unwrap().ends_with("DlqUrl"))
        .flat_map(|(_, output)| strings(&output["Value"]))
        .collect();
    assert_eq!(dead_letter_queues, dlq_outputs);
}

#[test]
fn operators_sign_in_with_admin_password_auth_and_apps_with_srp_only() {
    let template = template();
    let mut flows = strings(&resource(&template, "UserPoolClient")["ExplicitAuthFlows"]);
    flows.sort();
    // AdminInitiateAuth needs IAM credentials; no flow takes a password from
    // anyone who merely knows the public client id (no ALLOW_USER_PASSWORD_AUTH).
    assert_eq!(
        flows,
        vec![
            "ALLOW_ADMIN_USER_PASSWORD_AUTH",
            "ALLOW_REFRESH_TOKEN_AUTH",
            "ALLOW_USER_SRP_AUTH"
        ]
    );
}

/// The `tenant-config-admin` commands a text names: the words after each
/// mention, up to a parenthesis or the end of the sentence or clause.
fn admin_commands(text: &str) -> Vec<Vec<String>> {
    text.split("tenant-config-admin ")
        .skip(1)
        .map(|rest| {
            let mut words = Vec::new();
            for word in rest.split_whitespace() {
                if word.starts_with('(') {
                    break;
                }
                let end = word.ends_with(';') || word.ends_with('.');
                words.push(word.trim_end_matches([';', '.']).to_owned());
                if end {
                    break;
                }
            }
            words
        })
        .collect()
}

#[test]
fn the_description_gives_the_key_command_and_the_post_deploy_steps_the_cli_knows() {
    // GIVEN the template's description, as the console and `sam deploy` show it
    let template = template();
    let description = template["Description"].as_str().unwrap();
    assert!(
        description.len() <= 1024,
        "CloudFormation's limit: {}",
        description.len()
    );
    // THEN it points to the runbook, creates the key with the CLI (config-refresh
    // refuses a hex string from openssl) under the parameter the stack reads
    assert!(description.contains("docs/deploy.md"), "{description}");
    let commands = admin_commands(description);
    let key_parameter = template["Parameters"]["RefreshKeyParameterName"]["Default"]
        .as_str()
        .unwrap();
    assert!(
        commands.iter().any(|c| c[0] == "refresh-key"
            && c.windows(2)
                .any(|w| w[0] == "--parameter" && w[1] == key_parameter)),
        "{commands:?}"
    );
    // AND after the first deploy: the agents' TLS material once, then after
    // every deploy stage settings and verify, in that order
    let steps: Vec<&str> = commands
        .iter()
        .filter_map(|c| c.iter().find(|w| !w.starts_with('-') && *w != "STACK"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        steps,
        vec!["refresh-key", "agent-tls", "stage-settings", "verify"]
    );
    // AND nothing in the template still says to make the key with openssl
    for (name, parameter) in template["Parameters"].as_mapping().unwrap() {
        let text = parameter["Description"].as_str().unwrap_or_default();
        assert!(!text.contains("openssl"), "{name:?}: {text}");
    }
    assert!(!description.contains("openssl"), "{description}");
    // AND the CLI accepts each command as written (clap refuses an unknown
    // command or flag before it prints the help)
    let admin =
        tenant_config_local_stack::agent::agent_binary().with_file_name("tenant-config-admin");
    for command in &commands {
        let output = std::process::Command::new(&admin)
            .args(
                command
                    .iter()
                    .map(|w| if w == "STACK" { "tenant-config" } else { w }),
            )
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("{} runs (built by tests/run.sh): {e}", admin.display()));
        assert!(
            output.status.success(),
            "tenant-config-admin {command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn secure_string_writes_pass_the_stacks_kms_key_which_it_creates_unless_given_one() {
    let key_of = |overrides: &[(&str, serde_json::Value)]| {
        let stack = Resolved::new(template(), overrides);
        let env = stack
            .resolve(&resource(&stack.template, "ConfigApiFunction")["Environment"]["Variables"])
            .unwrap();
        let output = stack
            .condition(
                stack.template["Outputs"]["SecureStringKmsKeyArn"]["Condition"]
                    .as_str()
                    .unwrap(),
            )
            .then(|| {
                stack
                    .resolve(&stack.template["Outputs"]["SecureStringKmsKeyArn"]["Value"])
                    .unwrap()
            });
        (env.get("SECURESTRING_KMS_KEY_ID").cloned(), output, stack)
    };
    // GIVEN the defaults THEN the stack's own key encrypts every SecureString
    // write, and the CLI reads it from the output
    let (env, output, stack) = key_of(&[]);
    assert_eq!(env, Some(stack.arn("SecureStringKey").into()));
    assert_eq!(output, env);
    // AND a given key is used instead, and none is created
    let given = "arn:aws:kms:us-east-1:123456789012:key/given";
    let (env, output, stack) = key_of(&[("SecureStringKmsKeyArn", given.into())]);
    assert_eq!(env, Some(given.into()));
    assert_eq!(output, env);
    assert!(!stack.condition("CreatesKmsKey"));
    // AND with neither, Parameter Store's aws/ssm (no KeyId, no output)
    let (env, output, _) = key_of(&[("CreateSecureStringKey", "false".into())]);
    assert_eq!((env, output), (None, None));
    // AND the created key survives the stack (SecureStrings outlive it)
    let key = &template()["Resources"]["SecureStringKey"];
    assert_eq!(key["DeletionPolicy"].as_str(), Some("Retain"));
    assert_eq!(key["Properties"]["EnableKeyRotation"].as_bool(), Some(true));
}

#[test]
fn api_gateway_has_an_event_for_every_route_config_api_answers_and_no_other() {
    let template = template();
    let events = resource(&template, "ConfigApiFunction")["Events"]
        .as_mapping()
        .unwrap();
    let in_template: std::collections::BTreeSet<(String, String)> = events
        .values()
        .filter(|event| event["Type"].as_str() == Some("Api"))
        .map(|event| {
            let properties = &event["Properties"];
            (
                properties["Method"].as_str().unwrap().to_uppercase(),
                properties["Path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let answered: std::collections::BTreeSet<(String, String)> = tenant_config_shared::api::ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    // A route missing here is refused by API Gateway before config-api sees it.
    assert_eq!(
        answered.difference(&in_template).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes config-api answers that API Gateway does not pass on"
    );
    assert_eq!(
        in_template.difference(&answered).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "events for routes config-api does not answer"
    );
}

/// The agents' statement for their warm-start snapshot: data keys of the
/// snapshot key only, in the snapshot's encryption context only (the one KMS
/// use that is not through SSM).
fn seals_agent_snapshots(statement: &Value) -> bool {
    let resources = strings(&statement["Resource"]);
    let context = &statement["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"];
    let sealing = resources == vec!["AgentSnapshotKey.Arn"]
        && context.as_str() == Some(tenant_config_shared::warm_start::kms::CONTEXT_VALUE);
    if sealing {
        let mut actions = strings(&statement["Action"]);
        actions.sort();
        assert_eq!(
            actions,
            vec!["kms:Decrypt", "kms:GenerateDataKey"],
            "{statement:?}"
        );
    }
    sealing
}
