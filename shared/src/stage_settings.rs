//! The stage settings CloudFormation cannot set. API Gateway lets any client
//! send `Cache-Control: max-age=0` to make a cached method skip its cache;
//! only a stage setting (`requireAuthorizationForCacheControl` with
//! `unauthorizedCacheControlHeaderStrategy = FAIL_WITH_403`) refuses that, and
//! `AWS::ApiGateway::Stage` has no property for it. A patch on `/*/*` alone
//! does not reach methods that have their own method settings (every cached
//! method has), so the patch names each of them too.

use thiserror::Error;

/// The methods the template caches (its `MethodSettings` with
/// `CachingEnabled: true`; the template test keeps the two in step).
pub const CACHED_METHODS: &[(&str, &str)] = &[
    ("/v1/config/{service}/{key}", "GET"),
    ("/v1/config/{service}", "GET"),
];

/// Wildcard path of the stage-wide method settings.
pub const ALL_METHODS: &str = "/*/*";

#[derive(Debug, Error)]
#[error("UpdateStage failed: {0}")]
pub struct StageSettingsError(String);

/// The method settings path of a resource and method, as patch operations
/// and CloudFormation's `ResourcePath` name it (`/` escaped as `~1`).
pub fn method_settings_path(resource: &str, method: &str) -> String {
    format!("/{}/{method}", resource.replace('/', "~1"))
}

/// (path, value) of every replace operation: both settings, stage-wide and
/// on each cached method.
pub fn cache_control_patch() -> Vec<(String, String)> {
    std::iter::once(ALL_METHODS.to_owned())
        .chain(
            CACHED_METHODS
                .iter()
                .map(|(resource, method)| method_settings_path(resource, method)),
        )
        .flat_map(|methods| {
            [
                (
                    format!("{methods}/caching/requireAuthorizationForCacheControl"),
                    "true".to_owned(),
                ),
                (
                    format!("{methods}/caching/unauthorizedCacheControlHeaderStrategy"),
                    "FAIL_WITH_403".to_owned(),
                ),
            ]
        })
        .collect()
}

/// Applies [`cache_control_patch`] to a stage in one UpdateStage call.
pub async fn apply(
    client: &aws_sdk_apigateway::Client,
    rest_api_id: &str,
    stage: &str,
) -> Result<Vec<(String, String)>, StageSettingsError> {
    let patch = cache_control_patch();
    let operations = patch
        .iter()
        .map(|(path, value)| {
            aws_sdk_apigateway::types::PatchOperation::builder()
                .op(aws_sdk_apigateway::types::Op::Replace)
                .path(path)
                .value(value)
                .build()
        })
        .collect();
    client
        .update_stage()
        .rest_api_id(rest_api_id)
        .stage_name(stage)
        .set_patch_operations(Some(operations))
        .send()
        .await
        .map_err(|e| {
            StageSettingsError(aws_sdk_apigateway::error::DisplayErrorContext(e).to_string())
        })?;
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_covers_the_stage_and_every_cached_method() {
        let paths: Vec<String> = cache_control_patch().into_iter().map(|(p, _)| p).collect();
        for methods in [
            "/*/*",
            "/~1v1~1config~1{service}~1{key}/GET",
            "/~1v1~1config~1{service}/GET",
        ] {
            for setting in [
                "requireAuthorizationForCacheControl",
                "unauthorizedCacheControlHeaderStrategy",
            ] {
                let path = format!("{methods}/caching/{setting}");
                assert!(paths.contains(&path), "{path} missing from {paths:?}");
            }
        }
        assert_eq!(paths.len(), 6);
    }
}
