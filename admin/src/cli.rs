//! The `tenant-config-admin` command line: arguments and what each command does.

use clap::{Args, Parser, Subcommand, ValueEnum};

use std::time::Duration;

use aws_config::SdkConfig;

use crate::access::{self, QuotaAction};
use crate::agent_client;
use crate::events::send_event;
use crate::layer_commands::{LayerCommand, TenantCommand, run_layer, run_tenant};
use crate::rollout_commands::{RolloutCommand, run_rollout};
use crate::stack::{StackOutputs, output, resolve};
use crate::stack_commands::{SignIn, UserCommand, password_or_demo, run_user, run_verify};
use crate::values::{ParameterKind, Target, default_actor};
use crate::verify::VerifyOptions;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::refresh::journal::ChangeJournal;
use tenant_config_shared::refresh::signing::unix_ms_now;
use tenant_config_shared::routing::{DEFAULT_DYNAMODB_PREFIX, DEFAULT_PARAMETER_PREFIX, KeyRouter};
use tenant_config_shared::write::{Actor, Expected};
use tenant_config_shared::{ConfigKey, ItemKey, ServiceName, TenantId};

#[derive(Parser)]
#[command(
    version,
    about = "Administer tenant-config: values, users, tokens, refresh events, deploy checks"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The deployed CloudFormation stack: every name below that is not given
    /// is read from its outputs.
    #[arg(long, env = "TENANT_CONFIG_STACK", global = true)]
    stack: Option<String>,
    /// DynamoDB table of tenant configuration (stack output `TableName`;
    /// without a stack, `tenant-config`).
    #[arg(long, env = "CONFIG_TABLE_NAME", global = true)]
    table: Option<String>,
    /// Root of tenant parameters (stack output `ParameterRoot`; without a
    /// stack, `/config-service`).
    #[arg(long, env = "PARAMETER_ROOT", global = true)]
    parameter_root: Option<String>,
    /// KMS key SecureStrings are written with (stack output
    /// `SecureStringKmsKeyArn` when the stack has one; else `aws/ssm`).
    #[arg(long, env = "SECURESTRING_KMS_KEY_ID", global = true)]
    secure_string_key: Option<String>,
    #[arg(long, env = "DYNAMODB_KEY_PREFIX", default_value = DEFAULT_DYNAMODB_PREFIX, global = true)]
    dynamodb_prefix: String,
    #[arg(long, env = "PARAMETER_KEY_PREFIX", default_value = DEFAULT_PARAMETER_PREFIX, global = true)]
    parameter_prefix: String,
}

/// Optimistic concurrency: the version the operator read.
#[derive(Args)]
struct Expect {
    /// Fail with the current version unless the key is at this version.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..i64::MAX))]
    expect_version: Option<i64>,
}

impl Expect {
    fn expected(&self, create: bool) -> Expected {
        match (self.expect_version, create) {
            (Some(v), _) => Expected::Version(v),
            (None, true) => Expected::Absent,
            (None, false) => Expected::Any,
        }
    }
}

#[derive(Args)]
struct ActorArg {
    /// Who the change is recorded as (default `cli:$USER`).
    #[arg(long)]
    actor: Option<String>,
}

impl ActorArg {
    fn actor(&self) -> Actor {
        self.actor.clone().map(Actor).unwrap_or_else(default_actor)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    String,
    StringList,
    SecureString,
}

#[derive(Subcommand)]
enum Command {
    /// The shared layers: `layer put global SERVICE KEY VALUE`, `tier:NAME`.
    Layer {
        #[command(subcommand)]
        command: LayerCommand,
    },
    /// The tenant registry: each tenant's tier, and whether it is active.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Rollouts of a shared change, tenant by tenant: `rollout start global
    /// SERVICE KEY VALUE --steps JSON`, `get`, `pause`, `resume`, `abort`.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Write a value (the key's prefix picks the store).
    Put {
        tenant: String,
        service: String,
        key: String,
        value: String,
        /// Parameter Store type (DynamoDB keys are always plain).
        #[arg(long = "type", value_enum, default_value = "string")]
        kind: Kind,
        /// VALUE is JSON, as the API's PUT takes it: `true`, `25`, `{"a":1}`
        /// (a boolean or number stays typed in DynamoDB; Parameter Store holds text).
        #[arg(long, conflicts_with = "kind")]
        json: bool,
        #[command(flatten)]
        expect: Expect,
        /// Create only: fail if the key exists.
        #[arg(long, conflicts_with = "expect_version")]
        create: bool,
        #[command(flatten)]
        actor: ActorArg,
    },
    /// List a key's versions, newest first, with who wrote each (secrets'
    /// values are never shown).
    History {
        tenant: String,
        service: String,
        key: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Store the JSON Schema that every write of a service (or of one key)
    /// must satisfy, through the API and this CLI.
    Schema {
        service: String,
        /// Only this key (its schema wins over the service's).
        #[arg(long)]
        key: Option<String>,
        /// The schema document (JSON).
        schema: String,
    },
    /// Grant an app client (a consuming service's) the services it may
    /// read, and those whose SecureStrings it may read; replaces its grant.
    /// With no services, removes the grant: the client reads nothing.
    Grant {
        /// The app client id (the `aud` of its users' ID tokens).
        client_id: String,
        /// Services it may read, comma-separated; `*` for every service.
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// Of those, services whose SecureStrings it may read; `*` for all.
        #[arg(long, value_delimiter = ',')]
        secure: Vec<String>,
        /// Also flush the stage cache (needs --stack): answers it holds for
        /// the client's tokens go at once instead of after its TTL.
        #[arg(long)]
        flush_stage_cache: bool,
    },
    /// A tenant's key quota.
    Quota {
        #[command(subcommand)]
        action: QuotaAction,
    },
    /// Store an earlier version's value again, as a new version.
    Rollback {
        tenant: String,
        service: String,
        key: String,
        /// The version to restore.
        #[arg(long)]
        to: i64,
        #[command(flatten)]
        expect: Expect,
        #[command(flatten)]
        actor: ActorArg,
    },
    /// Read a value as the functions do.
    Get {
        tenant: String,
        service: String,
        key: String,
        /// Reveal a SecureString.
        #[arg(long)]
        decrypt: bool,
    },
    /// Delete a value.
    Delete {
        tenant: String,
        service: String,
        key: String,
        #[command(flatten)]
        expect: Expect,
        #[command(flatten)]
        actor: ActorArg,
    },
    /// Sign a user in and print the ID token: as an operator
    /// (AdminInitiateAuth) when the pool is known (stack output `UserPoolId`,
    /// or the pool in COGNITO_ISSUER), else as an app (USER_PASSWORD_AUTH).
    Token {
        username: String,
        /// Without a stack, defaults to the local stack's demo password.
        #[arg(long, env = "TENANT_CONFIG_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// App client (stack output `UserPoolClientId`; else the first of
        /// COGNITO_CLIENT_IDS).
        #[arg(long, env = "COGNITO_CLIENT_IDS", value_delimiter = ',')]
        client_id: Vec<String>,
        /// The pool's issuer, whose last segment is the pool id.
        #[arg(long, env = "COGNITO_ISSUER")]
        issuer: Option<String>,
    },
    /// Users of the stack's pool: a tenant's readers and administrators.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Check what a deploy can get wrong, each failure with its fix; exits 1
    /// if any check fails.
    Verify {
        /// Seconds a probe write may take to reach the change journal.
        #[arg(long, default_value_t = 30)]
        journal_timeout_secs: u64,
        /// Seconds each probe Refresh call to an agent may take.
        #[arg(long, default_value_t = 3)]
        agent_timeout_secs: u64,
        /// No agents run yet: zero registered agents is not a failure.
        #[arg(long)]
        no_agents: bool,
        /// Seconds the read through the API may take.
        #[arg(long, default_value_t = 10)]
        http_timeout_secs: u64,
    },
    /// Read a value through a config agent (gRPC GetConfig) with a token.
    AgentGet {
        /// Agent address, e.g. http://127.0.0.1:50051
        #[arg(long)]
        agent: String,
        #[arg(long, env = "TENANT_CONFIG_TOKEN")]
        token: String,
        service: String,
        key: String,
    },
    /// List journaled changes (newest last), e.g. `changes --since 15m`.
    Changes {
        /// How far back: a duration (`90s`, `15m`, `2h`, `1d`) or Unix ms.
        #[arg(long, default_value = "1h")]
        since: String,
        /// The change journal table (stack output `ChangeJournalTableName`;
        /// without a stack, `tenant-config-changes`).
        #[arg(long, env = "JOURNAL_TABLE_NAME")]
        journal_table: Option<String>,
        /// At most this many changes.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Generate config-refresh's Ed25519 signing key into a SecureString
    /// parameter and print the public entry agents trust
    /// (`REFRESH_PUBLIC_KEYS`); `--public-only` prints the stored key's.
    RefreshKey {
        /// Key id, e.g. `2026-11` (`[A-Za-z0-9_-]`, ≤ 64).
        #[arg(long, default_value = "k1")]
        id: String,
        /// The SecureString parameter (config-refresh's `REFRESH_KEY_PARAMETER`;
        /// stack output `RefreshKeyParameterName`).
        #[arg(long, env = "REFRESH_KEY_PARAMETER")]
        parameter: Option<String>,
        /// Print the public entry of the key already stored; change nothing.
        #[arg(long)]
        public_only: bool,
        /// Replace a key the parameter already holds (agents refuse pushes
        /// until they trust the new key).
        #[arg(long, conflicts_with = "public_only")]
        overwrite: bool,
    },
    /// Generate the agents' Refresh TLS material into Parameter Store.
    AgentTls(crate::agent_tls::AgentTlsArgs),
    /// Apply the stage settings CloudFormation cannot set: refuse
    /// `Cache-Control: max-age=0` from callers (403) on the whole stage and on
    /// each cached method. Run after every deploy that replaces the stage.
    StageSettings {
        /// The REST API id (stack output `ApiId`).
        #[arg(long, env = "STAGE_CACHE_REST_API_ID")]
        api_id: Option<String>,
        /// The stage (stack output `StageName`; without a stack, `prod`).
        #[arg(long, env = "STAGE_CACHE_STAGE")]
        stage: Option<String>,
    },
    /// Send the "Parameter Store Change" event for a key to config-refresh.
    Event {
        tenant: String,
        service: String,
        key: String,
        #[arg(long, default_value = "Update")]
        operation: String,
        /// Lambda Invoke API base URL (cargo lambda watch).
        #[arg(long, env = "TENANT_CONFIG_INVOKE_URL")]
        invoke_url: Option<String>,
        /// Only print the event JSON.
        #[arg(long)]
        print: bool,
    },
}

/// Runs one command; the error is what the operator reads.
pub async fn run(cli: Cli) -> Result<(), String> {
    let stack = match &cli.stack {
        Some(name) => Some(StackOutputs::describe(&aws_config().await?, name).await?),
        None => None,
    };
    let stack = stack.as_ref();
    let target = Target {
        secure_string_key: cli.secure_string_key.clone().or_else(|| {
            stack
                .and_then(|s| s.outputs.get(output::SECURE_STRING_KMS_KEY_ARN))
                .cloned()
        }),
        table: resolve(
            cli.table.as_deref(),
            stack,
            output::TABLE_NAME,
            Some("tenant-config"),
        )?,
        parameter_root: resolve(
            cli.parameter_root.as_deref(),
            stack,
            output::PARAMETER_ROOT,
            Some("/config-service"),
        )?,
        router: KeyRouter::new(&cli.dynamodb_prefix, &cli.parameter_prefix)
            .map_err(|e| e.to_string())?,
    };
    let aws = aws_config;
    match cli.command {
        Command::Layer { command } => run_layer(&target, &aws().await?, command).await?,
        Command::Tenant { command } => run_tenant(&target, &aws().await?, command).await?,
        Command::Rollout { command } => run_rollout(&target, &aws().await?, command).await?,
        Command::Put {
            tenant,
            service,
            key,
            value,
            kind,
            json,
            expect,
            create,
            actor,
        } => {
            let item = ItemKey::parse(&tenant, &service, &key).map_err(|e| e.to_string())?;
            let kind = match kind {
                Kind::String => ParameterKind::String,
                Kind::StringList => ParameterKind::StringList,
                Kind::SecureString => ParameterKind::SecureString,
            };
            let (aws, expected) = (aws().await?, expect.expected(create));
            let (store, written) = if json {
                let value: serde_json::Value = serde_json::from_str(&value)
                    .map_err(|e| format!("--json: VALUE is no JSON: {e}"))?;
                target
                    .write_json(&aws, &item, &value, expected, &actor.actor())
                    .await?
            } else {
                target
                    .write(&aws, &item, &value, kind, expected, &actor.actor())
                    .await?
            };
            eprintln!(
                "stored {} in {store} as version {}",
                item.cache_key(),
                written.version
            );
        }
        Command::History {
            tenant,
            service,
            key,
            limit,
        } => {
            let item = ItemKey::parse(&tenant, &service, &key).map_err(|e| e.to_string())?;
            let versions = target.history(&aws().await?, &item, limit).await?;
            for version in &versions {
                println!("{}", crate::changes::version_line(version));
            }
            if versions.is_empty() {
                return Err(format!("{} has no history", item.cache_key()));
            }
        }
        Command::Schema {
            service,
            key,
            schema,
        } => {
            let service = ServiceName::parse(&service).map_err(|e| e.to_string())?;
            let key = key
                .map(|k| ConfigKey::parse(&k))
                .transpose()
                .map_err(|e| e.to_string())?;
            let schema: serde_json::Value = serde_json::from_str(&schema)
                .map_err(|e| format!("the schema is not JSON: {e}"))?;
            target
                .put_schema(&aws().await?, &service, key.as_ref(), &schema)
                .await?;
            eprintln!(
                "schema stored for {service}{}",
                key.map(|k| format!("/{k}")).unwrap_or_default()
            );
        }
        Command::Grant {
            client_id,
            services,
            secure,
            flush_stage_cache,
        } => {
            let grant = access::grant(&services, &secure)?;
            let stage = match flush_stage_cache {
                true => Some((
                    resolve(None, stack, output::API_ID, None)?,
                    resolve(None, stack, output::STAGE_NAME, None)?,
                )),
                false => None,
            };
            access::run_grant(&aws().await?, &target, &client_id, grant, stage).await?;
        }
        Command::Quota {
            action: QuotaAction::Recount { tenant },
        } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| e.to_string())?;
            let count = access::recount_keys(&aws().await?, &target, &tenant).await?;
            println!("{tenant} stores {count} keys; its key quota counts from there");
        }
        Command::Rollback {
            tenant,
            service,
            key,
            to,
            expect,
            actor,
        } => {
            let item = ItemKey::parse(&tenant, &service, &key).map_err(|e| e.to_string())?;
            let written = target
                .rollback(
                    &aws().await?,
                    &item,
                    to,
                    expect.expected(false),
                    &actor.actor(),
                )
                .await?;
            eprintln!(
                "restored version {to} of {} as version {}",
                item.cache_key(),
                written.version
            );
        }
        Command::Get {
            tenant,
            service,
            key,
            decrypt,
        } => {
            let item = ItemKey::parse(&tenant, &service, &key).map_err(|e| e.to_string())?;
            match target.get(&aws().await?, &item, decrypt).await? {
                Some(value) => println!("{value}"),
                None => return Err(format!("{} not found", item.cache_key())),
            }
        }
        Command::Delete {
            tenant,
            service,
            key,
            expect,
            actor,
        } => {
            let item = ItemKey::parse(&tenant, &service, &key).map_err(|e| e.to_string())?;
            let deleted = target
                .delete(&aws().await?, &item, expect.expected(false), &actor.actor())
                .await?;
            match deleted {
                Some(version) => eprintln!("deleted {} (was version {version})", item.cache_key()),
                None => return Err(format!("{} not found", item.cache_key())),
            }
        }
        Command::Token {
            username,
            password,
            client_id,
            issuer,
        } => {
            let sign_in = SignIn::resolve(stack, client_id.first(), issuer.as_deref())?;
            let password = password_or_demo(password, stack)?;
            println!(
                "{}",
                sign_in
                    .id_token(&aws().await?, &username, &password)
                    .await?
            );
        }
        Command::User { command } => run_user(command, stack, &aws().await?).await?,
        Command::Verify {
            journal_timeout_secs,
            agent_timeout_secs,
            no_agents,
            http_timeout_secs,
        } => {
            let options = VerifyOptions {
                journal_timeout: Duration::from_secs(journal_timeout_secs),
                agent_deadline: Duration::from_secs(agent_timeout_secs),
                no_agents,
                http_timeout: Duration::from_secs(http_timeout_secs),
            };
            run_verify(stack, &options).await?
        }
        Command::AgentGet {
            agent,
            token,
            service,
            key,
        } => {
            let value = agent_client::get_config(&agent, &token, &service, &key)
                .await
                .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
            println!("{value}");
        }
        Command::Changes {
            since,
            journal_table,
            limit,
        } => {
            let from_ms = crate::changes::since_ms(&since, unix_ms_now())?;
            let journal_table = resolve(
                journal_table.as_deref(),
                stack,
                output::CHANGE_JOURNAL_TABLE_NAME,
                Some("tenant-config-changes"),
            )?;
            let journal = Aws::from_env()
                .await
                .map_err(|e| e.to_string())?
                .change_journal(&journal_table);
            let entries = journal
                .since(from_ms, limit)
                .await
                .map_err(|e| e.to_string())?;
            for entry in &entries {
                println!("{}", crate::changes::line(entry));
            }
            eprintln!("{} change(s)", entries.len());
        }
        Command::RefreshKey {
            id,
            parameter,
            public_only,
            overwrite,
        } => {
            let parameter = resolve(
                parameter.as_deref(),
                stack,
                output::REFRESH_KEY_PARAMETER_NAME,
                None,
            )?;
            let aws = aws().await?;
            let ssm = aws_sdk_ssm::Client::new(&aws);
            let public = if public_only {
                tenant_config_shared::refresh::key::load_refresh_key(
                    &ssm,
                    &parameter,
                    &target.parameter_root,
                )
                .await
                .map_err(|e| e.to_string())?
                .public_entry()
            } else {
                crate::values::put_refresh_key(
                    &ssm,
                    &parameter,
                    &target.parameter_root,
                    &id,
                    overwrite,
                )
                .await?
            };
            println!("{public}");
        }
        Command::AgentTls(args) => args.run(stack, &aws().await?).await?,
        Command::StageSettings { api_id, stage } => {
            let api_id = resolve(api_id.as_deref(), stack, output::API_ID, None)?;
            let stage = resolve(stage.as_deref(), stack, output::STAGE_NAME, Some("prod"))?;
            let client = aws_sdk_apigateway::Client::new(&aws().await?);
            let applied = tenant_config_shared::stage_settings::apply(&client, &api_id, &stage)
                .await
                .map_err(|e| e.to_string())?;
            for (path, value) in applied {
                println!("{path} = {value}");
            }
        }
        Command::Event {
            tenant,
            service,
            key,
            operation,
            invoke_url,
            print,
        } => {
            let item = ItemKey::parse(&tenant, &service, &key).map_err(|e| e.to_string())?;
            let name = target.parameter_name(&item);
            let aws = if print { None } else { Some(aws().await?) };
            send_event(aws.as_ref(), &operation, &name, invoke_url.as_deref()).await?;
        }
    }
    Ok(())
}

async fn aws_config() -> Result<SdkConfig, String> {
    Aws::from_env()
        .await
        .map(|aws| aws.sdk_config().clone())
        .map_err(|e| e.to_string())
}
