//! Writing a tenant's own value through config-api, for the suites that
//! need one changed: no tests of its own.

use reqwest::Method;
use serde_json::{Value, json};
use tenant_config_local_stack::stack::{LocalStack, SERVICE};

/// Writes `key` of the admin's tenant through config-api, creating it or
/// replacing the version read; panics unless the write landed.
pub async fn write(stack: &LocalStack, admin: &str, key: &str, value: Value) {
    let path = format!("/v1/config/{SERVICE}/{key}");
    let current = stack.get(&path, Some(admin)).await.unwrap();
    let condition = match current.header("etag") {
        Some(etag) => ("if-match", etag.to_owned()),
        None => ("if-none-match", "*".to_owned()),
    };
    let written = stack
        .send(
            Method::PUT,
            &path,
            Some(admin),
            &[(condition.0, &condition.1)],
            Some(&json!({ "value": value })),
        )
        .await
        .unwrap();
    assert!(
        written.status == 200 || written.status == 201,
        "PUT {key}: {} {}",
        written.status,
        written.text
    );
}
