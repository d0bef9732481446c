//! Wiring: the one place where AWS SDK clients are built, and the AWS-backed
//! adapters assembled from them. Entry points (the functions, the agent, the
//! tools) ask this module for ready components and never name an SDK crate, so
//! client settings (endpoints, interceptors, later timeouts and retries) live
//! in one file.

use crate::notices::feed::{FeedEndpoint, FeedSettings, NoticePublisher};
use crate::notices::follower::{FollowerSettings, NoticeFollower};
use crate::notices::iot::{IotCoreConnector, IotCorePublisher};
use crate::notices::mqtt::{Connector, MqttPublisher, PlainConnector};
use crate::refresh::signing::TrustedKeys;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_servicediscovery::config::interceptors::BeforeSerializationInterceptorContextMut;
use aws_sdk_servicediscovery::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_servicediscovery::error::BoxError;

use crate::agent::server::{AgentServer, ReaderService, RefreshService};
use crate::api::{ConfigApi, DegradedAnswerFlush};
use crate::auth::{JwksError, TokenVerifier};
use crate::cache::CachedStore;
use crate::catch_up::CatchUp;
use crate::credentials::{StsPlatformRole, StsTenantRole, TenantClient, TenantCredentials};
use crate::grants::{DynamoDbGrants, ServiceGrants};
use crate::layers::blast::BlastRadius;
use crate::layers::guardrails::{DynamoDbGuardrails, Guardrails};
use crate::layers::overrides::DynamoDbOverrides;
use crate::layers::platform::PlatformWrites;
use crate::layers::registry::DynamoDbRegistry;
use crate::layers::view::{SharedLayerSettings, SharedLayers};
use crate::membership::{
    CachedMembership, CognitoGroupMembership, GroupMembership, pool_id_of_issuer, region_of_issuer,
};
use crate::quota::{DynamoDbWriteQuotas, QuotaLimits, TenantLoadLimiter};
use crate::reads::ConfigReads;
use crate::refresh::discovery::{CloudMapHealth, CloudMapInstances, DiscoveryError, Registration};
use crate::refresh::handler::Refresher;
use crate::refresh::journal_table::JournalTable;
use crate::refresh::key::{
    KeyLoadingFanout, RefreshKeyError, load_refresh_key, outside_watched_root,
};
use crate::refresh::networks::InAgentNetworks;
use crate::refresh::signing::{AgentAddress, RefreshAuthenticator, RefreshKey};
use crate::refresh::stage_cache::{ApiGatewayStageCache, SqsFlushRequests};
use crate::rollouts::control::RolloutControl;
use crate::rollouts::driver::RolloutDriver;
use crate::rollouts::gates::CloudWatchGates;
use crate::rollouts::store::DynamoDbRolloutStore;
use crate::schema::{DynamoDbSchemas, Schemas};
use crate::settings::{
    AgentSettings, AwsCallSettings, DriverSettings, RefreshListenerTls, RefreshSettings,
    RegistrationSettings, Settings, SettingsError, TenantRoleSettings,
};
use crate::store::{ConfigStore, DynamoDbStore, ParameterStore};
use crate::write::{DynamoDbVersionLocks, DynamoDbWriter, ParameterWriter};
use crate::writes::ConfigWrites;

/// DynamoDB and Parameter Store clients for tenants' data.
type TenantClients = (
    TenantClient<aws_sdk_dynamodb::Client>,
    TenantClient<aws_sdk_ssm::Client>,
);

/// Where the shared layers are: the config table, the parameter root and
/// which store each key prefix routes to.
#[derive(Clone, Copy)]
struct SharedPlace<'a> {
    table: &'a str,
    parameter_root: &'a str,
    router: &'a crate::routing::KeyRouter,
}

/// Shared AWS configuration (region, credentials, endpoint) from which every
/// client of a process is built, once, at init.
#[derive(Clone)]
pub struct Aws {
    config: SdkConfig,
}

impl Aws {
    /// Region, credentials and endpoint from the environment and the usual
    /// AWS sources (`AWS_ENDPOINT_URL` is how local runs point at moto), with
    /// every call bounded as [`AwsCallSettings`] says.
    pub async fn from_env() -> Result<Self, SettingsError> {
        let calls = AwsCallSettings::from_env()?;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(calls.connect)
                    .operation_attempt_timeout(calls.attempt)
                    .operation_timeout(calls.operation)
                    .build(),
            )
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(calls.max_attempts),
            )
            .load()
            .await;
        Ok(Self::from_config(config))
    }

    pub fn from_config(config: SdkConfig) -> Self {
        Self { config }
    }

    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.config)
    }

    pub fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.config)
    }

    /// An agent's warm start, its snapshot opened (KMS decrypting its data
    /// key), when `AGENT_SNAPSHOT_FILE` is set. Values older than the
    /// reader's stale bound (TTL + `MAX_STALE_SECS`) are not served.
    pub async fn warm_start(
        &self,
        settings: &Settings,
        agent: &AgentSettings,
    ) -> Option<Arc<crate::warm_start::WarmStart>> {
        let warm = agent.warm_start.clone()?;
        let keys = Arc::new(crate::warm_start::kms::KmsDataKeys::new(
            self.kms(),
            warm.kms_key_id.clone(),
        ));
        let serve_for = settings
            .dynamodb_cache
            .ttl
            .max(settings.parameter_cache.ttl)
            + settings.dynamodb_cache.stale.max_stale;
        Some(Arc::new(
            crate::warm_start::WarmStart::open(warm, keys, serve_for).await,
        ))
    }

    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.config)
    }

    /// A Cloud Map client; with a custom endpoint URL (local runs) the host
    /// prefix is stripped, with AWS endpoints it is kept.
    pub fn cloud_map(&self) -> aws_sdk_servicediscovery::Client {
        let mut config = aws_sdk_servicediscovery::config::Builder::from(&self.config);
        if self.config.endpoint_url().is_some() {
            config = config.interceptor(StripHostPrefix);
        }
        aws_sdk_servicediscovery::Client::from_conf(config.build())
    }

    /// Per-tenant credentials of `role_arn` (the read or the write role).
    fn tenant_credentials(
        &self,
        role: &TenantRoleSettings,
        role_arn: &str,
    ) -> Arc<TenantCredentials> {
        Arc::new(TenantCredentials::new(
            self.config.clone(),
            Arc::new(StsTenantRole::new(
                aws_sdk_sts::Client::new(&self.config),
                role_arn,
                role.session,
            )),
            role.max_tenants,
        ))
    }

    /// DynamoDB and Parameter Store clients for reading tenants' items: the
    /// process's own, or per tenant with the read role's credentials.
    fn tenant_clients(&self, settings: &Settings) -> TenantClients {
        self.tenant_clients_of(
            settings
                .tenant_role
                .as_ref()
                .map(|role| self.tenant_credentials(role, &role.role_arn)),
        )
    }

    /// The same for writing: the process's own, or per tenant with the write
    /// role's credentials (assumed only when a write is made, so after the
    /// administrator check). Without a write role (settings refuse that when
    /// writes are on) there is nothing a write could use.
    fn tenant_write_clients(&self, settings: &Settings) -> Option<TenantClients> {
        match &settings.tenant_role {
            None => Some(self.tenant_clients_of(None)),
            Some(role) => role.write_role_arn.as_ref().map(|write_role| {
                self.tenant_clients_of(Some(self.tenant_credentials(role, write_role)))
            }),
        }
    }

    fn tenant_clients_of(&self, credentials: Option<Arc<TenantCredentials>>) -> TenantClients {
        match credentials {
            None => (self.dynamodb().into(), self.ssm().into()),
            Some(credentials) => (
                TenantClient::vended(credentials.clone(), aws_sdk_dynamodb::Client::new),
                TenantClient::vended(credentials, aws_sdk_ssm::Client::new),
            ),
        }
    }

    /// The read use cases over DynamoDB and Parameter Store, each behind its
    /// own cache.
    pub fn config_reads(&self, settings: &Settings) -> ConfigReads {
        self.config_reads_over(settings, self.tenant_clients(settings))
    }

    fn config_reads_over(
        &self,
        settings: &Settings,
        (dynamodb, ssm): TenantClients,
    ) -> ConfigReads {
        let dynamodb: Arc<dyn ConfigStore> =
            Arc::new(DynamoDbStore::new(dynamodb, settings.table_name.as_str()));
        let parameters: Arc<dyn ConfigStore> =
            Arc::new(ParameterStore::new(ssm, settings.parameter_root.as_str()));
        // The shared layers, the registry and the live rollouts are no
        // tenant's data: read with the process's own role (the stores do so
        // for shared layers).
        let layers = Arc::new(
            SharedLayers::new(
                dynamodb.clone(),
                parameters.clone(),
                Arc::new(DynamoDbRegistry::new(
                    self.dynamodb(),
                    settings.table_name.as_str(),
                )),
                SharedLayerSettings {
                    ttl: settings
                        .dynamodb_cache
                        .ttl
                        .min(settings.parameter_cache.ttl),
                    stale: settings.dynamodb_cache.stale,
                    max_tenants: settings.dynamodb_cache.max_entries,
                },
            )
            .with_rollouts(Arc::new(DynamoDbRolloutStore::new(
                self.dynamodb(),
                settings.table_name.as_str(),
            ))),
        );
        let mut dynamodb = CachedStore::new(dynamodb, settings.dynamodb_cache);
        let mut parameters = CachedStore::new(parameters, settings.parameter_cache);
        let fairness = settings.fairness;
        if fairness.store_reads_per_sec > 0 {
            // One share per tenant for both stores of the process.
            let limiter = Arc::new(TenantLoadLimiter::new(
                fairness.store_reads_per_sec,
                fairness.store_reads_burst,
            ));
            dynamodb = dynamodb.with_load_limiter(limiter.clone());
            parameters = parameters.with_load_limiter(limiter);
        }
        let reads =
            ConfigReads::new(settings.router.clone(), dynamodb, parameters).with_layers(layers);
        match &settings.journal_table {
            Some(table) => reads.with_catch_up(CatchUp::new(
                Arc::new(self.change_journal(table)),
                settings.catch_up,
            )),
            None => {
                tracing::warn!(
                    "JOURNAL_TABLE_NAME is not set: caches converge by TTL and pushes only"
                );
                reads
            }
        }
    }

    /// JSON Schemas in the config table's reserved `SCHEMA` partition.
    pub fn schemas(&self, table: &str) -> DynamoDbSchemas {
        DynamoDbSchemas::new(self.dynamodb(), table)
    }

    /// Whether a token's administrator still is one, asked of the user pool
    /// of the tokens' issuer and remembered for `ADMIN_MEMBERSHIP_TTL_SECS`.
    /// (config-api's settings check refuses an issuer naming no pool.)
    fn group_membership(&self, settings: &Settings) -> Arc<dyn GroupMembership> {
        let issuer = &settings.auth.issuer;
        let mut config = aws_sdk_cognitoidentityprovider::config::Builder::from(&self.config);
        // The pool's own region, which need not be the function's.
        if let Some(region) = region_of_issuer(issuer) {
            config = config.region(aws_config::Region::new(region.to_owned()));
        }
        let pool: Arc<dyn GroupMembership> = Arc::new(CognitoGroupMembership::new(
            aws_sdk_cognitoidentityprovider::Client::from_conf(config.build()),
            pool_id_of_issuer(issuer).unwrap_or_default(),
        ));
        if settings.admin_membership_ttl.is_zero() {
            pool
        } else {
            Arc::new(CachedMembership::new(pool, settings.admin_membership_ttl))
        }
    }

    /// Which services each app client may read, from the config table's
    /// `GRANTS` partition, read with the process's own role (grants are no
    /// tenant's data); `None` unless `SERVICE_GRANTS=enforce`.
    fn service_grants(&self, settings: &Settings) -> Option<Arc<ServiceGrants>> {
        self.service_grants_remembered(settings, None)
    }

    fn service_grants_remembered(
        &self,
        settings: &Settings,
        snapshot: Option<&Arc<crate::warm_start::LastKnownGood>>,
    ) -> Option<Arc<ServiceGrants>> {
        settings.service_grants.map(|ttl| {
            let grants = ServiceGrants::with_ttl(
                Arc::new(DynamoDbGrants::new(self.dynamodb(), &settings.table_name)),
                ttl,
            );
            Arc::new(match snapshot {
                Some(snapshot) => grants.with_last_known_good(Arc::clone(snapshot)),
                None => grants,
            })
        })
    }

    /// The change journal in its DynamoDB table.
    pub fn change_journal(&self, table: &str) -> JournalTable {
        JournalTable::new(self.dynamodb(), table)
    }

    /// config-api's handler: AWS-backed reads and the pool's JWKS over HTTP.
    pub fn config_api(&self, settings: &Settings) -> Result<ConfigApi, JwksError> {
        let reads = self.config_reads_over(settings, self.tenant_clients(settings));
        let layers = reads.layers().cloned();
        let guardrails = Arc::new(Guardrails::new(Arc::new(DynamoDbGuardrails::new(
            self.dynamodb(),
            settings.table_name.as_str(),
        ))));
        let mut api = ConfigApi::new(token_verifier(settings)?, reads);
        if let Some(grants) = self.service_grants(settings) {
            api = api.with_service_grants(grants);
        }
        // Settings refuse writes with a read role and no write role, so both
        // are here or the write routes stay off.
        if let (Some(group), Some((dynamodb, ssm))) =
            (&settings.admin_group, self.tenant_write_clients(settings))
        {
            let mut writes = ConfigWrites::new(
                settings.router.clone(),
                Arc::new(DynamoDbWriter::new(
                    dynamodb.clone(),
                    settings.table_name.as_str(),
                )),
                Arc::new(
                    ParameterWriter::new(ssm, settings.parameter_root.as_str())
                        .with_secure_string_key(settings.secure_string_key.clone())
                        .with_version_locks(Arc::new(DynamoDbVersionLocks::new(
                            dynamodb.clone(),
                            settings.table_name.as_str(),
                        ))),
                ),
                group.as_str(),
            )
            .with_quotas(Arc::new(DynamoDbWriteQuotas::new(
                dynamodb,
                settings.table_name.as_str(),
                QuotaLimits {
                    writes_per_minute: settings.fairness.writes_per_minute,
                    max_keys: settings.fairness.max_keys,
                },
            )))
            .with_schemas(Arc::new(Schemas::new(Arc::new(
                self.schemas(&settings.table_name),
            ))))
            .with_membership(self.group_membership(settings))
            .with_guardrails(guardrails.clone());
            if let Some(layers) = layers {
                writes = writes.with_layers(layers);
            }
            api = api.with_writes(writes);
        }
        if let Some(group) = &settings.platform_admin_group {
            api = api
                .with_rollouts(Arc::new(self.rollout_control(
                    settings,
                    group,
                    guardrails.clone(),
                )))
                .with_platform_writes(self.platform_writes(settings, group, guardrails));
        }
        Ok(match &settings.degraded_flush {
            Some(flush) => api.with_degraded_answer_flush(DegradedAnswerFlush::new(
                // No delay: the degraded answer is already in the stage cache.
                Arc::new(SqsFlushRequests::new(
                    aws_sdk_sqs::Client::new(&self.config),
                    &flush.flush_queue_url,
                    Duration::ZERO,
                )),
                flush.min_interval,
            )),
            None => api,
        })
    }

    /// Rollouts: started, read and changed by platform administrators, and
    /// moved on by the driver; written like the shared layers (see
    /// [`Self::platform_writes`]).
    pub fn rollout_control(
        &self,
        settings: &Settings,
        group: &str,
        guardrails: Arc<Guardrails>,
    ) -> RolloutControl {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.platform_config(settings));
        let table = settings.table_name.as_str();
        RolloutControl::new(
            Arc::new(DynamoDbRolloutStore::new(dynamodb.clone(), table)),
            Arc::new(self.platform_writes(settings, group, guardrails)),
            Arc::new(DynamoDbRegistry::new(dynamodb, table)),
            crate::rollouts::control::CONVERGENCE_BOUND,
        )
    }

    /// A rollout's health gates: its CloudWatch alarms.
    pub fn rollout_gates(&self) -> CloudWatchGates {
        CloudWatchGates::new(aws_sdk_cloudwatch::Client::new(&self.config))
    }

    /// The configuration platform writes are signed with: the platform
    /// write role's (assumed only when used, after the platform
    /// administrator check), or the process's own.
    fn platform_config(&self, settings: &Settings) -> SdkConfig {
        match &settings.platform_write_role_arn {
            Some(role_arn) => StsPlatformRole::new(
                aws_sdk_sts::Client::new(&self.config),
                role_arn,
                Duration::from_secs(900),
            )
            .config(&self.config),
            None => self.config.clone(),
        }
    }

    /// The platform routes' writers: with tenant credentials, signed by the
    /// platform write role (assumed only here, after the platform
    /// administrator check); without, the process's own role.
    fn platform_writes(
        &self,
        settings: &Settings,
        group: &str,
        guardrails: Arc<Guardrails>,
    ) -> PlatformWrites {
        self.shared_writers(
            &self.platform_config(settings),
            SharedPlace {
                table: &settings.table_name,
                parameter_root: &settings.parameter_root,
                router: &settings.router,
            },
            group,
            guardrails,
        )
        .with_membership(self.group_membership(settings))
    }

    /// The shared layers' writers signed with `config`, weighed by the
    /// blast radius (which reads every tenant's own value of the key with
    /// the same role: it may read tenants' values, not decrypt them), with
    /// guardrails and rollouts set with the same role too.
    fn shared_writers(
        &self,
        config: &SdkConfig,
        place: SharedPlace<'_>,
        group: &str,
        guardrails: Arc<Guardrails>,
    ) -> PlatformWrites {
        let SharedPlace {
            table,
            parameter_root,
            router,
        } = place;
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let ssm = aws_sdk_ssm::Client::new(config);
        let schemas = Arc::new(Schemas::new(Arc::new(self.schemas(table))));
        PlatformWrites::new(
            router.clone(),
            Arc::new(DynamoDbWriter::new(dynamodb.clone(), table)),
            Arc::new(
                ParameterWriter::new(ssm.clone(), parameter_root).with_version_locks(Arc::new(
                    DynamoDbVersionLocks::new(dynamodb.clone(), table),
                )),
            ),
            Arc::new(DynamoDbRegistry::new(dynamodb.clone(), table)),
            group,
        )
        .with_schemas(schemas.clone())
        .with_blast_radius(
            BlastRadius::new(
                router.clone(),
                Arc::new(DynamoDbStore::new(dynamodb.clone(), table)),
                Arc::new(ParameterStore::new(ssm, parameter_root)),
                Arc::new(DynamoDbRegistry::new(dynamodb.clone(), table)),
                Arc::new(DynamoDbOverrides::new(dynamodb.clone(), table)),
                Arc::new(DynamoDbGuardrails::new(dynamodb.clone(), table)),
            )
            .with_schemas(schemas),
        )
        .with_guardrails(
            Arc::new(DynamoDbGuardrails::new(dynamodb.clone(), table)),
            guardrails,
        )
        .with_rollouts(Arc::new(DynamoDbRolloutStore::new(dynamodb, table)))
    }

    /// The shared layers' use cases with this configuration's credentials
    /// and no group check: the operator CLI's, whose AWS credentials are its
    /// authorization (the `*_as` methods record the operator as the actor).
    pub fn operator_platform_writes(
        &self,
        table: &str,
        parameter_root: &str,
        router: &crate::routing::KeyRouter,
    ) -> PlatformWrites {
        let guardrails = Arc::new(Guardrails::new(Arc::new(DynamoDbGuardrails::new(
            self.dynamodb(),
            table,
        ))));
        self.shared_writers(
            &self.config,
            SharedPlace {
                table,
                parameter_root,
                router,
            },
            "(the operator's AWS credentials)",
            guardrails,
        )
    }

    /// Rollouts with this configuration's credentials (the operator CLI,
    /// and the driver).
    pub fn operator_rollouts(
        &self,
        table: &str,
        parameter_root: &str,
        router: &crate::routing::KeyRouter,
    ) -> RolloutControl {
        let dynamodb = self.dynamodb();
        RolloutControl::new(
            Arc::new(DynamoDbRolloutStore::new(dynamodb.clone(), table)),
            Arc::new(self.operator_platform_writes(table, parameter_root, router)),
            Arc::new(DynamoDbRegistry::new(dynamodb, table)),
            crate::rollouts::control::CONVERGENCE_BOUND,
        )
    }

    /// The rollout driver's handler: rollouts moved on with the function's
    /// own role (which may write the shared layers and rollouts, nothing of
    /// a tenant's), gates read from CloudWatch.
    pub fn rollout_driver(&self, settings: &DriverSettings) -> RolloutDriver {
        let control = self.operator_rollouts(
            &settings.table_name,
            &settings.parameter_root,
            &settings.router,
        );
        RolloutDriver::new(control, Arc::new(self.rollout_gates()))
    }

    /// The shared refresh key from its SecureString parameter.
    pub async fn refresh_key(
        &self,
        parameter: &str,
        watched_root: &str,
    ) -> Result<RefreshKey, RefreshKeyError> {
        load_refresh_key(&self.ssm(), parameter, watched_root).await
    }

    /// config-refresh's handler: the refresh key, Cloud Map discovery and the
    /// fan-out. A signing key that cannot be used yet stops pushes only (see
    /// [`crate::refresh::key`]); a key parameter under the watched root is a
    /// configuration error.
    pub async fn refresher(
        &self,
        settings: &RefreshSettings,
    ) -> Result<Refresher, RefreshKeyError> {
        outside_watched_root(&settings.refresh_key_parameter, &settings.parameter_root)?;
        let fanout = KeyLoadingFanout::new(
            self.ssm(),
            &settings.refresh_key_parameter,
            &settings.parameter_root,
            settings.fanout,
            settings.agent_transport.clone(),
        );
        // Read now, so a bad key is in the log from the first start.
        let _ = fanout.load().await;
        let instances = CloudMapInstances::new(
            self.cloud_map(),
            &settings.cloud_map_namespace,
            &settings.cloud_map_service,
        );
        let refresher = Refresher::new(
            settings.parameter_root.clone(),
            settings.router.clone(),
            Arc::new(InAgentNetworks::new(
                Arc::new(instances),
                settings.agent_networks.clone(),
            )),
            Arc::new(fanout),
            Arc::new(self.change_journal(&settings.journal_table)),
        );
        let refresher = match &settings.override_table {
            Some(table) => refresher
                .with_override_index(Arc::new(DynamoDbOverrides::new(self.dynamodb(), table))),
            None => {
                tracing::warn!(
                    "CONFIG_TABLE_NAME is not set: the override index blast radii read is not kept"
                );
                refresher
            }
        };
        let refresher = match &settings.cloud_map_service_id {
            Some(service_id) => refresher.with_stale_marking(
                settings.stale,
                Arc::new(CloudMapHealth::new(self.cloud_map(), service_id)),
            ),
            None => refresher,
        };
        let refresher = match &settings.change_feed {
            Some(feed) => refresher.with_change_feed(self.notice_publisher(feed)),
            None => refresher,
        };
        Ok(match &settings.stage_cache {
            Some(stage_cache) => refresher.with_stage_cache(
                Arc::new(SqsFlushRequests::new(
                    aws_sdk_sqs::Client::new(&self.config),
                    &stage_cache.flush_queue_url,
                    stage_cache.flush_delay,
                )),
                Arc::new(ApiGatewayStageCache::new(
                    aws_sdk_apigateway::Client::new(&self.config),
                    &stage_cache.rest_api_id,
                    &stage_cache.stage,
                )),
            ),
            None => refresher,
        })
    }

    /// Where config-refresh announces changes: IoT Core's data plane, or a
    /// plain MQTT broker.
    pub fn notice_publisher(&self, feed: &FeedSettings) -> Arc<dyn NoticePublisher> {
        match &feed.endpoint {
            FeedEndpoint::IotCore { endpoint } => Arc::new(IotCorePublisher::with_endpoint_url(
                &self.config,
                &format!("https://{endpoint}"),
                &feed.topic,
            )),
            FeedEndpoint::Mqtt { host, port } => Arc::new(MqttPublisher::new(feed, host, *port)),
        }
    }

    /// How a reader connects to the feed: plain MQTT, or IoT Core's signed
    /// WebSocket with this process's credentials.
    pub fn feed_connector(&self, feed: &FeedSettings) -> Result<Arc<dyn Connector>, String> {
        Ok(match &feed.endpoint {
            FeedEndpoint::Mqtt { host, port } => Arc::new(PlainConnector {
                host: host.clone(),
                port: *port,
            }),
            FeedEndpoint::IotCore { .. } => Arc::new(IotCoreConnector::new(&self.config, feed)?),
        })
    }

    /// Follows the change feed for `reads` in a task of its own (see
    /// [`crate::notices`]); `None` when the reads have no catch-up to fall
    /// back on or the connection cannot be set up (logged: the agent then
    /// polls the journal as without a feed).
    pub fn follow_change_feed(
        &self,
        feed: &FeedSettings,
        safety_interval: Duration,
        keys: TrustedKeys,
        reads: ConfigReads,
    ) -> Option<Arc<NoticeFollower<ConfigReads>>> {
        let Some(catch_up) = reads.catch_up_shared() else {
            tracing::warn!("change feed set but the reads have no change journal: not followed");
            return None;
        };
        let connector = match self.feed_connector(feed) {
            Ok(connector) => connector,
            Err(error) => {
                tracing::error!(%error, "change feed: cannot connect to IoT Core; polling the journal instead");
                return None;
            }
        };
        let follower = Arc::new(NoticeFollower::new(
            reads,
            catch_up,
            FollowerSettings {
                connected_interval: safety_interval,
                ..FollowerSettings::default()
            },
        ));
        tracing::info!(topic = %feed.topic, "following the change feed");
        tokio::spawn(crate::notices::mqtt::follow(
            feed.clone(),
            connector,
            keys,
            Arc::clone(&follower),
        ));
        Some(follower)
    }

    /// The agent's gRPC server: AWS-backed reads shared by ConfigReader and
    /// ConfigRefresh, the pool's JWKS, the trusted refresh public keys.
    pub async fn agent_server(
        &self,
        settings: &Settings,
        agent: &AgentSettings,
        warm_start: Option<&crate::warm_start::WarmStart>,
    ) -> Result<AgentServer, AgentWiringError> {
        // One feed for the reader and Refresh: what a push drops reaches
        // the Watch streams.
        let mut reads = self
            .config_reads(settings)
            .with_change_feed(Arc::new(crate::watch::ChangeFeed::default()));
        if let Some(warm) = warm_start {
            reads = reads.with_last_known_good(Arc::clone(&warm.values));
        }
        tracing::info!(keys = ?agent.refresh_public_keys.ids(), "trusting refresh signing keys");
        if let Some((feed, safety_interval)) = &agent.change_feed {
            self.follow_change_feed(
                feed,
                *safety_interval,
                agent.refresh_public_keys.clone(),
                reads.clone(),
            );
        }
        let mut reader = ReaderService::new(token_verifier(settings)?, reads.clone());
        if let Some(grants) =
            self.service_grants_remembered(settings, warm_start.map(|warm| &warm.values))
        {
            reader = reader.with_service_grants(grants);
        }
        if agent.serve_secrets {
            reader = reader.serving_secrets();
        }
        let server = AgentServer::new(
            reader,
            RefreshService::new(
                RefreshAuthenticator::new(agent.refresh_public_keys.clone()).for_agent_at(
                    AgentAddress::new(
                        agent.refresh_listen,
                        agent.registration.as_ref().map(|r| r.address.ip()),
                    ),
                ),
                reads,
            ),
        )
        .await;
        Ok(match &agent.refresh_tls {
            RefreshListenerTls::Files { certificate, key } => {
                let read = |path: &std::path::PathBuf| {
                    std::fs::read(path).map_err(|source| AgentWiringError::Tls {
                        path: path.display().to_string(),
                        source,
                    })
                };
                tracing::info!(certificate = %certificate.display(), "Refresh listener serves TLS");
                server.with_refresh_tls(&read(certificate)?, &read(key)?)
            }
            RefreshListenerTls::Pem { identity } => {
                tracing::info!("Refresh listener serves TLS (identity from AGENT_TLS_PEM)");
                // One PEM holds both: the chain is read from its certificate
                // blocks, the key from its private key block.
                server.with_refresh_tls(identity.as_bytes(), identity.as_bytes())
            }
            RefreshListenerTls::Plaintext => {
                tracing::warn!(
                    listen = %agent.refresh_listen,
                    "Refresh listener serves plaintext (REFRESH_PLAINTEXT=allow): for local use only"
                );
                server
            }
        })
    }

    /// Registers this agent in its Cloud Map service.
    pub async fn register_agent(
        &self,
        registration: &RegistrationSettings,
    ) -> Result<Registration, DiscoveryError> {
        Registration::register(
            self.cloud_map(),
            &registration.service_id,
            &registration.instance_id,
            registration.address,
        )
        .await
    }
}

/// Why the agent's server could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AgentWiringError {
    #[error(transparent)]
    Jwks(#[from] JwksError),
    #[error("cannot read the Refresh listener's TLS file {path}: {source}")]
    Tls {
        path: String,
        source: std::io::Error,
    },
}

/// The verifier with its background key refresher running (it stops when
/// the verifier is dropped).
fn token_verifier(settings: &Settings) -> Result<Arc<TokenVerifier>, JwksError> {
    let verifier = Arc::new(TokenVerifier::over_http(&settings.auth)?);
    verifier.spawn_refresher();
    Ok(verifier)
}

/// DiscoverInstances is served on the `data-` host prefix
/// (`data-servicediscovery.{region}.amazonaws.com`). Against a custom endpoint
/// such as a local moto (`http://127.0.0.1:PORT`) that prefix yields an
/// unresolvable host, so it is removed before the request is built.
#[derive(Debug)]
struct StripHostPrefix;

impl Intercept for StripHostPrefix {
    fn name(&self) -> &'static str {
        "StripHostPrefix"
    }

    fn modify_before_serialization(
        &self,
        _context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .unset::<aws_smithy_runtime_api::client::endpoint::EndpointPrefix>();
        Ok(())
    }
}
