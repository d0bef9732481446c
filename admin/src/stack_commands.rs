//! The commands run against a deployed stack's identity and health: users of
//! its pool, signing in, and `verify`.

use aws_config::SdkConfig;
use clap::Subcommand;
use tenant_config_shared::TenantId;
use tenant_config_shared::aws::Aws;
use tenant_config_shared::routing::{DEFAULT_DYNAMODB_PREFIX, DEFAULT_PARAMETER_PREFIX, KeyRouter};

use crate::stack::{StackOutputs, output, resolve};
use crate::tokens;
use crate::users::{NewUser, create_user, delete_user, generate_password};
use crate::values::Target;
use crate::verify::{VerifyOptions, verify};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user of a tenant (confirmed, permanent password, no
    /// invitation sent); the password is generated and printed once unless
    /// given.
    Create {
        /// The sign-in name: an e-mail address in the deployed pool.
        username: String,
        /// The tenant, stored in the immutable `custom:tenantId`.
        #[arg(long)]
        tenant: String,
        /// Also a tenant administrator (the admin group, stack output
        /// `AdminGroupName`): may write the tenant's configuration.
        #[arg(long)]
        admin: bool,
        /// The password to set (else one is generated and printed once).
        /// No environment fallback: a TENANT_CONFIG_PASSWORD exported for
        /// `token` must not silently become every new user's password.
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete a user (tokens already issued stay valid until they expire).
    Delete { username: String },
}

/// `user create` and `user delete` in the stack's pool.
pub async fn run_user(
    command: UserCommand,
    stack: Option<&StackOutputs>,
    aws: &SdkConfig,
) -> Result<(), String> {
    let pool = resolve(None, stack, output::USER_POOL_ID, None)?;
    match command {
        UserCommand::Create {
            username,
            tenant,
            admin,
            password,
        } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| e.to_string())?;
            let admin_group = match admin {
                true => Some(resolve(None, stack, output::ADMIN_GROUP_NAME, None)?),
                false => None,
            };
            let generated = password.is_none();
            let password = match password {
                Some(password) => password,
                None => generate_password()?,
            };
            let groups: Vec<&str> = admin_group.iter().map(String::as_str).collect();
            create_user(
                aws,
                &pool,
                &NewUser {
                    username: &username,
                    tenant: Some(&tenant),
                    password: &password,
                    groups: &groups,
                },
            )
            .await?;
            eprintln!(
                "created {username} in tenant {tenant}{}",
                admin_group
                    .map(|g| format!(", administrator (group {g})"))
                    .unwrap_or_default()
            );
            if generated {
                // Printed once, to stdout only, for the operator to hand over.
                println!("{password}");
            }
        }
        UserCommand::Delete { username } => {
            delete_user(aws, &pool, &username).await?;
            eprintln!("deleted {username}");
        }
    }
    Ok(())
}

/// Runs every check and prints each outcome; an error when any failed.
pub async fn run_verify(
    stack: Option<&StackOutputs>,
    options: &VerifyOptions,
) -> Result<(), String> {
    let stack = stack.ok_or("name the stack to verify with --stack (or TENANT_CONFIG_STACK)")?;
    // The stack's own names only: a table or root left in the environment
    // must not send verify's probe into another stack. The deployed
    // functions route by the default prefixes (the template sets none).
    let target = &Target {
        secure_string_key: stack
            .outputs
            .get(output::SECURE_STRING_KMS_KEY_ARN)
            .cloned(),
        table: stack.output(output::TABLE_NAME)?.to_owned(),
        parameter_root: stack.output(output::PARAMETER_ROOT)?.to_owned(),
        router: KeyRouter::new(DEFAULT_DYNAMODB_PREFIX, DEFAULT_PARAMETER_PREFIX)
            .map_err(|e| e.to_string())?,
    };
    let aws = Aws::from_env().await.map_err(|e| e.to_string())?;
    let report = verify(&aws, stack, target, options).await;
    for outcome in &report.outcomes {
        println!("{outcome}");
    }
    if report.passed() {
        Ok(())
    } else {
        Err(format!("stack {} failed verification", stack.name))
    }
}

/// The demo password suits only the local stack: against a stack, say it.
pub fn password_or_demo(
    password: Option<String>,
    stack: Option<&StackOutputs>,
) -> Result<String, String> {
    match (password, stack) {
        (Some(password), _) => Ok(password),
        (None, None) => Ok(tokens::LOCAL_DEMO_PASSWORD.to_owned()),
        (None, Some(_)) => {
            Err("give the user's password with --password or TENANT_CONFIG_PASSWORD".to_owned())
        }
    }
}

/// How `token` signs in: as an operator when the pool is known, else as an app.
pub struct SignIn {
    pool_id: Option<String>,
    client_id: String,
}

impl SignIn {
    pub fn resolve(
        stack: Option<&StackOutputs>,
        client_id: Option<&String>,
        issuer: Option<&str>,
    ) -> Result<Self, String> {
        let client_id = resolve(
            client_id.map(String::as_str),
            stack,
            output::USER_POOL_CLIENT_ID,
            None,
        )
        .map_err(|_| {
            "name an app client with --stack, --client-id or COGNITO_CLIENT_IDS".to_owned()
        })?;
        let pool_id = match stack {
            Some(stack) => Some(stack.output(output::USER_POOL_ID)?.to_owned()),
            None => issuer
                .and_then(tokens::pool_id_of_issuer)
                .map(str::to_owned),
        };
        Ok(Self { pool_id, client_id })
    }

    pub async fn id_token(
        &self,
        aws: &SdkConfig,
        username: &str,
        password: &str,
    ) -> Result<String, String> {
        match &self.pool_id {
            Some(pool) => {
                tokens::admin_id_token(aws, pool, &self.client_id, username, password).await
            }
            None => tokens::id_token(aws, &self.client_id, username, password).await,
        }
    }
}
