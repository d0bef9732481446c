//! Creates in a local AWS (moto) what the SAM template creates in AWS: the
//! table, the user pool with tenant users, the refresh key, the Cloud Map
//! namespace and service. Values are written with `tenant_config_admin`.

use aws_config::SdkConfig;
use aws_sdk_cognitoidentityprovider as cognito;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use cognito::types::{AttributeDataType, ExplicitAuthFlowsType, SchemaAttributeType};
use tenant_config_admin::users;
use tenant_config_shared::TenantId;
use tenant_config_shared::auth::TENANT_CLAIM;
use tenant_config_shared::store::dynamodb::{PARTITION_KEY, SORT_KEY};

use crate::moto::REGION;

fn err(context: &str) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("{context}: {e}")
}

/// Where to find a user pool's tokens and keys.
#[derive(Debug, Clone)]
pub struct UserPool {
    pub pool_id: String,
    pub client_id: String,
    /// `iss` of its tokens: the real AWS URL, as moto writes it.
    pub issuer: String,
    /// The JWKS as moto serves it locally.
    pub jwks_url: String,
}

/// Creates the configuration table with the read path's key schema and, as
/// the template does, a stream with old and new images.
pub async fn create_table(aws: &SdkConfig, table: &str) -> Result<(), String> {
    create_key_value_table(aws, table, Some(StreamViewType::NewAndOldImages)).await
}

/// Creates the change journal table as the template does: `pk`/`sk`, with
/// a TTL on `expires_at`.
pub async fn create_journal_table(aws: &SdkConfig, table: &str) -> Result<(), String> {
    create_key_value_table(aws, table, None).await?;
    let client = aws_sdk_dynamodb::Client::new(aws);
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at")
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await
        .map_err(|e| err("UpdateTimeToLive")(&aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    Ok(())
}

/// An on-demand table keyed by string `pk` (hash) and `sk` (range), the
/// layout both of the project's tables share, with an optional stream.
async fn create_key_value_table(
    aws: &SdkConfig,
    table: &str,
    stream: Option<StreamViewType>,
) -> Result<(), String> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| e.to_string())
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| e.to_string())
    };
    let stream = stream
        .map(|view| {
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .map_err(|e| e.to_string())
        })
        .transpose()?;
    aws_sdk_dynamodb::Client::new(aws)
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PARTITION_KEY)?)
        .attribute_definitions(attribute(SORT_KEY)?)
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .set_stream_specification(stream)
        .send()
        .await
        .map_err(|e| {
            err(&format!("CreateTable {table}"))(&aws_sdk_dynamodb::error::DisplayErrorContext(e))
        })?;
    Ok(())
}

/// Creates a user pool whose `custom:tenantId` is immutable and a public app
/// client (no secret) that can sign users in with a password but cannot write
/// the tenant attribute.
pub async fn create_user_pool(
    aws: &SdkConfig,
    moto_endpoint: &str,
    name: &str,
) -> Result<UserPool, String> {
    let client = cognito::Client::new(aws);
    let tenant_attribute = SchemaAttributeType::builder()
        .name("tenantId")
        .attribute_data_type(AttributeDataType::String)
        .mutable(false)
        .build();
    let pool = client
        .create_user_pool()
        .pool_name(name)
        .schema(tenant_attribute)
        .send()
        .await
        .map_err(|e| err("CreateUserPool")(&cognito::error::DisplayErrorContext(e)))?;
    let pool_id = pool
        .user_pool()
        .and_then(|p| p.id())
        .ok_or("CreateUserPool returned no id")?
        .to_owned();
    let client_id = create_app_client(aws, &pool_id, &format!("{name}-app")).await?;
    Ok(UserPool {
        issuer: format!("https://cognito-idp.{REGION}.amazonaws.com/{pool_id}"),
        jwks_url: format!("{moto_endpoint}/{pool_id}/.well-known/jwks.json"),
        pool_id,
        client_id,
    })
}

/// Creates a public app client (no secret) that signs users in with a
/// password and may read, but not write, the tenant attribute.
pub async fn create_app_client(
    aws: &SdkConfig,
    pool_id: &str,
    name: &str,
) -> Result<String, String> {
    let app = cognito::Client::new(aws)
        .create_user_pool_client()
        .user_pool_id(pool_id)
        .client_name(name)
        .generate_secret(false)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowUserPasswordAuth)
        // As the template's client: operators sign in with AdminInitiateAuth.
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowAdminUserPasswordAuth)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowRefreshTokenAuth)
        .read_attributes("email")
        .read_attributes(TENANT_CLAIM)
        .write_attributes("email")
        .send()
        .await
        .map_err(|e| err("CreateUserPoolClient")(&cognito::error::DisplayErrorContext(e)))?;
    app.user_pool_client()
        .and_then(|c| c.client_id())
        .map(str::to_owned)
        .ok_or_else(|| "CreateUserPoolClient returned no id".to_owned())
}

/// Creates a confirmed user with a permanent password, optionally in a
/// tenant: the operator's `user create` ([`tenant_config_admin::users`]).
pub async fn create_user(
    aws: &SdkConfig,
    pool: &UserPool,
    username: &str,
    password: &str,
    tenant: Option<&str>,
) -> Result<(), String> {
    let tenant = tenant
        .map(TenantId::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    users::create_user(
        aws,
        &pool.pool_id,
        &users::NewUser {
            username,
            tenant: tenant.as_ref(),
            password,
            groups: &[],
        },
    )
    .await
}

/// Creates `group` in the pool (as the template does) and puts `username` in it.
pub async fn add_user_to_group(
    aws: &SdkConfig,
    pool: &UserPool,
    username: &str,
    group: &str,
) -> Result<(), String> {
    let client = cognito::Client::new(aws);
    let exists = client
        .get_group()
        .user_pool_id(&pool.pool_id)
        .group_name(group)
        .send()
        .await
        .is_ok();
    if !exists {
        client
            .create_group()
            .user_pool_id(&pool.pool_id)
            .group_name(group)
            .send()
            .await
            .map_err(|e| err("CreateGroup")(&cognito::error::DisplayErrorContext(e)))?;
    }
    client
        .admin_add_user_to_group()
        .user_pool_id(&pool.pool_id)
        .username(username)
        .group_name(group)
        .send()
        .await
        .map_err(|e| err("AdminAddUserToGroup")(&cognito::error::DisplayErrorContext(e)))?;
    Ok(())
}

/// Creates the queue that holds stage cache flush requests; returns its URL
/// and ARN.
pub async fn create_flush_queue(aws: &SdkConfig, name: &str) -> Result<(String, String), String> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| err("CreateQueue")(&aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .queue_url
        .ok_or("CreateQueue returned no URL")?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| err("GetQueueAttributes")(&aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .ok_or("the queue has no ARN")?;
    Ok((url, arn))
}

/// Creates the agents' snapshot key (the template's `AgentSnapshotKey`) and
/// its alias; returns the alias, what agents are given.
pub async fn create_snapshot_key(aws: &SdkConfig, alias: &str) -> Result<String, String> {
    let kms = aws_sdk_kms::Client::new(aws);
    let key = kms
        .create_key()
        .description("the config agents' warm-start snapshots")
        .send()
        .await
        .map_err(|e| err("CreateKey")(&aws_sdk_kms::error::DisplayErrorContext(e)))?
        .key_metadata
        .map(|k| k.key_id)
        .ok_or("CreateKey returned no key")?;
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(key)
        .send()
        .await
        .map_err(|e| err("CreateAlias")(&aws_sdk_kms::error::DisplayErrorContext(e)))?;
    Ok(alias.to_owned())
}

/// Ids of the Cloud Map namespace and service the agents register in.
#[derive(Debug, Clone)]
pub struct CloudMap {
    pub namespace: String,
    pub service: String,
    pub service_id: String,
}

/// Creates an HTTP namespace and a service in it for the agents. The service
/// has a custom health check, so agents report themselves HEALTHY.
pub async fn create_cloud_map(
    aws: &SdkConfig,
    namespace: &str,
    service: &str,
) -> Result<CloudMap, String> {
    use aws_sdk_servicediscovery as sd;
    let client = sd::Client::new(aws);
    client
        .create_http_namespace()
        .name(namespace)
        .send()
        .await
        .map_err(|e| err("CreateHttpNamespace")(&sd::error::DisplayErrorContext(e)))?;
    let namespaces = client
        .list_namespaces()
        .send()
        .await
        .map_err(|e| err("ListNamespaces")(&sd::error::DisplayErrorContext(e)))?;
    let namespace_id = namespaces
        .namespaces()
        .iter()
        .find(|n| n.name() == Some(namespace))
        .and_then(|n| n.id())
        .ok_or("namespace not listed after creation")?
        .to_owned();
    let created = client
        .create_service()
        .name(service)
        .namespace_id(&namespace_id)
        .health_check_custom_config(sd::types::HealthCheckCustomConfig::builder().build())
        .send()
        .await
        .map_err(|e| err("CreateService")(&sd::error::DisplayErrorContext(e)))?;
    let service_id = created
        .service()
        .and_then(|s| s.id())
        .ok_or("CreateService returned no id")?
        .to_owned();
    Ok(CloudMap {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        service_id,
    })
}

/// Ids of the healthy instances Cloud Map returns for the agents' service.
pub async fn discovered_instance_ids(
    aws: &SdkConfig,
    cloud_map: &CloudMap,
) -> Result<Vec<String>, String> {
    use aws_sdk_servicediscovery as sd;
    let client = tenant_config_shared::aws::Aws::from_config(aws.clone()).cloud_map();
    let output = client
        .discover_instances()
        .namespace_name(&cloud_map.namespace)
        .service_name(&cloud_map.service)
        .health_status(sd::types::HealthStatusFilter::Healthy)
        .send()
        .await
        .map_err(|e| err("DiscoverInstances")(&sd::error::DisplayErrorContext(e)))?;
    let mut ids: Vec<String> = output
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Registers an instance at `address` in the agents' Cloud Map service, as
/// any holder of the agent role could (tests plant strangers with it).
pub async fn register_instance(
    aws: &SdkConfig,
    cloud_map: &CloudMap,
    instance_id: &str,
    address: std::net::SocketAddr,
) -> Result<(), String> {
    use aws_sdk_servicediscovery as sd;
    let client = tenant_config_shared::aws::Aws::from_config(aws.clone()).cloud_map();
    client
        .register_instance()
        .service_id(&cloud_map.service_id)
        .instance_id(instance_id)
        .attributes("AWS_INSTANCE_IPV4", address.ip().to_string())
        .attributes("AWS_INSTANCE_PORT", address.port().to_string())
        .send()
        .await
        .map_err(|e| err("RegisterInstance")(&sd::error::DisplayErrorContext(e)))?;
    Ok(())
}
