//! Is an administrator still one? A token's `cognito:groups` says who was in
//! the administrators' group when it was issued, up to an hour ago. Writes
//! also ask the user pool (AdminListGroupsForUser), remembering each answer
//! for at most [`MAX_MEMBERSHIP_TTL`], so a user removed from the group (or
//! deleted) cannot write for longer than that, whatever their token says.
//! A pool that cannot answer refuses the write (503): never a write on an
//! unconfirmed membership.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cognitoidentityprovider::Client;
use aws_sdk_cognitoidentityprovider::error::DisplayErrorContext;

/// The longest a membership answer is remembered.
pub const MAX_MEMBERSHIP_TTL: Duration = Duration::from_secs(60);

/// The port: the groups a user is in now.
#[async_trait]
pub trait GroupMembership: Send + Sync {
    /// Whether `username` is in `group` now; `Err` when the pool cannot say.
    async fn is_member(&self, username: &str, group: &str) -> Result<bool, String>;
}

/// Whether the caller may act as a member of `group`: its token says so,
/// and the pool (when asked) still does; 403 otherwise, 503 when the pool
/// cannot say. Tenant and platform administrators are checked alike.
pub async fn require_member(
    identity: &crate::auth::Identity,
    group: &str,
    membership: Option<&dyn GroupMembership>,
) -> Result<(), crate::error::ConfigError> {
    use crate::error::ConfigError;
    let refused = || ConfigError::NotAnAdministrator {
        group: group.to_owned(),
    };
    if !identity.in_group(group) {
        return Err(refused());
    }
    match membership {
        None => Ok(()),
        Some(membership) => match membership.is_member(&identity.username, group).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::warn!(subject = %identity.subject, %group, "write refused: no longer in the group");
                Err(refused())
            }
            Err(detail) => {
                tracing::error!(%detail, %group, "write refused: group membership cannot be checked");
                Err(ConfigError::MembershipUnavailable(detail))
            }
        },
    }
}

/// The user pool's answer, through AdminListGroupsForUser.
pub struct CognitoGroupMembership {
    client: Client,
    pool_id: String,
}

impl CognitoGroupMembership {
    pub fn new(client: Client, pool_id: impl Into<String>) -> Self {
        Self {
            client,
            pool_id: pool_id.into(),
        }
    }
}

#[async_trait]
impl GroupMembership for CognitoGroupMembership {
    async fn is_member(&self, username: &str, group: &str) -> Result<bool, String> {
        let mut token = None;
        loop {
            let result = self
                .client
                .admin_list_groups_for_user()
                .user_pool_id(&self.pool_id)
                .username(username)
                .limit(60)
                .set_next_token(token)
                .send()
                .await;
            let output = match result {
                Ok(output) => output,
                // A deleted user is in no group.
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_user_not_found_exception()) =>
                {
                    return Ok(false);
                }
                Err(err) => return Err(DisplayErrorContext(err).to_string()),
            };
            if output
                .groups()
                .iter()
                .any(|g| g.group_name() == Some(group))
            {
                return Ok(true);
            }
            match output.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(false),
            }
        }
    }
}

/// Remembers answers (yes and no, never a failure) for `ttl`.
pub struct CachedMembership {
    inner: Arc<dyn GroupMembership>,
    answers: moka::future::Cache<(String, String), bool>,
}

impl CachedMembership {
    /// `ttl` above [`MAX_MEMBERSHIP_TTL`] is held to it.
    pub fn new(inner: Arc<dyn GroupMembership>, ttl: Duration) -> Self {
        Self {
            inner,
            answers: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl.min(MAX_MEMBERSHIP_TTL).max(Duration::from_millis(1)))
                .build(),
        }
    }
}

#[async_trait]
impl GroupMembership for CachedMembership {
    async fn is_member(&self, username: &str, group: &str) -> Result<bool, String> {
        let key = (username.to_owned(), group.to_owned());
        if let Some(answer) = self.answers.get(&key).await {
            return Ok(answer);
        }
        let answer = self.inner.is_member(username, group).await?;
        self.answers.insert(key, answer).await;
        Ok(answer)
    }
}

/// A user pool's region from its issuer URL.
pub fn region_of_issuer(issuer: &str) -> Option<&str> {
    let host = issuer.strip_prefix("https://")?.split('/').next()?;
    let region = host.strip_prefix("cognito-idp.")?.split('.').next()?;
    (!region.is_empty()).then_some(region)
}

/// A user pool's id from its issuer URL (`https://cognito-idp.{region}.amazonaws.com/{pool}`).
pub fn pool_id_of_issuer(issuer: &str) -> Option<&str> {
    let pool = issuer.trim_end_matches('/').rsplit('/').next()?;
    (pool.contains('_') && !pool.contains(':')).then_some(pool)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting {
        member: std::sync::atomic::AtomicBool,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl GroupMembership for Counting {
        async fn is_member(&self, _: &str, _: &str) -> Result<bool, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.member.load(Ordering::SeqCst))
        }
    }

    #[tokio::test]
    async fn an_answer_is_remembered_for_the_ttl_and_then_asked_again() {
        let pool = Arc::new(Counting {
            member: true.into(),
            calls: AtomicUsize::new(0),
        });
        let cached = CachedMembership::new(pool.clone(), Duration::from_millis(100));
        assert_eq!(cached.is_member("dana", "config-admins").await, Ok(true));
        assert_eq!(cached.is_member("dana", "config-admins").await, Ok(true));
        assert_eq!(pool.calls.load(Ordering::SeqCst), 1);
        // WHEN dana leaves the group THEN within the TTL she is a member no more
        pool.member.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(cached.is_member("dana", "config-admins").await, Ok(false));
    }

    #[test]
    fn the_pool_id_is_the_issuers_last_segment() {
        assert_eq!(
            pool_id_of_issuer("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"),
            Some("eu-west-1_AbC123")
        );
        assert_eq!(pool_id_of_issuer("https://example.com/"), None);
        assert_eq!(
            region_of_issuer("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"),
            Some("eu-west-1")
        );
    }
}
