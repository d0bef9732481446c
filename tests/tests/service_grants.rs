//! Service-level isolation end to end: config-api and an agent on the local
//! stack enforce grants per app client. The demo's client is granted every
//! service; the limited client (a consuming service's own client) only the
//! demo service's plain values. Grants change in the table, no redeploy.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tenant_config_local_stack::stack::{
    ALICE, Answer, DANA, LocalStack, PARAMETER_ROOT, SERVICE, StackOptions, TABLE,
};
use tenant_config_shared::grants::{DynamoDbGrants, Grant};

const OTHER: &str = "payments";

async fn put_parameter(stack: &LocalStack, service: &str, key: &str, value: &str) {
    aws_sdk_ssm::Client::new(&stack.aws)
        .put_parameter()
        .name(format!("{PARAMETER_ROOT}/tenant-a/{service}/{key}"))
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

fn refused(answer: &Answer) {
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert_eq!(
        answer.body["error"], "service_not_granted",
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn a_client_reads_only_its_granted_services_and_secrets_only_where_granted() {
    // GIVEN grants remembered for 1 s, a key of another service of tenant A,
    // and alice signed in through the limited client (granted only SERVICE)
    let stack = LocalStack::start(
        StackOptions {
            settings: &[("GRANT_CACHE_TTL_SECS", "1")],
            ..StackOptions::with_agents(1)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    put_parameter(&stack, OTHER, "param_config_plan", "gold").await;
    let limited = stack.limited_token(ALICE).await.unwrap();
    let full = stack.token(ALICE).await.unwrap();

    // THEN she reads SERVICE's plain values, over HTTP and from the agent
    let own = stack
        .get(
            &format!("/v1/config/{SERVICE}/param_config_endpoint"),
            Some(&limited),
        )
        .await
        .unwrap();
    assert_eq!(own.status, 200, "{}", own.text);
    let agent = &stack.agents[0];
    agent
        .get_config(&limited, SERVICE, "param_config_endpoint")
        .await
        .unwrap();

    // AND not SERVICE's SecureStrings (the demo's client may)
    let secret = format!("/v1/secure/{SERVICE}/param_config_db_password");
    refused(&stack.get(&secret, Some(&limited)).await.unwrap());
    assert_eq!(stack.get(&secret, Some(&full)).await.unwrap().status, 200);

    // AND nothing of another service, with the same answer whether the key
    // exists or not, on every route and at the agent
    let existing = stack
        .get(
            &format!("/v1/config/{OTHER}/param_config_plan"),
            Some(&limited),
        )
        .await
        .unwrap();
    let absent = stack
        .get(
            &format!("/v1/config/{OTHER}/param_config_nothing"),
            Some(&limited),
        )
        .await
        .unwrap();
    refused(&existing);
    refused(&absent);
    assert_eq!(existing.body, absent.body);
    for path in [
        format!("/v1/config/{OTHER}"),
        format!("/v1/config/{OTHER}?keys=param_config_plan"),
        format!("/v1/secure/{OTHER}/param_config_plan"),
    ] {
        refused(&stack.get(&path, Some(&limited)).await.unwrap());
    }
    for key in ["param_config_plan", "param_config_nothing"] {
        let status = agent.get_config(&limited, OTHER, key).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    // (the demo's client reads it)
    let granted = stack
        .get(
            &format!("/v1/config/{OTHER}/param_config_plan"),
            Some(&full),
        )
        .await
        .unwrap();
    assert_eq!(granted.body["value"], "gold", "{}", granted.text);

    // WHEN an operator grants the limited client OTHER too (no redeploy)
    let grants = DynamoDbGrants::new(aws_sdk_dynamodb::Client::new(&stack.aws), TABLE);
    let services = |names: &[&str]| {
        names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<BTreeSet<_>>()
    };
    grants
        .put(
            &stack.limited_client_id,
            &Grant {
                services: services(&[SERVICE, OTHER]),
                secure_services: BTreeSet::new(),
            },
        )
        .await
        .unwrap();
    // THEN within the grant cache's 1 s both config-api and the agent serve it
    let started = Instant::now();
    loop {
        let api = stack
            .get(
                &format!("/v1/config/{OTHER}/param_config_plan"),
                Some(&limited),
            )
            .await
            .unwrap();
        let from_agent = agent.get_config(&limited, OTHER, "param_config_plan").await;
        if api.status == 200 && from_agent.is_ok() {
            assert_eq!(api.body["value"], "gold");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "grant not seen: {}",
            api.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // WHEN the operator removes the client's grant THEN it reads nothing again
    grants.delete(&stack.limited_client_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    refused(
        &stack
            .get(
                &format!("/v1/config/{SERVICE}/param_config_endpoint"),
                Some(&limited),
            )
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn an_administrator_writes_only_granted_services_and_secrets_only_where_granted() {
    // GIVEN dana, tenant A's administrator, signed in through the limited client
    let stack = LocalStack::start(StackOptions::with_agents(0), &|_, _| {})
        .await
        .expect("local stack starts");
    let dana = stack.limited_token(DANA).await.unwrap();
    let put = |service: &'static str, key: &'static str, body: serde_json::Value| {
        let (stack, dana) = (&stack, dana.clone());
        async move {
            stack
                .send(
                    Method::PUT,
                    &format!("/v1/config/{service}/{key}"),
                    Some(&dana),
                    &[("if-none-match", "*")],
                    Some(&body),
                )
                .await
                .unwrap()
        }
    };
    // THEN she writes a plain value of SERVICE
    let plain = put(SERVICE, "tenant_config_banner", json!({"value": "hi"})).await;
    assert_eq!(plain.status, 201, "{}", plain.text);
    // AND not a SecureString of it, nor anything of another service
    refused(
        &put(
            SERVICE,
            "param_config_api_token",
            json!({"value": "s3cret", "type": "secure-string"}),
        )
        .await,
    );
    refused(&put(OTHER, "tenant_config_banner", json!({"value": "hi"})).await);
    let history = stack
        .get(
            &format!("/v1/config/{OTHER}/tenant_config_banner/history"),
            Some(&dana),
        )
        .await
        .unwrap();
    refused(&history);

    // AND she cannot overwrite or delete SERVICE's SecureString either (she
    // could destroy a secret she may not read): it stays as it was
    let secret = format!("/v1/config/{SERVICE}/param_config_db_password");
    let overwrite = stack
        .send(
            Method::PUT,
            &secret,
            Some(&dana),
            &[("if-match", "1")],
            Some(&json!({"value": "plain now"})),
        )
        .await
        .unwrap();
    refused(&overwrite);
    let delete = stack
        .send(
            Method::DELETE,
            &secret,
            Some(&dana),
            &[("if-match", "1")],
            None,
        )
        .await
        .unwrap();
    refused(&delete);
    let full = stack.token(DANA).await.unwrap();
    let kept = stack
        .get(
            &format!("/v1/secure/{SERVICE}/param_config_db_password"),
            Some(&full),
        )
        .await
        .unwrap();
    assert_eq!(kept.body["value"], "tenant-a-db-secret", "{}", kept.text);
}
