//! The read path's checks: the stage settings CloudFormation cannot set, and a
//! real user of a probe tenant reading a value verify wrote, through the
//! deployed API, with that write then found in the change journal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_apigateway::error::DisplayErrorContext;
use aws_sdk_apigateway::types::{MethodSetting, UnauthorizedCacheControlHeaderStrategy};
use tenant_config_shared::aws::Aws;
use tenant_config_shared::refresh::journal::ChangeJournal;
use tenant_config_shared::refresh::signing::unix_ms_now;
use tenant_config_shared::routing::DEFAULT_DYNAMODB_PREFIX;
use tenant_config_shared::stage_settings::{ALL_METHODS, CACHED_METHODS, method_settings_path};
use tenant_config_shared::write::{Actor, Expected};
use tenant_config_shared::{ItemKey, TenantId};

use super::{Outcome, VerifyOptions};
use crate::stack::{StackOutputs, output};
use crate::tokens::admin_id_token;
use crate::users::{NewUser, create_user, delete_user, generate_password};
use crate::values::{ParameterKind, Target};

pub const STAGE_SETTINGS: &str = "stage-settings";
pub const READ_THROUGH_API: &str = "read-through-api";
pub const CHANGE_JOURNALED: &str = "change-journaled";

/// The tenant verify reads and writes as; no real tenant should use it.
pub const PROBE_TENANT: &str = "tenant-config-verify";
pub const PROBE_SERVICE: &str = "verify";

/// The entry verify writes and reads (DynamoDB, so that the write also
/// travels the stream → config-refresh → journal path). A new key each run:
/// a reader that still caches an earlier run's value (its invalidation on
/// the way) cannot make this run's read look stale.
pub fn probe_item(nonce: &str) -> Result<ItemKey, String> {
    ItemKey::parse(
        PROBE_TENANT,
        PROBE_SERVICE,
        &format!("{DEFAULT_DYNAMODB_PREFIX}probe_{nonce}"),
    )
    .map_err(|e| e.to_string())
}

/// The method settings keys as GetStage names them: `*/*` and
/// `~1v1~1config~1{service}~1{key}/GET` (no leading slash).
fn settings_key(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

/// Judges a stage's method settings: the stage-wide entry, each method the
/// template caches and any other cached method must refuse a caller's
/// `Cache-Control: max-age=0` with 403.
pub fn judge_method_settings(settings: &HashMap<String, MethodSetting>) -> Outcome {
    let mut required: Vec<String> = std::iter::once(settings_key(ALL_METHODS))
        .chain(
            CACHED_METHODS
                .iter()
                .map(|(resource, method)| settings_key(&method_settings_path(resource, method))),
        )
        .collect();
    for (key, setting) in settings {
        if setting.caching_enabled() && !required.contains(key) {
            required.push(key.clone());
        }
    }
    let open: Vec<String> = required
        .iter()
        .filter(|key| {
            !settings.get(*key).is_some_and(|s| {
                s.require_authorization_for_cache_control()
                    && s.unauthorized_cache_control_header_strategy()
                        == Some(&UnauthorizedCacheControlHeaderStrategy::FailWith403)
            })
        })
        .cloned()
        .collect();
    if open.is_empty() {
        Outcome::ok(
            STAGE_SETTINGS,
            format!(
                "{} method settings refuse callers' Cache-Control with 403",
                required.len()
            ),
        )
    } else {
        Outcome::fail(
            STAGE_SETTINGS,
            format!(
                "callers can bypass the stage cache on {} (Cache-Control: max-age=0 is honoured)",
                open.join(", ")
            ),
            "run tenant-config-admin --stack STACK stage-settings after every deploy that replaces the stage",
        )
    }
}

/// GetStage, then [`judge_method_settings`].
pub async fn stage_settings(aws: &Aws, stack: &StackOutputs) -> Outcome {
    let names = stack
        .output(output::API_ID)
        .and_then(|api| Ok((api, stack.output(output::STAGE_NAME)?)));
    let (api_id, stage) = match names {
        Ok(names) => names,
        Err(e) => return Outcome::fail(STAGE_SETTINGS, e, "deploy the current template.yaml"),
    };
    let client = aws_sdk_apigateway::Client::new(aws.sdk_config());
    match client
        .get_stage()
        .rest_api_id(api_id)
        .stage_name(stage)
        .send()
        .await
    {
        Ok(answer) => judge_method_settings(answer.method_settings().unwrap_or(&HashMap::new())),
        Err(e) => Outcome::fail(
            STAGE_SETTINGS,
            format!("GetStage {api_id}/{stage}: {}", DisplayErrorContext(e)),
            "check the stack outputs ApiId and StageName and that the credentials may read the stage",
        ),
    }
}

/// Writes a fresh value to the probe entry, signs a temporary user of the
/// probe tenant in, reads the value through the API, waits for the write in
/// the change journal, and removes the user and the value again.
pub async fn read_and_journal(
    aws: &Aws,
    stack: &StackOutputs,
    target: &Target,
    options: &VerifyOptions,
) -> Vec<Outcome> {
    let probe = match Probe::prepare(stack) {
        Ok(probe) => probe,
        Err(e) => {
            return vec![
                Outcome::fail(READ_THROUGH_API, e, "deploy the current template.yaml"),
                Outcome::skip(CHANGE_JOURNALED, "no probe write"),
            ];
        }
    };
    let sdk = aws.sdk_config();
    let written_at = unix_ms_now();
    let written = target
        .write(
            sdk,
            &probe.item,
            &probe.value,
            ParameterKind::String,
            Expected::Any,
            &Actor("tenant-config-admin verify".to_owned()),
        )
        .await;
    let wrote = written.is_ok();
    let mut outcomes = match written {
        Ok((_, written)) => {
            let read = probe.read(aws, stack, options).await;
            let journaled = probe
                .journaled(aws, stack, written_at, written.version, options)
                .await;
            vec![read, journaled]
        }
        Err(e) => vec![
            Outcome::fail(
                READ_THROUGH_API,
                format!(
                    "cannot write the probe value {}: {e}",
                    probe.item.cache_key()
                ),
                "the credentials running verify need write access to the config table",
            ),
            Outcome::skip(CHANGE_JOURNALED, "no probe write"),
        ],
    };
    // Delete the probe value (its history items stay, as every write's do,
    // until their TTL); a failed clean-up is reported, never hidden.
    if wrote
        && let Err(e) = target
            .delete(
                sdk,
                &probe.item,
                Expected::Any,
                &Actor("tenant-config-admin verify".to_owned()),
            )
            .await
    {
        outcomes[0]
            .detail
            .push_str(&format!("; clean-up of the probe value failed: {e}"));
    }
    outcomes
}

struct Probe {
    item: ItemKey,
    nonce: String,
    value: String,
}

impl Probe {
    fn prepare(stack: &StackOutputs) -> Result<Self, String> {
        for key in [
            output::API_URL,
            output::USER_POOL_ID,
            output::USER_POOL_CLIENT_ID,
        ] {
            stack.output(key)?;
        }
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| "no randomness available")?;
        let nonce: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            item: probe_item(&nonce)?,
            value: serde_json::json!({ "verify": nonce }).to_string(),
            nonce,
        })
    }

    /// Whether an answer's value is the one this run wrote (the key's name
    /// holds the nonce too, so the body as text would always match).
    fn served_in(&self, body: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(body)
            .is_ok_and(|answer| answer["value"]["verify"] == self.nonce.as_str())
    }

    /// A temporary user of the probe tenant reads the value through the API.
    async fn read(&self, aws: &Aws, stack: &StackOutputs, options: &VerifyOptions) -> Outcome {
        let (Ok(pool), Ok(client), Ok(api_url)) = (
            stack.output(output::USER_POOL_ID),
            stack.output(output::USER_POOL_CLIENT_ID),
            stack.output(output::API_URL),
        ) else {
            return Outcome::fail(
                READ_THROUGH_API,
                "outputs missing",
                "deploy the current template.yaml",
            );
        };
        let username = format!("verify-{}@tenant-config.invalid", self.nonce);
        let result = async {
            let password = generate_password()?;
            let tenant = TenantId::parse(PROBE_TENANT).map_err(|e| e.to_string())?;
            create_user(
                aws.sdk_config(),
                pool,
                &NewUser {
                    username: &username,
                    tenant: Some(&tenant),
                    password: &password,
                    groups: &[],
                },
            )
            .await?;
            let token =
                admin_id_token(aws.sdk_config(), pool, client, &username, &password).await?;
            let url = format!(
                "{}/v1/config/{}/{}",
                api_url.trim_end_matches('/'),
                self.item.service,
                self.item.key
            );
            let http = reqwest::Client::builder()
                .timeout(options.http_timeout)
                .build()
                .map_err(|e| e.to_string())?;
            let started = Instant::now();
            let answer = http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            Ok::<_, String>((status, body, started.elapsed()))
        }
        .await;
        let cleanup = delete_user(aws.sdk_config(), pool, &username).await.err();
        let mut outcome = match result {
            Ok((status, body, took)) if status.is_success() && self.served_in(&body) => {
                Outcome::ok(
                    READ_THROUGH_API,
                    format!(
                        "a user of {PROBE_TENANT} read the value just written through {api_url} in {} ms",
                        took.as_millis()
                    ),
                )
            }
            Ok((status, body, _)) => Outcome::fail(
                READ_THROUGH_API,
                format!(
                    "the API answered {status}{}",
                    if status.is_success() {
                        " with another value (a stale cache, or another table?)".to_owned()
                    } else {
                        format!(": {}", body.chars().take(200).collect::<String>())
                    }
                ),
                "401: the function's COGNITO_ISSUER / COGNITO_CLIENT_IDS must name the stack's pool and client; \
                 403 service_not_granted: grant the stack's app client the service verify reads \
                 (tenant-config-admin --stack STACK grant CLIENT_ID --services verify,...); \
                 5xx: see the config-api logs and docs/operations.md",
            ),
            Err(e) => Outcome::fail(
                READ_THROUGH_API,
                e,
                "check the stack output ApiUrl and that the caller's network reaches the API",
            ),
        };
        if let Some(e) = cleanup {
            outcome
                .detail
                .push_str(&format!("; clean-up of the probe user failed: {e}"));
        }
        outcome
    }

    /// The write reaches the change journal (through the table's stream and
    /// config-refresh) within the timeout.
    async fn journaled(
        &self,
        aws: &Aws,
        stack: &StackOutputs,
        written_at_ms: i64,
        version: i64,
        options: &VerifyOptions,
    ) -> Outcome {
        let table = match stack.output(output::CHANGE_JOURNAL_TABLE_NAME) {
            Ok(table) => table,
            Err(e) => {
                return Outcome::fail(CHANGE_JOURNALED, e, "deploy the current template.yaml");
            }
        };
        let journal = aws.change_journal(table);
        let started = Instant::now();
        let mut last_error = None;
        // Well before the write: config-refresh's clock may lag ours. Each
        // full page moves the start on, so a busy journal (more than a page
        // of changes since) cannot hide the probe's entry.
        const PAGE: usize = 1_000;
        let mut from_ms = written_at_ms - 60_000;
        while started.elapsed() < options.journal_timeout {
            match journal.since(from_ms, PAGE).await {
                Ok(entries) => {
                    if entries.len() == PAGE
                        && let Some(last) = entries.last()
                    {
                        from_ms = from_ms.max(last.journaled_at_ms);
                    }
                    if entries.iter().any(|e| {
                        e.change.subject.entry() == Some(&self.item)
                            && e.change.audit.to_version == Some(version)
                    }) {
                        return Outcome::ok(
                            CHANGE_JOURNALED,
                            format!(
                                "the probe write (version {version}) was journaled after {} ms",
                                started.elapsed().as_millis()
                            ),
                        );
                    }
                }
                Err(e) => last_error = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let fix = if last_error.is_some() {
            "the credentials running verify need dynamodb:Query on the change journal table"
        } else {
            "check that the stream's event source mapping is enabled and config-refresh succeeds \
             (its errors alarm, its logs, the DLQ); without it agents and config-api wait for their \
             TTL. A stack created a minute ago may miss one change (its mapping starts at the \
             latest record): run verify again"
        };
        Outcome::fail(
            CHANGE_JOURNALED,
            format!(
                "the probe write was not journaled within {} s{}",
                options.journal_timeout.as_secs(),
                last_error.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
            fix,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Status;

    fn refusing(cached: bool) -> MethodSetting {
        MethodSetting::builder()
            .caching_enabled(cached)
            .require_authorization_for_cache_control(true)
            .unauthorized_cache_control_header_strategy(
                UnauthorizedCacheControlHeaderStrategy::FailWith403,
            )
            .build()
    }

    fn all_refusing() -> HashMap<String, MethodSetting> {
        std::iter::once(("*/*".to_owned(), refusing(false)))
            .chain(
                CACHED_METHODS
                    .iter()
                    .map(|(r, m)| (settings_key(&method_settings_path(r, m)), refusing(true))),
            )
            .collect()
    }

    #[test]
    fn a_stage_patched_on_every_cached_method_passes() {
        let outcome = judge_method_settings(&all_refusing());
        assert_eq!(outcome.status, Status::Ok, "{outcome}");
    }

    #[test]
    fn a_patch_on_the_whole_stage_alone_leaves_each_cached_method_open() {
        // GIVEN the patch the template's old description gave: /*/* only
        let mut settings = all_refusing();
        for (resource, method) in CACHED_METHODS {
            settings.insert(
                settings_key(&method_settings_path(resource, method)),
                MethodSetting::builder().caching_enabled(true).build(),
            );
        }
        // WHEN judged THEN every cached method is named
        let outcome = judge_method_settings(&settings);
        assert_eq!(outcome.status, Status::Fail, "{outcome}");
        assert!(
            outcome
                .detail
                .contains("~1v1~1config~1{service}~1{key}/GET"),
            "{outcome}"
        );
        assert!(outcome.fix.unwrap().contains("stage-settings"));
    }

    #[test]
    fn another_cached_method_must_refuse_too() {
        let mut settings = all_refusing();
        settings.insert(
            "~1v2~1x/GET".to_owned(),
            MethodSetting::builder().caching_enabled(true).build(),
        );
        let outcome = judge_method_settings(&settings);
        assert_eq!(outcome.status, Status::Fail);
        assert!(outcome.detail.contains("~1v2~1x/GET"), "{outcome}");
    }
}
