//! In-process agents wired as the real `config-agent` is, against the local
//! stack: the stack's settings with the agent's defaults, its refresh key, the
//! pool's JWKS over HTTP, AWS-backed reads with catch-up.

use std::sync::Arc;

use tenant_config_local_stack::stack::{LocalStack, PARAMETER_ROOT};
use tenant_config_shared::auth::TokenVerifier;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::refresh::discovery::Registration;
use tenant_config_shared::refresh::signing::RefreshKey;
use tenant_config_shared::settings::{AGENT_CACHE_DEFAULTS, RegistrationSettings, Settings};
use tenant_config_testkit::agent::TestAgent;

use crate::baseline::settings;

pub struct StackAgents {
    pub aws: Aws,
    pub settings: Settings,
    key: RefreshKey,
    verifier: Arc<TokenVerifier>,
    service_id: String,
}

impl StackAgents {
    pub async fn new(stack: &LocalStack) -> Result<Self, String> {
        let settings = settings(stack, AGENT_CACHE_DEFAULTS)?;
        let aws = Aws::from_config(stack.aws.clone());
        let key = aws
            .refresh_key(
                &stack.setting("REFRESH_KEY_PARAMETER").unwrap_or_default(),
                PARAMETER_ROOT,
            )
            .await
            .map_err(|e| e.to_string())?;
        let verifier =
            Arc::new(TokenVerifier::over_http(&settings.auth).map_err(|e| e.to_string())?);
        Ok(Self {
            aws,
            settings,
            key,
            verifier,
            service_id: stack.cloud_map.service_id.clone(),
        })
    }

    /// An agent on a loopback port, not registered anywhere.
    pub async fn start(&self) -> TestAgent {
        TestAgent::start_with(
            self.verifier.clone(),
            self.aws.config_reads(&self.settings),
            self.key.clone(),
        )
        .await
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
