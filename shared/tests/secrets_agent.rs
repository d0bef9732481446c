//! Secrets at the agent: `GetSecret` on the readers' listener answers a
//! caller on the agent's host with the decrypted value, read from the store
//! every time, and writes an audit line without the value; a caller arriving
//! from a routable address is refused though its token is good. The real
//! server, verifier and caches over in-memory stores.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tenant_config_shared::StoreKind;
use tenant_config_shared::cache::CachedStore;
use tenant_config_shared::domain::{Found, SecretValue};
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::proto::config_reader_client::ConfigReaderClient;
use tenant_config_shared::refresh::proto::{GetConfigRequest, GetSecretResponse};
use tenant_config_shared::routing::KeyRouter;
use tenant_config_shared::store::MemoryStore;
use tenant_config_testkit::agent::{
    HOUR_LONG_CACHE, TestAgent, secrets_server, server, trusted_keys,
};
use tenant_config_testkit::identity::{token, verifier};
use tenant_config_testkit::net::routable_local_ip;
use tenant_config_testkit::values::{item, plain};

const SECRET: &str = "param_config_db_password";
const SECRET_VALUE: &str = "s3cret-of-tenant-a";

/// The log lines written while a test runs (this thread's, as JSON).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(move || logs.clone())
                .finish(),
        )
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn audit_lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["audit"] == "secret_read")
            .collect()
    }
}

/// An agent that serves secrets (`serving`) or does not, as by default.
async fn agent_on(address: &str) -> (TestAgent, Arc<MemoryStore>) {
    agent_serving(address, true).await
}

async fn agent_serving(address: &str, serving: bool) -> (TestAgent, Arc<MemoryStore>) {
    let parameters = Arc::new(MemoryStore::new(StoreKind::ParameterStore));
    parameters.put(
        &item("tenant-a", "billing", SECRET),
        Found::Secret(Some(SecretValue::new(json!(SECRET_VALUE), Some(3)))),
    );
    parameters.put(
        &item("tenant-a", "billing", "param_config_region"),
        plain(json!("eu-west-1")),
    );
    let reads = ConfigReads::new(
        KeyRouter::default(),
        CachedStore::new(
            Arc::new(MemoryStore::new(StoreKind::DynamoDb)),
            HOUR_LONG_CACHE,
        ),
        CachedStore::new(parameters.clone(), HOUR_LONG_CACHE),
    );
    let server = if serving {
        secrets_server(verifier(), reads, trusted_keys()).await
    } else {
        server(verifier(), reads, trusted_keys()).await
    };
    (TestAgent::serve_on(address, server).await, parameters)
}

async fn get_secret(
    endpoint: String,
    bearer: Option<&str>,
    key: &str,
) -> Result<GetSecretResponse, tonic::Status> {
    let mut client = ConfigReaderClient::connect(endpoint).await.unwrap();
    let mut request = tonic::Request::new(GetConfigRequest {
        service: "billing".into(),
        key: key.into(),
    });
    if let Some(bearer) = bearer {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    }
    client
        .get_secret(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_caller_on_the_agents_host_reads_its_tenants_secret_uncached_and_audited() {
    let logs = Logs::default();
    let _capture = logs.capture();
    // GIVEN an agent holding tenant-a's SecureString
    let (agent, parameters) = agent_on("127.0.0.1:0").await;
    let endpoint = agent.endpoint();

    // WHEN a caller of tenant-a asks for it twice
    for _ in 0..2 {
        let secret = get_secret(endpoint.clone(), Some(&token("tenant-a")), SECRET)
            .await
            .expect("the secret is served on loopback");
        // THEN the value, decrypted, with its version
        assert_eq!(secret.value_json, format!("\"{SECRET_VALUE}\""));
        assert_eq!(secret.version, Some(3));
        assert_eq!(secret.source, "parameter-store");
        // AND printing the answer never prints the value
        assert!(!format!("{secret:?}").contains(SECRET_VALUE));
    }
    // AND the store was read each time: a secret is never cached
    assert_eq!(parameters.gets(), 2);
    // AND a plain key reads the same way, uncached too
    let plain = get_secret(
        endpoint.clone(),
        Some(&token("tenant-a")),
        "param_config_region",
    )
    .await
    .unwrap();
    assert_eq!(plain.value_json, "\"eu-west-1\"");
    assert_eq!(parameters.gets(), 3);

    // WHEN another tenant, or no token, asks for it
    let other = get_secret(endpoint.clone(), Some(&token("tenant-b")), SECRET)
        .await
        .unwrap_err();
    // THEN tenant-b has no such secret, and a missing token is refused unread
    assert_eq!(other.code(), tonic::Code::NotFound, "{other:?}");
    let anonymous = get_secret(endpoint.clone(), None, SECRET)
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    // AND GetConfig still refuses the secret, pointing at GetSecret
    let mut client = ConfigReaderClient::connect(endpoint).await.unwrap();
    let mut request = tonic::Request::new(GetConfigRequest {
        service: "billing".into(),
        key: SECRET.into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("tenant-a")).parse().unwrap(),
    );
    let refused = client.get_config(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("GetSecret"), "{refused:?}");

    // AND each verified read left one audit line naming who read what, no value
    let audit = logs.audit_lines();
    assert_eq!(audit.len(), 4, "{audit:#?}");
    assert_eq!(audit[0]["tenant"], "tenant-a");
    assert_eq!(audit[0]["via"], "agent");
    assert_eq!(audit[0]["key"], SECRET);
    assert_eq!(audit[0]["service"], "billing");
    assert_eq!(audit[0]["version"], 3);
    assert_eq!(audit[0]["status"], 200);
    assert!(audit[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(audit[0]["client"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(audit[3]["tenant"], "tenant-b");
    assert_eq!(audit[3]["status"], 404);
    assert!(
        !logs.text().contains(SECRET_VALUE),
        "a log holds the secret"
    );
}

#[tokio::test]
async fn a_caller_from_another_host_is_refused_a_secret_though_its_token_is_good() {
    let logs = Logs::default();
    let _capture = logs.capture();
    // GIVEN an agent whose readers' listener is bound to every address
    let (agent, parameters) = agent_on("0.0.0.0:0").await;
    let routable = format!("http://{}:{}", routable_local_ip(), agent.address.port());

    // WHEN a caller reaches it from a routable address with a good token
    let refused = get_secret(routable.clone(), Some(&token("tenant-a")), SECRET)
        .await
        .unwrap_err();
    // THEN refused, and the store was never asked
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("loopback"), "{refused:?}");
    assert_eq!(parameters.gets(), 0);
    // AND the refusal is in the audit log with the caller's address
    let audit = logs.audit_lines();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0]["status"], 403);
    assert!(
        audit[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with(&routable_local_ip().to_string())
    );
    // AND the same agent still answers the secret to a caller on loopback
    let loopback = format!("http://127.0.0.1:{}", agent.address.port());
    assert!(
        get_secret(loopback, Some(&token("tenant-a")), SECRET)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_agent_serves_no_secret_unless_told_to_nor_through_a_proxy() {
    // GIVEN an agent started with its defaults
    let (agent, parameters) = agent_serving("127.0.0.1:0", false).await;
    // WHEN a caller on its host asks for a secret THEN refused, unread
    let refused = get_secret(agent.endpoint(), Some(&token("tenant-a")), SECRET)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("AGENT_SERVE_SECRETS"),
        "{refused:?}"
    );
    assert_eq!(parameters.gets(), 0);

    // GIVEN an agent serving secrets, WHEN a local proxy forwards a call
    // (it says so in x-forwarded-for) THEN refused though the peer is loopback
    let (agent, parameters) = agent_on("127.0.0.1:0").await;
    let mut client = ConfigReaderClient::connect(agent.endpoint()).await.unwrap();
    let mut request = tonic::Request::new(GetConfigRequest {
        service: "billing".into(),
        key: SECRET.into(),
    });
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {}", token("tenant-a")).parse().unwrap(),
    );
    metadata.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    let proxied = client.get_secret(request).await.unwrap_err();
    assert_eq!(proxied.code(), tonic::Code::PermissionDenied, "{proxied:?}");
    assert_eq!(parameters.gets(), 0);
}
