//! In-process agents wired as the real `config-agent` is, against the local
//! stack: the stack's settings with the agent's defaults, its refresh public keys, the
//! pool's JWKS over HTTP, AWS-backed reads with catch-up.

use std::sync::Arc;

use tenant_config_local_stack::stack::LocalStack;
use tenant_config_shared::auth::TokenVerifier;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::reads::ConfigReads;
use tenant_config_shared::refresh::discovery::Registration;
use tenant_config_shared::refresh::signing::TrustedKeys;
use tenant_config_shared::settings::{AGENT_CACHE_DEFAULTS, RegistrationSettings, Settings};
use tenant_config_shared::watch::ChangeFeed;
use tenant_config_testkit::agent::TestAgent;

use crate::baseline::settings;

/// A channel to an agent's readers' port, as the figures' clients use it:
/// bounded connect and call times.
pub async fn reader_channel(endpoint: String) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Endpoint::from_shared(endpoint)
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| e.to_string())
}

pub struct StackAgents {
    pub aws: Aws,
    pub settings: Settings,
    keys: TrustedKeys,
    verifier: Arc<TokenVerifier>,
    service_id: String,
}

impl StackAgents {
    pub async fn new(stack: &LocalStack) -> Result<Self, String> {
        let settings = settings(stack, AGENT_CACHE_DEFAULTS)?;
        let aws = Aws::from_config(stack.aws.clone());
        // The public keys the stack's agents trust (config-refresh signs).
        let keys = TrustedKeys::parse(&stack.setting("REFRESH_PUBLIC_KEYS").unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let verifier =
            Arc::new(TokenVerifier::over_http(&settings.auth).map_err(|e| e.to_string())?);
        Ok(Self {
            aws,
            settings,
            keys,
            verifier,
            service_id: stack.cloud_map.service_id.clone(),
        })
    }

    /// An agent on a loopback port, not registered anywhere.
    pub async fn start(&self) -> TestAgent {
        TestAgent::start_with(
            self.verifier.clone(),
            self.aws.config_reads(&self.settings),
            self.keys.clone(),
        )
        .await
    }

    /// An agent as [`Self::start`] starts one, and the reads it serves
    /// (with its change feed): what a Refresh does to them, a benchmark can
    /// do directly.
    pub async fn start_with_reads(&self) -> (TestAgent, ConfigReads) {
        let reads = self
            .aws
            .config_reads(&self.settings)
            .with_change_feed(Arc::new(ChangeFeed::default()));
        let agent =
            TestAgent::start_with(self.verifier.clone(), reads.clone(), self.keys.clone()).await;
        (agent, reads)
    }

    /// Registers `agent` in the stack's Cloud Map service.
    pub async fn register(
        &self,
        agent: &TestAgent,
        instance_id: &str,
    ) -> Result<Registration, String> {
        self.aws
            .register_agent(&RegistrationSettings {
                service_id: self.service_id.clone(),
                instance_id: instance_id.to_owned(),
                address: agent.address,
            })
            .await
            .map_err(|e| e.to_string())
    }
}
