//! Token vending: every store call for tenant T is signed with T's vended
//! credentials, never another tenant's or the process's own. The stores run
//! their real SDK adapters against a recording endpoint that answers like
//! DynamoDB and Parameter Store and keeps each request's signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use tenant_config_shared::credentials::{RoleAssumer, TenantClient, TenantCredentials};
use tenant_config_shared::domain::ReadMode;
use tenant_config_shared::store::{ConfigStore, DynamoDbStore, ParameterStore};
use tenant_config_shared::{ItemKey, ServiceName, StoreError, TenantId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Hands out credentials named after the tenant, counting calls.
#[derive(Debug, Default)]
struct NamedAfterTenant {
    calls: Mutex<HashMap<String, usize>>,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl RoleAssumer for NamedAfterTenant {
    async fn assume(&self, tenant: &TenantId) -> Result<Credentials, CredentialsError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(tenant.to_string())
            .or_default() += 1;
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CredentialsError::provider_error("STS is unavailable"));
        }
        Ok(Credentials::new(
            format!("AKID{tenant}"),
            "secret",
            Some("token".into()),
            Some(std::time::SystemTime::now() + std::time::Duration::from_secs(3600)),
            "test",
        ))
    }
}

/// (authorization header, body) of every request.
type Recorded = Arc<Mutex<Vec<(String, String)>>>;

/// Answers GetItem/Query with nothing found and GetParameter(s)/ByPath with
/// nothing found, recording each request.
async fn recording_endpoint() -> (String, Recorded) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let recorded: Recorded = Arc::default();
    let shared = recorded.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buffer = [0u8; 8192];
                let header_end = loop {
                    let n = socket.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buffer[..n]);
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                };
                let head = String::from_utf8_lossy(&data[..header_end]).to_string();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_owned())
                        })
                        .unwrap_or_default()
                };
                let length: usize = header("content-length").parse().unwrap_or(0);
                while data.len() < header_end + length {
                    let n = socket.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buffer[..n]);
                }
                let body = String::from_utf8_lossy(&data[header_end..]).to_string();
                let target = header("x-amz-target");
                shared.lock().unwrap().push((header("authorization"), body));
                let (status, answer) = match target.as_str() {
                    "AmazonSSM.GetParameter" => (
                        "400 Bad Request",
                        r#"{"__type":"ParameterNotFound","message":"none"}"#,
                    ),
                    "AmazonSSM.GetParametersByPath" => ("200 OK", r#"{"Parameters":[]}"#),
                    "DynamoDB_20120810.Query" => ("200 OK", r#"{"Items":[],"Count":0}"#),
                    _ => ("200 OK", "{}"),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{address}"), recorded)
}

fn stores(endpoint: &str, assumer: Arc<NamedAfterTenant>) -> (DynamoDbStore, ParameterStore) {
    let base = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .build();
    let credentials = Arc::new(TenantCredentials::new(base, assumer, 100));
    (
        DynamoDbStore::new(
            TenantClient::vended(credentials.clone(), aws_sdk_dynamodb::Client::new),
            "tenant-config",
        ),
        ParameterStore::new(
            TenantClient::vended(credentials, aws_sdk_ssm::Client::new),
            "/config-service",
        ),
    )
}

#[tokio::test]
async fn every_store_call_for_a_tenant_is_signed_with_that_tenants_credentials() {
    // GIVEN both stores with vended credentials, over a recording endpoint
    let (endpoint, recorded) = recording_endpoint().await;
    let assumer = Arc::new(NamedAfterTenant::default());
    let (dynamodb, parameters) = stores(&endpoint, assumer.clone());
    // WHEN tenants A and B read single keys and whole services, interleaved
    let billing = ServiceName::parse("billing").unwrap();
    for round in 0..3 {
        for tenant in ["tenant-a", "tenant-b"] {
            let item = |key: &str| ItemKey::parse(tenant, "billing", key).unwrap();
            let id = TenantId::parse(tenant).unwrap();
            assert!(
                dynamodb
                    .get(&item("tenant_config_limits"), ReadMode::Plain)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                parameters
                    .get(&item("param_config_endpoint"), ReadMode::Plain)
                    .await
                    .unwrap()
                    .is_none()
            );
            if round == 0 {
                dynamodb.list(&id, &billing).await.unwrap();
                parameters.list(&id, &billing).await.unwrap();
            }
        }
    }
    // THEN each request names one tenant and is signed with its credentials
    let recorded = recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 3 * 2 * 2 + 2 * 2);
    for (authorization, body) in &recorded {
        let tenant = if body.contains("tenant-a") {
            "tenant-a"
        } else {
            assert!(body.contains("tenant-b"), "{body}");
            "tenant-b"
        };
        assert!(
            authorization.contains(&format!("Credential=AKID{tenant}/")),
            "{tenant}'s call signed as {authorization}"
        );
    }
    // AND each tenant's role was assumed once for both stores and all calls
    let calls = assumer.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        HashMap::from([("tenant-a".into(), 1), ("tenant-b".into(), 1)])
    );
}

#[tokio::test]
async fn when_credentials_cannot_be_vended_the_read_fails_as_a_store_error() {
    let (endpoint, recorded) = recording_endpoint().await;
    let assumer = Arc::new(NamedAfterTenant::default());
    assumer
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (dynamodb, _) = stores(&endpoint, assumer);
    let item = ItemKey::parse("tenant-a", "billing", "tenant_config_limits").unwrap();
    let err = dynamodb.get(&item, ReadMode::Plain).await.unwrap_err();
    // A store failure (502/503, stale-if-error applies), and nothing was sent
    // unsigned or with other credentials.
    assert!(
        matches!(
            err,
            StoreError::Unavailable { .. } | StoreError::Throttled { .. }
        ),
        "{err:?}"
    );
    assert!(recorded.lock().unwrap().is_empty());
}
