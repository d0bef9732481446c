//! The local stack: moto with seeded tenants and data, and config-api under
//! `cargo lambda watch`. One implementation serves the demo (`local-stack`)
//! and the end-to-end tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use std::collections::BTreeSet;
use tenant_config_admin::events::change_event;

use tenant_config_admin::tokens::id_token;
use tenant_config_admin::values::{ParameterKind, put_item, put_parameter};
use tenant_config_shared::ItemKey;
use tenant_config_shared::grants::{ALL_SERVICES, DynamoDbGrants, Grant};

use crate::agent::AgentProcess;
use crate::bridge::{DockerBridge, Forwarder, container_env, loopback_endpoint};
use crate::broker::Broker;
use crate::fault_proxy::FaultProxy;
use crate::moto::MotoServer;
use crate::published::{self, Published};
use crate::queue::QueueMapping;
use crate::sam::SamLocal;
use crate::scheduler::{FeedHeartbeat, RolloutSchedule};
use crate::seed::{self, CloudMap, UserPool};
use crate::stage_cache::StageCacheStub;
use crate::stream::StreamMapping;
use crate::watch::LambdaWatch;

pub const TABLE: &str = "tenant-config";
pub const JOURNAL_TABLE: &str = "tenant-config-changes";
pub const FLUSH_QUEUE: &str = "tenant-config-stage-cache-flush";
/// The REST API and stage whose (stand-in) stage cache config-refresh flushes.
pub const REST_API_ID: &str = "local-config-api";
pub const STAGE: &str = "prod";
pub const PARAMETER_ROOT: &str = "/config-service";
/// Outside the watched root, so changing it triggers no refresh.
pub const REFRESH_KEY_PARAMETER: &str = "/tenant-config/refresh-key";
/// The role config-api's reads and the agents assume per tenant (moto's STS).
pub const TENANT_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/tenant-config-tenant-read";
/// The role config-api's write routes assume per tenant.
pub const TENANT_WRITE_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/tenant-config-tenant-write";
/// The key SecureStrings are written with, as when the template's
/// `SecureStringKmsKeyArn` is set (moto records it on each version and does
/// not check that the key exists).
pub const SECURESTRING_KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:123456789012:key/7e1c0a52-tenant-config-local";
/// Where the local stack's agent TLS material lives (`agent_tls` stacks), as
/// `tenant-config-admin agent-tls` writes it for a deployed stack.
pub const AGENT_TLS_PATH: &str = "/tenant-config/tenant-config-local/agents/tls";
/// The alias of the agents' snapshot key in moto (the template's
/// `alias/{stack}-agent-snapshots`).
pub const SNAPSHOT_KEY_ALIAS: &str = "alias/tenant-config-local-agent-snapshots";
/// Key id of the local stack's refresh signing key.
pub const REFRESH_KEY_ID: &str = "local-1";
pub const CLOUD_MAP_NAMESPACE: &str = "tenant-config.local";
pub const CLOUD_MAP_SERVICE: &str = "config-agent";
/// config-refresh's per-agent deadline in the local stack.
pub const REFRESH_DEADLINE_MS: u64 = 2000;
pub const SERVICE: &str = "billing";
/// The change feed's topic and client id prefix (the template's
/// `tenant-config/{stack}/changes` and `{stack}`).
pub const FEED_TOPIC: &str = "tenant-config/tenant-config-local/changes";
pub const FEED_CLIENT_PREFIX: &str = "tenant-config-local";
/// The app client granted only `SERVICE`'s plain values.
pub const LIMITED_CLIENT_NAME: &str = "tenant-config-limited";
/// The local agents listen on loopback, outside the private ranges
/// config-refresh otherwise pushes to.
pub const LOCAL_AGENT_NETWORKS: &str = "127.0.0.0/8";
pub const PASSWORD: &str = tenant_config_admin::tokens::LOCAL_DEMO_PASSWORD;

/// A user of the seeded pool.
#[derive(Debug, Clone, Copy)]
pub struct DemoUser {
    pub username: &'static str,
    pub tenant: Option<&'static str>,
}

pub const ALICE: DemoUser = DemoUser {
    username: "alice",
    tenant: Some("tenant-a"),
};
pub const BOB: DemoUser = DemoUser {
    username: "bob",
    tenant: Some("tenant-b"),
};
/// Tenant A's administrator: in the admin group, may write tenant A's configuration.
pub const DANA: DemoUser = DemoUser {
    username: "dana",
    tenant: Some("tenant-a"),
};
/// The admin group, as the template's `AdminGroupName` default.
pub const ADMIN_GROUP: &str = "config-admins";
/// A platform administrator: writes the shared layers and the registry,
/// belongs to no tenant.
pub const PAT: DemoUser = DemoUser {
    username: "pat",
    tenant: None,
};
/// The platform administrators' group, as `PlatformAdminGroupName`'s default.
pub const PLATFORM_ADMIN_GROUP: &str = "config-platform-admins";
/// The role config-api's platform routes assume (moto's STS issues it).
pub const PLATFORM_WRITE_ROLE_ARN: &str =
    "arn:aws:iam::123456789012:role/tenant-config-platform-write";
/// Signed in fine, but belongs to no tenant: gets 403.
pub const CAROL: DemoUser = DemoUser {
    username: "carol",
    tenant: None,
};

/// Seeded DynamoDB items: (tenant, key, stored text).
pub const DYNAMODB_ITEMS: &[(&str, &str, &str)] = &[
    (
        "tenant-a",
        "tenant_config_limits",
        r#"{"max_users":50,"tier":"gold"}"#,
    ),
    ("tenant-a", "tenant_config_theme", "dark"),
    (
        "tenant-b",
        "tenant_config_limits",
        r#"{"max_users":5,"tier":"free"}"#,
    ),
];

/// Seeded parameters: (tenant, key, value, type).
pub const PARAMETERS: &[(&str, &str, &str, ParameterKind)] = &[
    (
        "tenant-a",
        "param_config_endpoint",
        "https://billing.tenant-a.example",
        ParameterKind::String,
    ),
    (
        "tenant-a",
        "param_config_regions",
        "eu-west-1,us-east-1",
        ParameterKind::StringList,
    ),
    (
        "tenant-a",
        "param_config_db_password",
        "tenant-a-db-secret",
        ParameterKind::SecureString,
    ),
    (
        "tenant-b",
        "param_config_endpoint",
        "https://billing.tenant-b.example",
        ParameterKind::String,
    ),
];

/// An HTTP answer from config-api.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What to start besides moto and the functions.
#[derive(Debug, Clone, Copy)]
pub struct StackOptions {
    /// Config agents to start and register in Cloud Map.
    pub agents: usize,
    /// Run the functions' release builds (benchmarks) instead of debug ones.
    pub release: bool,
    /// Settings added to (or replacing) the stack's for the functions and
    /// agents, e.g. a shorter threshold a test wants to reach.
    pub settings: &'static [(&'static str, &'static str)],
    /// Route Parameter Store, Cloud Map, STS and the JWKS through a
    /// [`FaultProxy`] the test can make throttle, refuse or stall.
    pub fault_proxy: bool,
    /// With `fault_proxy`: DynamoDB through it too, so that every store call
    /// of the functions and agents is counted (the benchmark's figure 9).
    pub dynamodb_through_proxy: bool,
    /// Serve Refresh over TLS as a deploy does: material made by
    /// `agent-tls` into Parameter Store, the agents given the identity as ECS
    /// hands it over (`AGENT_TLS_PEM`), config-refresh reading the CA parameter.
    /// Otherwise both sides run plaintext (`REFRESH_PLAINTEXT=allow`), so
    /// tests and in-process benchmark agents can call Refresh directly.
    pub agent_tls: bool,
    /// Publish the stack as a deployed one looks (see [`crate::published`]):
    /// the demo and the tests of `--stack` and `verify`; the others skip it.
    pub publish: bool,
    /// Serve `sam local`'s containers too: reachable on the docker bridge's
    /// gateway ([`crate::bridge`]), with sam local's inputs written
    /// ([`crate::sam`]). Fails to start when no docker daemon answers.
    pub containers: bool,
}

impl StackOptions {
    /// Debug functions with `agents` config agents.
    pub fn with_agents(agents: usize) -> Self {
        Self {
            agents,
            release: false,
            settings: &[],
            fault_proxy: false,
            dynamodb_through_proxy: false,
            agent_tls: false,
            publish: false,
            containers: false,
        }
    }
}

pub struct LocalStack {
    pub moto: MotoServer,
    pub aws: SdkConfig,
    pub pool: UserPool,
    pub cloud_map: CloudMap,
    pub watch: LambdaWatch,
    /// Delivers the table's stream to config-refresh, as the event source
    /// mapping does in AWS.
    pub stream: StreamMapping,
    /// Stands in for API Gateway's FlushStageCache (moto has none).
    pub stage_cache: StageCacheStub,
    /// Delivers the flush queue to config-refresh in batches.
    pub flush_queue: QueueMapping,
    /// Invokes rollout-driver as the schedule and the alarm rule do.
    pub rollout_schedule: RolloutSchedule,
    /// The change feed's broker (AWS IoT Core's part), and its heartbeat
    /// rule invoking config-refresh.
    pub broker: Broker,
    pub feed_heartbeat: FeedHeartbeat,
    pub agents: Vec<AgentProcess>,
    /// Environment the functions and agents run with.
    pub env: Vec<(String, String)>,
    /// In front of Parameter Store, Cloud Map and the JWKS, if asked for.
    pub faults: Option<FaultProxy>,
    /// The stack as an operator sees it (`--stack tenant-config-local`),
    /// when published.
    pub published: Option<Published>,
    /// A second app client, granted only [`SERVICE`]'s plain values (the
    /// demo's own client, `pool.client_id`, is granted everything).
    pub limited_client_id: String,
    /// What `sam local` runs against this stack with, when started for
    /// containers.
    pub sam: Option<SamLocal>,
    /// The bridge's forwarders to moto and the API Gateway stand-in, held
    /// so that they listen until the stack stops.
    _forwarders: Vec<Forwarder>,
}

/// Receives progress: a step's name and how long it took.
pub type Progress<'a> = &'a dyn Fn(&str, Duration);

async fn step<T>(
    progress: Progress<'_>,
    name: &str,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let started = Instant::now();
    let result = work.await.map_err(|e| format!("{name}: {e}"))?;
    progress(name, started.elapsed());
    Ok(result)
}

impl LocalStack {
    /// Starts moto, seeds it, and starts the functions and agents.
    pub async fn start(options: StackOptions, progress: Progress<'_>) -> Result<Self, String> {
        let moto = step(progress, "moto server", MotoServer::start()).await?;
        let aws = moto.sdk_config().await;
        let (pool, limited_client_id) = step(
            progress,
            "seed: table, user pool, users, values, layers, grants",
            async {
                seed_tables(&aws).await?;
                crate::layer_seeds::seed_layers(&aws).await?;
                let pool =
                    seed::create_user_pool(&aws, &moto.endpoint, "tenant-config-local").await?;
                for user in [ALICE, BOB, CAROL, DANA, PAT] {
                    seed::create_user(&aws, &pool, user.username, PASSWORD, user.tenant).await?;
                }
                seed::add_user_to_group(&aws, &pool, DANA.username, ADMIN_GROUP).await?;
                seed::add_user_to_group(&aws, &pool, PAT.username, PLATFORM_ADMIN_GROUP).await?;
                for (tenant, key, value, kind) in PARAMETERS {
                    put_parameter(&aws, PARAMETER_ROOT, &demo_item(tenant, key)?, value, *kind)
                        .await?;
                }
                // Service grants, as an operator sets them: the demo's client
                // reads every service and its secrets; a second client, as a
                // consuming service would have, only the demo service's plain values.
                let limited_client_id =
                    seed::create_app_client(&aws, &pool.pool_id, LIMITED_CLIENT_NAME).await?;
                let grants = DynamoDbGrants::new(aws_sdk_dynamodb::Client::new(&aws), TABLE);
                let every = || BTreeSet::from([ALL_SERVICES.to_owned()]);
                let grant = |services, secure_services| Grant {
                    services,
                    secure_services,
                };
                grants
                    .put(&pool.client_id, &grant(every(), every()))
                    .await
                    .map_err(|e| e.to_string())?;
                grants
                    .put(
                        &limited_client_id,
                        &grant(BTreeSet::from([SERVICE.to_owned()]), BTreeSet::new()),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((pool, limited_client_id))
            },
        )
        .await?;
        let (refresh_public_keys, cloud_map, snapshot_key) = step(
            progress,
            "seed: refresh signing key, Cloud Map namespace and service, snapshot key",
            async {
                let public = tenant_config_admin::values::put_refresh_key(
                    &aws_sdk_ssm::Client::new(&aws),
                    REFRESH_KEY_PARAMETER,
                    PARAMETER_ROOT,
                    REFRESH_KEY_ID,
                    false,
                )
                .await?;
                let cloud_map =
                    seed::create_cloud_map(&aws, CLOUD_MAP_NAMESPACE, CLOUD_MAP_SERVICE).await?;
                let snapshot_key = seed::create_snapshot_key(&aws, SNAPSHOT_KEY_ALIAS).await?;
                Ok::<_, String>((public, cloud_map, snapshot_key))
            },
        )
        .await?;
        let agent_tls = if options.agent_tls {
            Some(
                step(
                    progress,
                    "seed: agents' Refresh TLS material (agent-tls)",
                    async {
                        let ssm = aws_sdk_ssm::Client::new(&aws);
                        let parameters = tenant_config_admin::agent_tls::put(
                            &ssm,
                            AGENT_TLS_PATH,
                            tenant_config_shared::settings::DEFAULT_AGENT_TLS_DOMAIN,
                            // Past verify's renewal window (30 days).
                            90,
                            false,
                            Duration::ZERO,
                        )
                        .await?;
                        let identity =
                            tenant_config_admin::agent_tls::read_agent_identity(&ssm, &parameters)
                                .await?;
                        Ok::<_, String>((parameters.ca, identity))
                    },
                )
                .await?,
            )
        } else {
            None
        };
        let (flush_queue_url, flush_queue_arn) = step(
            progress,
            "seed: stage cache flush queue and API Gateway stand-in",
            seed::create_flush_queue(&aws, FLUSH_QUEUE),
        )
        .await?;
        let stage_cache = StageCacheStub::start().await?;
        let bridge =
            if options.containers {
                Some(DockerBridge::detect().ok_or(
                    "no docker daemon answers: `bash tests/sam-local.sh setup` starts one",
                )?)
            } else {
                None
            };
        let broker = step(
            progress,
            "MQTT broker for the change feed (rumqttd)",
            Broker::start(20_000, if options.release { "release" } else { "debug" }),
        )
        .await?;
        let mut env = function_env(&moto, &pool, &cloud_map);
        env.extend([
            ("CHANGE_FEED_URL".to_owned(), broker.url()),
            ("CHANGE_FEED_TOPIC".to_owned(), FEED_TOPIC.to_owned()),
            (
                "CHANGE_FEED_CLIENT_PREFIX".to_owned(),
                FEED_CLIENT_PREFIX.to_owned(),
            ),
        ]);
        if let Some(bridge) = &bridge {
            env.retain(|(name, _)| name != "AGENT_NETWORKS");
            env.push((
                "AGENT_NETWORKS".to_owned(),
                format!("{LOCAL_AGENT_NETWORKS},{}", bridge.agent_network()),
            ));
        }
        env.retain(|(name, _)| name != "COGNITO_CLIENT_IDS");
        env.extend([
            (
                "COGNITO_CLIENT_IDS".to_owned(),
                format!("{},{limited_client_id}", pool.client_id),
            ),
            ("SERVICE_GRANTS".to_owned(), "enforce".to_owned()),
            // Agents seal a snapshot with it when given AGENT_SNAPSHOT_FILE.
            ("AGENT_SNAPSHOT_KMS_KEY_ID".to_owned(), snapshot_key),
            // The agents get only the public key; config-refresh reads the
            // private one from REFRESH_KEY_PARAMETER.
            ("REFRESH_PUBLIC_KEYS".to_owned(), refresh_public_keys),
            ("FLUSH_QUEUE_URL".to_owned(), flush_queue_url.clone()),
            ("STAGE_CACHE_REST_API_ID".to_owned(), REST_API_ID.to_owned()),
            ("STAGE_CACHE_STAGE".to_owned(), STAGE.to_owned()),
            (
                "AWS_ENDPOINT_URL_API_GATEWAY".to_owned(),
                stage_cache.endpoint(),
            ),
        ]);
        let agent_tls_env: Vec<(String, String)> = match agent_tls {
            Some((ca_parameter, identity)) => {
                env.push(("REFRESH_TLS_CA_PARAMETER".to_owned(), ca_parameter));
                vec![("AGENT_TLS_PEM".to_owned(), identity)]
            }
            None => {
                env.push((
                    "REFRESH_PLAINTEXT".to_owned(),
                    tenant_config_shared::settings::PLAINTEXT_ALLOWED.to_owned(),
                ));
                Vec::new()
            }
        };
        let faults = if options.fault_proxy {
            let proxy = FaultProxy::start(&moto.endpoint).await?;
            let through_proxy = proxy.endpoint();
            env.retain(|(name, _)| name != "COGNITO_JWKS_URL");
            env.extend([
                ("AWS_ENDPOINT_URL_SSM".to_owned(), through_proxy.clone()),
                (
                    "AWS_ENDPOINT_URL_SERVICEDISCOVERY".to_owned(),
                    through_proxy.clone(),
                ),
                // Recorded, to show which tenant role each call assumes.
                ("AWS_ENDPOINT_URL_STS".to_owned(), through_proxy.clone()),
                (
                    "COGNITO_JWKS_URL".to_owned(),
                    pool.jwks_url.replace(&moto.endpoint, &through_proxy),
                ),
            ]);
            if options.dynamodb_through_proxy {
                env.push((
                    "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
                    through_proxy.clone(),
                ));
            }
            Some(proxy)
        } else {
            None
        };
        for (name, value) in options.settings {
            env.retain(|(existing, _)| existing != name);
            env.push(((*name).to_owned(), (*value).to_owned()));
        }
        // Agents never write: they get neither the write role nor the group.
        let agent_env: Vec<(String, String)> = env
            .iter()
            .filter(|(name, _)| {
                ![
                    "TENANT_WRITE_ROLE_ARN",
                    "ADMIN_GROUP",
                    "PLATFORM_ADMIN_GROUP",
                    "PLATFORM_WRITE_ROLE_ARN",
                ]
                .contains(&name.as_str())
            })
            .cloned()
            .chain(agent_tls_env)
            .collect();
        let mut agents = Vec::with_capacity(options.agents);
        for i in 1..=options.agents {
            let name = format!("agent-{i}");
            let agent = step(
                progress,
                &format!("config agent {name}"),
                // The functions' profile: the benchmark runs release builds.
                // On the bridge's gateway for containers: the host reaches
                // that address too.
                AgentProcess::start_on(
                    &name,
                    &agent_env,
                    &crate::agent::agent_binary_of(if options.release {
                        "release"
                    } else {
                        "debug"
                    }),
                    bridge.map_or(std::net::Ipv4Addr::LOCALHOST, |b| b.gateway),
                ),
            )
            .await?;
            agents.push(agent);
        }
        let watch = step(
            progress,
            "config-api, config-refresh and rollout-driver under cargo lambda watch",
            LambdaWatch::start(&env, "config-api", options.release),
        )
        .await?;
        let flush_queue = QueueMapping::start(
            &aws,
            flush_queue_url,
            flush_queue_arn,
            watch.base_url.clone(),
            "config-refresh",
        );
        let rollout_schedule =
            RolloutSchedule::start(&aws, watch.base_url.clone(), "rollout-driver");
        let feed_heartbeat = FeedHeartbeat::start(watch.base_url.clone(), "config-refresh");
        let stream = step(
            progress,
            "DynamoDB stream → config-refresh (the event source mapping)",
            StreamMapping::start(&aws, TABLE, watch.base_url.clone(), "config-refresh"),
        )
        .await?;
        let (sam, forwarders) = match bridge {
            Some(bridge) => {
                step(
                    progress,
                    "sam local: forwarders on the docker bridge, target/sam-env.json",
                    async {
                        let mut forwarders = Vec::new();
                        for endpoint in [moto.endpoint.clone(), stage_cache.endpoint()] {
                            forwarders.push(
                                Forwarder::start(
                                    bridge.gateway,
                                    bridge.subnet,
                                    loopback_endpoint(&endpoint)?,
                                )
                                .await?,
                            );
                        }
                        let settings = container_env(&env, &forwarders)?;
                        let token =
                            id_token(&aws, &pool.client_id, ALICE.username, PASSWORD).await?;
                        let admin =
                            id_token(&aws, &pool.client_id, DANA.username, PASSWORD).await?;
                        let sam = SamLocal::write(&settings, &token, &admin)?;
                        Ok::<_, String>((Some(sam), forwarders))
                    },
                )
                .await?
            }
            None => (None, Vec::new()),
        };
        let published = if options.publish {
            Some(
                step(
                    progress,
                    "published as CloudFormation stack tenant-config-local (outputs, alarms, DLQ)",
                    publish_stack(&aws, &pool, &cloud_map, &watch, &env),
                )
                .await?,
            )
        } else {
            None
        };
        Ok(Self {
            published,
            limited_client_id,
            moto,
            aws,
            pool,
            cloud_map,
            watch,
            stream,
            stage_cache,
            flush_queue,
            rollout_schedule,
            broker,
            feed_heartbeat,
            agents,
            env,
            faults,
            sam,
            _forwarders: forwarders,
        })
    }

    /// The value of one of the stack's settings.
    pub fn setting(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Overwrites a parameter of the demo service in moto.
    pub async fn put_parameter(
        &self,
        tenant: &str,
        key: &str,
        value: &str,
    ) -> Result<String, String> {
        put_parameter(
            &self.aws,
            PARAMETER_ROOT,
            &demo_item(tenant, key)?,
            value,
            ParameterKind::String,
        )
        .await
    }

    /// Overwrites a parameter of the demo service and sends the Update event
    /// EventBridge would; the inner `Err` is config-refresh's error payload.
    pub async fn change_parameter(
        &self,
        tenant: &str,
        key: &str,
        value: &str,
    ) -> Result<Result<serde_json::Value, String>, String> {
        let name = self.put_parameter(tenant, key, value).await?;
        self.send_change_event("Update", &name).await
    }

    /// Invokes config-refresh with the "Parameter Store Change" event AWS
    /// sends for `operation` on `parameter_name`, under a new event id.
    pub async fn send_change_event(
        &self,
        operation: &str,
        parameter_name: &str,
    ) -> Result<Result<serde_json::Value, String>, String> {
        // The type EventBridge would carry (the parameter's own); the
        // description is left out, as a write outside tenant-config's writers.
        let facts = tenant_config_admin::events::parameter_facts(
            &aws_sdk_ssm::Client::new(&self.aws),
            parameter_name,
        )
        .await;
        self.watch
            .invoke(
                "config-refresh",
                &change_event(
                    operation,
                    parameter_name,
                    "",
                    facts.parameter_type.as_deref(),
                ),
            )
            .await
    }

    /// Creates a CloudWatch alarm in moto for a rollout to watch as a gate.
    /// Its metric is never fed: whoever plays the failure sets its state
    /// ([`Self::set_gate`]), and the local stack's alarm rule does the rest.
    pub async fn create_gate(&self, name: &str) -> Result<(), String> {
        aws_sdk_cloudwatch::Client::new(&self.aws)
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("TenantConfigLocal")
            .metric_name("Errors")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(5.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold,
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("put_metric_alarm {name}: {e}"))
    }

    /// Sets a gate's state, as CloudWatch would on its metric.
    pub async fn set_gate(
        &self,
        name: &str,
        state: aws_sdk_cloudwatch::types::StateValue,
    ) -> Result<(), String> {
        aws_sdk_cloudwatch::Client::new(&self.aws)
            .set_alarm_state()
            .alarm_name(name)
            .state_value(state)
            .state_reason("set by hand on the local stack")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("set_alarm_state {name}: {e}"))
    }

    /// A fresh ID token for a seeded user, from moto's Cognito.
    pub async fn token(&self, user: DemoUser) -> Result<String, String> {
        id_token(&self.aws, &self.pool.client_id, user.username, PASSWORD).await
    }

    /// An ID token of `user` signed in through the limited app client.
    pub async fn limited_token(&self, user: DemoUser) -> Result<String, String> {
        id_token(&self.aws, &self.limited_client_id, user.username, PASSWORD).await
    }

    /// GETs a config-api path, with `Authorization: Bearer {token}` when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Answer, String> {
        self.send(reqwest::Method::GET, path, token, &[], None)
            .await
    }

    /// Any request to config-api: method, path, token, extra headers
    /// (e.g. `If-Match`) and a JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, String> {
        let mut request = reqwest::Client::new().request(method.clone(), self.api_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let body = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {path}: body is not JSON ({e}): {text}"))?;
        Ok(Answer {
            status,
            headers,
            body,
            text,
        })
    }

    /// Polls config-api and every running agent every `poll` until all serve
    /// `expected` for `key` of the demo service (as `token`'s tenant);
    /// returns how long that took, or an error after `bound`.
    pub async fn until_served_everywhere(
        &self,
        token: &str,
        key: &str,
        expected: &serde_json::Value,
        bound: std::time::Duration,
        poll: std::time::Duration,
    ) -> Result<std::time::Duration, String> {
        let started = std::time::Instant::now();
        let path = format!("/v1/config/{SERVICE}/{key}");
        loop {
            let api = self.get(&path, Some(token)).await?;
            let mut everywhere = api.body["value"] == *expected;
            for agent in self.agents.iter().filter(|a| a.is_running()) {
                if !everywhere {
                    break;
                }
                let text = agent
                    .get_config(token, SERVICE, key)
                    .await
                    .map_err(|s| format!("{:?} {}", s.code(), s.message()))?;
                everywhere = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .as_ref()
                    == Some(expected);
            }
            if everywhere {
                return Ok(started.elapsed());
            }
            if started.elapsed() > bound {
                return Err(format!(
                    "{expected} not served by config-api and every agent within {bound:?} (config-api: {})",
                    api.text
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// URL of a config-api path, e.g. `/v1/config/billing/tenant_config_limits`.
    pub fn api_url(&self, path: &str) -> String {
        self.watch.function_url("config-api", path)
    }
}

/// Publishes the stack's names as the template's outputs, with the alarms,
/// alarm topic and dead-letter queue the template creates.
async fn publish_stack(
    aws: &SdkConfig,
    pool: &UserPool,
    cloud_map: &CloudMap,
    watch: &LambdaWatch,
    env: &[(String, String)],
) -> Result<Published, String> {
    use tenant_config_admin::stack::{output, parameter};
    let published = published::create_operations(aws).await?;
    let outputs: BTreeMap<&str, String> = [
        (output::API_URL, watch.function_url("config-api", "")),
        (output::API_ID, REST_API_ID.to_owned()),
        (output::STAGE_NAME, STAGE.to_owned()),
        (output::USER_POOL_ID, pool.pool_id.clone()),
        (output::USER_POOL_CLIENT_ID, pool.client_id.clone()),
        ("Issuer", pool.issuer.clone()),
        (output::ADMIN_GROUP_NAME, ADMIN_GROUP.to_owned()),
        (output::TABLE_NAME, TABLE.to_owned()),
        (output::CHANGE_JOURNAL_TABLE_NAME, JOURNAL_TABLE.to_owned()),
        (output::PARAMETER_ROOT, PARAMETER_ROOT.to_owned()),
        (
            output::REFRESH_KEY_PARAMETER_NAME,
            REFRESH_KEY_PARAMETER.to_owned(),
        ),
        (output::AGENT_TLS_PARAMETER_PATH, AGENT_TLS_PATH.to_owned()),
        (output::AGENT_NAMESPACE_NAME, cloud_map.namespace.clone()),
        (output::AGENT_SERVICE_NAME, cloud_map.service.clone()),
        ("AgentServiceId", cloud_map.service_id.clone()),
        ("TenantReadRoleArn", TENANT_ROLE_ARN.to_owned()),
        (output::ALARM_TOPIC_ARN, published.alarm_topic_arn.clone()),
        ("DlqUrl", published.dlq_url.clone()),
        (
            output::SECURE_STRING_KMS_KEY_ARN,
            SECURESTRING_KMS_KEY_ARN.to_owned(),
        ),
    ]
    .into_iter()
    .collect();
    // What the functions push to (the bridge's gateway too, when the stack
    // serves containers), so that verify judges the agents' registrations
    // by the same networks.
    let agent_networks = env
        .iter()
        .find(|(name, _)| name == "AGENT_NETWORKS")
        .map_or(LOCAL_AGENT_NETWORKS.to_owned(), |(_, value)| value.clone());
    let parameters: BTreeMap<&str, String> = [(parameter::AGENT_NETWORKS, agent_networks)]
        .into_iter()
        .collect();
    published::publish(aws, &outputs, &parameters).await?;
    Ok(published)
}

/// An entry of the demo service.
pub fn demo_item(tenant: &str, key: &str) -> Result<ItemKey, String> {
    ItemKey::parse(tenant, SERVICE, key).map_err(|e| e.to_string())
}

/// The config table with the demo's items, and the change journal table.
pub async fn seed_tables(aws: &SdkConfig) -> Result<(), String> {
    seed::create_table(aws, TABLE).await?;
    seed::create_journal_table(aws, JOURNAL_TABLE).await?;
    for (tenant, key, value) in DYNAMODB_ITEMS {
        put_item(aws, TABLE, &demo_item(tenant, key)?, value).await?;
    }
    Ok(())
}

/// Environment for the functions and agents: AWS endpoint plus every
/// setting they read.
pub fn function_env(
    moto: &MotoServer,
    pool: &UserPool,
    cloud_map: &CloudMap,
) -> Vec<(String, String)> {
    let mut env = moto.aws_env();
    env.extend([
        ("CONFIG_TABLE_NAME".into(), TABLE.into()),
        ("JOURNAL_TABLE_NAME".into(), JOURNAL_TABLE.into()),
        ("AGENT_NETWORKS".into(), LOCAL_AGENT_NETWORKS.into()),
        // Token vending as deployed: every store call for a tenant is signed
        // with credentials from moto's STS AssumeRole tagged with the tenant
        // (moto enforces no IAM; the template test checks the policies).
        ("TENANT_ROLE_ARN".into(), TENANT_ROLE_ARN.into()),
        ("TENANT_WRITE_ROLE_ARN".into(), TENANT_WRITE_ROLE_ARN.into()),
        ("PARAMETER_ROOT".into(), PARAMETER_ROOT.into()),
        ("COGNITO_ISSUER".into(), pool.issuer.clone()),
        ("COGNITO_JWKS_URL".into(), pool.jwks_url.clone()),
        ("COGNITO_CLIENT_IDS".into(), pool.client_id.clone()),
        ("REFRESH_KEY_PARAMETER".into(), REFRESH_KEY_PARAMETER.into()),
        ("CLOUD_MAP_NAMESPACE".into(), cloud_map.namespace.clone()),
        ("CLOUD_MAP_SERVICE".into(), cloud_map.service.clone()),
        ("CLOUD_MAP_SERVICE_ID".into(), cloud_map.service_id.clone()),
        (
            "REFRESH_DEADLINE_MS".into(),
            REFRESH_DEADLINE_MS.to_string(),
        ),
        ("ADMIN_GROUP".into(), ADMIN_GROUP.into()),
        ("PLATFORM_ADMIN_GROUP".into(), PLATFORM_ADMIN_GROUP.into()),
        (
            "PLATFORM_WRITE_ROLE_ARN".into(),
            PLATFORM_WRITE_ROLE_ARN.into(),
        ),
        (
            "SECURESTRING_KMS_KEY_ID".into(),
            SECURESTRING_KMS_KEY_ARN.into(),
        ),
        ("RUST_LOG".into(), "info".into()),
    ]);
    env
}
