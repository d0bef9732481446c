//! The local stack: moto with seeded tenants and data, and config-api under
//! `cargo lambda watch`. One implementation serves the demo (`local-stack`)
//! and the end-to-end tests.

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterType;

use crate::moto::MotoServer;
use crate::seed::{self, UserPool};
use crate::watch::LambdaWatch;

pub const TABLE: &str = "tenant-config";
pub const PARAMETER_ROOT: &str = "/config-service";
pub const SERVICE: &str = "billing";
pub const PASSWORD: &str = "Corr3ct-Horse-Battery!";

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
pub const PARAMETERS: &[(&str, &str, &str, ParameterType)] = &[
    (
        "tenant-a",
        "param_config_endpoint",
        "https://billing.tenant-a.example",
        ParameterType::String,
    ),
    (
        "tenant-a",
        "param_config_regions",
        "eu-west-1,us-east-1",
        ParameterType::StringList,
    ),
    (
        "tenant-a",
        "param_config_db_password",
        "tenant-a-db-secret",
        ParameterType::SecureString,
    ),
    (
        "tenant-b",
        "param_config_endpoint",
        "https://billing.tenant-b.example",
        ParameterType::String,
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

pub struct LocalStack {
    pub moto: MotoServer,
    pub aws: SdkConfig,
    pub pool: UserPool,
    pub watch: LambdaWatch,
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
    /// Starts moto, seeds it, and starts the functions.
    pub async fn start(progress: Progress<'_>) -> Result<Self, String> {
        let moto = step(progress, "moto server", MotoServer::start()).await?;
        let aws = moto.sdk_config().await;
        let pool = step(progress, "seed: table, user pool, users, values", async {
            seed::create_table(&aws, TABLE).await?;
            let pool = seed::create_user_pool(&aws, &moto.endpoint, "tenant-config-local").await?;
            for user in [ALICE, BOB, CAROL] {
                seed::create_user(&aws, &pool, user.username, PASSWORD, user.tenant).await?;
            }
            for (tenant, key, value) in DYNAMODB_ITEMS {
                seed::put_item(&aws, TABLE, (tenant, SERVICE, key), value, 1).await?;
            }
            for (tenant, key, value, kind) in PARAMETERS {
                seed::put_parameter(
                    &aws,
                    PARAMETER_ROOT,
                    (tenant, SERVICE, key),
                    value,
                    kind.clone(),
                )
                .await?;
            }
            Ok(pool)
        })
        .await?;
        let env = function_env(&moto, &pool);
        let watch = step(
            progress,
            "config-api under cargo lambda watch",
            LambdaWatch::start(&env, "config-api"),
        )
        .await?;
        Ok(Self {
            moto,
            aws,
            pool,
            watch,
        })
    }

    /// A fresh ID token for a seeded user, from moto's Cognito.
    pub async fn token(&self, user: DemoUser) -> Result<String, String> {
        seed::id_token(&self.aws, &self.pool.client_id, user.username, PASSWORD).await
    }

    /// GETs a config-api path, with `Authorization: Bearer {token}` when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Answer, String> {
        let mut request = reqwest::Client::new().get(self.api_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let body = serde_json::from_str(&text)
            .map_err(|e| format!("GET {path}: body is not JSON ({e}): {text}"))?;
        Ok(Answer {
            status,
            headers,
            body,
            text,
        })
    }

    /// URL of a config-api path, e.g. `/v1/config/billing/tenant_config_limits`.
    pub fn api_url(&self, path: &str) -> String {
        self.watch.function_url("config-api", path)
    }
}

/// Environment for the functions: AWS endpoint plus every setting they read.
pub fn function_env(moto: &MotoServer, pool: &UserPool) -> Vec<(String, String)> {
    let mut env = moto.aws_env();
    env.extend([
        ("CONFIG_TABLE_NAME".into(), TABLE.into()),
        ("PARAMETER_ROOT".into(), PARAMETER_ROOT.into()),
        ("COGNITO_ISSUER".into(), pool.issuer.clone()),
        ("COGNITO_JWKS_URL".into(), pool.jwks_url.clone()),
        ("COGNITO_CLIENT_IDS".into(), pool.client_id.clone()),
        ("RUST_LOG".into(), "info".into()),
    ]);
    env
}
