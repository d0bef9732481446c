//! Signing a user in as an app would, to get the ID token it sends.

use aws_config::SdkConfig;
use aws_sdk_cognitoidentityprovider as cognito;
use cognito::types::AuthFlowType;

/// The password of the local stack's demo users (never used in AWS).
pub const LOCAL_DEMO_PASSWORD: &str = "Corr3ct-Horse-Battery!";

/// Signs a user in as an app would (InitiateAuth, USER_PASSWORD_AUTH) and
/// returns the ID token.
pub async fn id_token(
    aws: &SdkConfig,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<String, String> {
    let client = cognito::Client::new(aws);
    let auth = client
        .initiate_auth()
        .client_id(client_id)
        .auth_flow(AuthFlowType::UserPasswordAuth)
        .auth_parameters("USERNAME", username)
        .auth_parameters("PASSWORD", password)
        .send()
        .await
        .map_err(|e| format!("InitiateAuth: {}", cognito::error::DisplayErrorContext(e)))?;
    auth.authentication_result()
        .and_then(|r| r.id_token())
        .map(str::to_owned)
        .ok_or_else(|| "InitiateAuth returned no ID token".to_owned())
}

/// Signs a user in as an operator (AdminInitiateAuth, ADMIN_USER_PASSWORD_AUTH:
/// needs IAM credentials allowed `cognito-idp:AdminInitiateAuth` on the pool,
/// and the app client must allow the flow, as the template's does) and
/// returns the ID token. The deployed app client allows no password flow an
/// anonymous caller could use; apps sign in with SRP.
pub async fn admin_id_token(
    aws: &SdkConfig,
    pool_id: &str,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<String, String> {
    let auth = cognito::Client::new(aws)
        .admin_initiate_auth()
        .user_pool_id(pool_id)
        .client_id(client_id)
        .auth_flow(AuthFlowType::AdminUserPasswordAuth)
        .auth_parameters("USERNAME", username)
        .auth_parameters("PASSWORD", password)
        .send()
        .await
        .map_err(|e| {
            format!(
                "AdminInitiateAuth: {}",
                cognito::error::DisplayErrorContext(e)
            )
        })?;
    auth.authentication_result()
        .and_then(|r| r.id_token())
        .map(str::to_owned)
        .ok_or_else(|| {
            "AdminInitiateAuth returned no ID token (a challenge is pending?)".to_owned()
        })
}

/// The user pool id at the end of a Cognito issuer URL
/// (`https://cognito-idp.{region}.amazonaws.com/{pool id}`).
pub fn pool_id_of_issuer(issuer: &str) -> Option<&str> {
    issuer
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|id| id.contains('_'))
}
