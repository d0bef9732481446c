//! The `tenant-config-admin` command line: arguments and what each command does.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::events::{change_event, invoke, parameter_description};
use crate::values::{ParameterKind, Target, default_actor};
use crate::{agent_client, tokens};
use tenant_config_shared::aws::Aws;
use tenant_config_shared::refresh::journal::ChangeJournal;
use tenant_config_shared::refresh::signing::unix_ms_now;
use tenant_config_shared::routing::{DEFAULT_DYNAMODB_PREFIX, DEFAULT_PARAMETER_PREFIX, KeyRouter};
use tenant_config_shared::write::{Actor, Expected};
use tenant_config_shared::{ConfigKey, ItemKey, ServiceName};

#[derive(Parser)]
#[command(
    version,
    about = "Administer tenant-config: values, tokens, refresh events"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// DynamoDB table of tenant configuration.
    #[arg(
        long,
        env = "CONFIG_TABLE_NAME",
        default_value = "tenant-config",
        global = true
    )]
    table: String,
    /// Root of tenant parameters.
    #[arg(
        long,
        env = "PARAMETER_ROOT",
        default_value = "/config-service",
        global = true
    )]
    parameter_root: String,
    #[arg(long, env = "DYNAMODB_KEY_PREFIX", default_value = DEFAULT_DYNAMODB_PREFIX, global = true)]
    dynamodb_prefix: String,
    #[arg(long, env = "PARAMETER_KEY_PREFIX", default_value = DEFAULT_PARAMETER_PREFIX, global = true)]
    parameter_prefix: String,
}

/// Optimistic concurrency: the version the operator read.
#[derive(Args)]
struct Expect {
    /// Fail with the current version unless the key is at this version.
    #[arg(long)]
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
    /// Write a value (the key's prefix picks the store).
    Put {
        tenant: String,
        service: String,
        key: String,
        value: String,
        /// Parameter Store type (DynamoDB keys are always plain).
        #[arg(long = "type", value_enum, default_value = "string")]
        kind: Kind,
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
    /// Sign a user in (USER_PASSWORD_AUTH) and print the ID token.
    Token {
        username: String,
        /// Defaults to the local stack's demo password.
        #[arg(long, env = "TENANT_CONFIG_PASSWORD", default_value = tokens::LOCAL_DEMO_PASSWORD, hide_default_value = true)]
        password: String,
        /// App client; defaults to the first of COGNITO_CLIENT_IDS.
        #[arg(long, env = "COGNITO_CLIENT_IDS", value_delimiter = ',')]
        client_id: Vec<String>,
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
        /// The change journal table.
        #[arg(
            long,
            env = "JOURNAL_TABLE_NAME",
            default_value = "tenant-config-changes"
        )]
        journal_table: String,
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
        /// The SecureString parameter (config-refresh's `REFRESH_KEY_PARAMETER`).
        #[arg(long, env = "REFRESH_KEY_PARAMETER")]
        parameter: String,
        /// Print the public entry of the key already stored; change nothing.
        #[arg(long)]
        public_only: bool,
    },
    /// Apply the stage settings CloudFormation cannot set: refuse
    /// `Cache-Control: max-age=0` from callers (403) on the whole stage and on
    /// each cached method. Run after every deploy that replaces the stage.
    StageSettings {
        /// The REST API id (stack output `ApiId`).
        #[arg(long, env = "STAGE_CACHE_REST_API_ID")]
        api_id: String,
        #[arg(long, env = "STAGE_CACHE_STAGE", default_value = "prod")]
        stage: String,
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
    let target = Target {
        table: cli.table,
        parameter_root: cli.parameter_root,
        router: KeyRouter::new(&cli.dynamodb_prefix, &cli.parameter_prefix)
            .map_err(|e| e.to_string())?,
    };
    let aws = || async {
        Aws::from_env()
            .await
            .map(|aws| aws.sdk_config().clone())
            .map_err(|e| e.to_string())
    };
    match cli.command {
        Command::Put {
            tenant,
            service,
            key,
            value,
            kind,
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
            let (store, written) = target
                .write(
                    &aws().await?,
                    &item,
                    &value,
                    kind,
                    expect.expected(create),
                    &actor.actor(),
                )
                .await?;
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
        } => {
            let client_id = client_id
                .first()
                .ok_or("name an app client with --client-id or COGNITO_CLIENT_IDS")?;
            println!(
                "{}",
                tokens::id_token(&aws().await?, client_id, &username, &password).await?
            );
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
        } => {
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
                crate::values::put_refresh_key(&ssm, &parameter, &target.parameter_root, &id)
                    .await?
            };
            println!("{public}");
        }
        Command::StageSettings { api_id, stage } => {
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
            if print {
                let event = change_event(&operation, &name, "");
                println!(
                    "{}",
                    serde_json::to_string_pretty(&event).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            let url = invoke_url.ok_or(
                "name config-refresh's invoke API with --invoke-url or TENANT_CONFIG_INVOKE_URL",
            )?;
            let description =
                parameter_description(&aws_sdk_ssm::Client::new(&aws().await?), &name).await;
            let event = change_event(&operation, &name, &description);
            match invoke(&url, "config-refresh", &event).await? {
                Ok(answer) => println!("{answer}"),
                Err(error) => return Err(format!("config-refresh failed: {error}")),
            }
        }
    }
    Ok(())
}
