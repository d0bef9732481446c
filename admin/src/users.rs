//! Users of the stack's pool: a tenant's reader or administrator, created by
//! an operator (the pool allows no sign-up), with the tenant in the immutable
//! `custom:tenantId` attribute that every read and write takes the tenant from.

use aws_config::SdkConfig;
use aws_sdk_cognitoidentityprovider as cognito;
use cognito::error::DisplayErrorContext;
use cognito::types::{AttributeType, MessageActionType};
use tenant_config_shared::TenantId;

/// The claim (and user attribute) that carries a user's tenant.
pub const TENANT_ATTRIBUTE: &str = "custom:tenantId";

/// Who to create.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// The sign-in name (the deployed pool signs in by email).
    pub username: &'a str,
    /// `None`: a user of no tenant, refused by every route (403).
    pub tenant: Option<&'a TenantId>,
    pub password: &'a str,
    /// Groups to add the user to, e.g. the admin group.
    pub groups: &'a [&'a str],
}

fn attribute(name: &str, value: &str) -> Result<AttributeType, String> {
    AttributeType::builder()
        .name(name)
        .value(value)
        .build()
        .map_err(|e| e.to_string())
}

/// Creates a confirmed user with a permanent password, no invitation sent
/// (the operator hands the password over), in its tenant and groups.
pub async fn create_user(aws: &SdkConfig, pool_id: &str, user: &NewUser<'_>) -> Result<(), String> {
    let client = cognito::Client::new(aws);
    let mut create = client
        .admin_create_user()
        .user_pool_id(pool_id)
        .username(user.username)
        .message_action(MessageActionType::Suppress);
    if user.username.contains('@') {
        // The pool signs in by email: the address is the username, and it is
        // verified because the operator vouches for it.
        create = create
            .user_attributes(attribute("email", user.username)?)
            .user_attributes(attribute("email_verified", "true")?);
    }
    if let Some(tenant) = user.tenant {
        create = create.user_attributes(attribute(TENANT_ATTRIBUTE, tenant.as_str())?);
    }
    create
        .send()
        .await
        .map_err(|e| format!("AdminCreateUser: {}", DisplayErrorContext(e)))?;
    // A user left half made (no known password, or not in its group) is
    // worse than none: on any later failure, remove it again.
    if let Err(error) = finish_user(&client, pool_id, user).await {
        let removed = delete_user(aws, pool_id, user.username).await;
        return Err(match removed {
            Ok(()) => format!("{error} (the user was removed again)"),
            Err(e) => format!("{error}; removing the half-made user failed too: {e}"),
        });
    }
    Ok(())
}

/// The permanent password and the groups of a user just created.
async fn finish_user(
    client: &cognito::Client,
    pool_id: &str,
    user: &NewUser<'_>,
) -> Result<(), String> {
    client
        .admin_set_user_password()
        .user_pool_id(pool_id)
        .username(user.username)
        .password(user.password)
        .permanent(true)
        .send()
        .await
        .map_err(|e| format!("AdminSetUserPassword: {}", DisplayErrorContext(e)))?;
    for group in user.groups {
        client
            .admin_add_user_to_group()
            .user_pool_id(pool_id)
            .username(user.username)
            .group_name(*group)
            .send()
            .await
            .map_err(|e| format!("AdminAddUserToGroup {group}: {}", DisplayErrorContext(e)))?;
    }
    Ok(())
}

/// Deletes a user (its tokens stay valid until they expire: at most the app
/// client's ID token validity).
pub async fn delete_user(aws: &SdkConfig, pool_id: &str, username: &str) -> Result<(), String> {
    cognito::Client::new(aws)
        .admin_delete_user()
        .user_pool_id(pool_id)
        .username(username)
        .send()
        .await
        .map_err(|e| format!("AdminDeleteUser: {}", DisplayErrorContext(e)))?;
    Ok(())
}

const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"23456789";
const SYMBOLS: &[u8] = b"!#%+-=?@^_";
/// Long enough that guessing is hopeless; far above the pool's minimum of 12.
pub const GENERATED_PASSWORD_LEN: usize = 24;

/// A random password that satisfies the template's password policy (lower,
/// upper, digit and symbol, at least 12 characters), from the OS's CSPRNG.
pub fn generate_password() -> Result<String, String> {
    let mut random = [0u8; GENERATED_PASSWORD_LEN * 2];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| "no randomness available".to_owned())?;
    let all: Vec<u8> = [LOWER, UPPER, DIGITS, SYMBOLS].concat();
    let (first, rest) = random.split_at(GENERATED_PASSWORD_LEN);
    let mut password: Vec<u8> = first.iter().map(|r| all[*r as usize % all.len()]).collect();
    // One of each class, each at a random position the others cannot take.
    for (i, class) in [LOWER, UPPER, DIGITS, SYMBOLS].into_iter().enumerate() {
        let position =
            i * (GENERATED_PASSWORD_LEN / 4) + rest[i] as usize % (GENERATED_PASSWORD_LEN / 4);
        password[position] = class[rest[i + 4] as usize % class.len()];
    }
    String::from_utf8(password).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_meet_the_pool_policy_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let password = generate_password().unwrap();
            assert_eq!(password.len(), GENERATED_PASSWORD_LEN);
            for class in [LOWER, UPPER, DIGITS, SYMBOLS] {
                assert!(password.bytes().any(|b| class.contains(&b)), "{password}");
            }
            assert!(seen.insert(password), "a password repeated");
        }
    }
}
