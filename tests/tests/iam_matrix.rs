//! The template's IAM, evaluated offline: every role the template creates
//! (config-api's, config-refresh's, the agents', the tenant read and write
//! roles' sessions) asks for each action on its own tenant's data, another
//! tenant's, the schemas, the journal and the signing key, and an IAM policy
//! simulator that understands condition keys and policy variables
//! (`@cloud-copilot/iam-simulate`, installed by `tests/setup.sh` into
//! `tests/iam/`) decides with the template's real policies: identity
//! policies, the tenant roles' trust policies and the SecureString key's
//! policy, resolved from template.yaml for a set of parameters. Each answer
//! must be what `docs/security.md` says each role can do; and the matrix
//! must notice a write given back to a reader, or a tenant condition dropped.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value as Json, json};
use serde_norway::Value;

use crate::cfn::{ACCOUNT, REGION, Resolved, STACK, template};

const OWN: &str = "tenant-a";
/// A tag value that would name the global layer's parameters.
const LAYER_NAME: &str = "_global";
const OTHER: &str = "tenant-b";

// ------------------------------------------------------------ the requests

/// Who asks: a role of the template (one of its sessions), or a tenant
/// role's session for a tenant (session tag TenantId).
#[derive(Debug, Clone, Copy)]
enum Who {
    ConfigApi,
    ConfigRefresh,
    Agent,
    Reader,
    Writer,
    /// The platform write role's session (shared layers, registry).
    Platform,
    /// The rollout driver's role.
    Driver,
    /// Any other role of the account, whose own policy allows everything.
    SomeoneElse,
    /// An agent outside ECS: a role of its own named in `AgentRoleArns`,
    /// with `AgentTaskPolicy` attached.
    AgentHost,
    /// The same, under a role not named in `AgentRoleArns`.
    UnlistedHost,
}

/// What is asked for.
#[derive(Debug, Clone, Copy)]
enum What {
    Item(&'static str),
    /// A BatchGetItem naming the tenant's key and another tenant's.
    Items(&'static str, &'static str),
    Schemas,
    /// The service grants' partition.
    Grants,
    Journal,
    Parameter(&'static str),
    /// A tenant's service path (`GetParametersByPath`'s resource).
    ParameterPath(&'static str),
    SigningKey,
    /// A parameter of the agents' Refresh TLS material (`ca`, `identity`).
    AgentTls(&'static str),
    /// A SecureString of the tenant, through SSM, with the stack's key.
    Secret(&'static str),
    /// The same under Parameter Store's `aws/ssm` key, whose key policy lets
    /// every principal of the account use it through SSM.
    AwsManagedKeySecret(&'static str),
    /// A shared layer's partition (`LAYER#global`, `LAYER#tier#gold`).
    LayerItems(&'static str),
    /// The tenant registry's partition.
    Registry,
    /// A shared layer's service path (`_global`, `_tiers/gold`).
    LayerPath(&'static str),
    /// The user pool (group membership).
    UserPool,
    ReadRole(&'static str),
    WriteRole(&'static str),
    /// AssumeRole into the platform write role (no tenant tag).
    PlatformRole,
    /// A data key of the agents' snapshot key, in the snapshot encryption
    /// context (`true`) or without it.
    AgentSnapshot(bool),
}

struct Case {
    who: Who,
    action: &'static str,
    what: What,
    allowed: bool,
}

const fn case(who: Who, action: &'static str, what: What, allowed: bool) -> Case {
    Case {
        who,
        action,
        what,
        allowed,
    }
}

fn simulation(stack: &Resolved, case: &Case) -> Json {
    let role = match case.who {
        Who::ConfigApi => "ConfigApiFunctionRole",
        Who::ConfigRefresh => "ConfigRefreshFunctionRole",
        Who::Agent => "AgentTaskRole",
        Who::Reader => "TenantReadRole",
        Who::Writer => "TenantWriteRole",
        Who::Platform => "PlatformWriteRole",
        Who::Driver => "RolloutDriverFunctionRole",
        Who::SomeoneElse => "SomeoneElsesRole",
        Who::AgentHost => "AgentHostRole",
        Who::UnlistedHost => "UnlistedHostRole",
    };
    let mut context = serde_json::Map::new();
    let session = match case.who {
        Who::Reader | Who::Writer => {
            context.insert("aws:PrincipalTag/TenantId".into(), json!(OWN));
            OWN
        }
        _ => "session",
    };
    let principal = format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}");
    // What AWS sets for a role session (the simulator does not derive it).
    context.insert(
        "aws:PrincipalArn".into(),
        json!(format!("arn:aws:iam::{ACCOUNT}:role/{role}")),
    );
    let identity_policies = match case.who {
        Who::SomeoneElse => vec![json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}
        ]})],
        Who::AgentHost | Who::UnlistedHost => {
            vec![stack.resolve(&stack.template["Resources"]["AgentTaskPolicy"]["Properties"]["PolicyDocument"]).unwrap()]
        }
        _ => stack.identity_policies(role),
    };
    let root = stack.parameters["ParameterRoot"]
        .as_str()
        .unwrap()
        .to_owned();
    let parameter = |tenant: &str| {
        format!(
            "arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{root}/{tenant}/billing/param_config_endpoint"
        )
    };
    let mut resource_policy = None;
    let resource = match case.what {
        What::Item(tenant) => {
            context.insert(
                "dynamodb:LeadingKeys".into(),
                json!([format!("TENANT#{tenant}")]),
            );
            stack.arn("ConfigTable")
        }
        What::Items(own, other) => {
            context.insert(
                "dynamodb:LeadingKeys".into(),
                json!([format!("TENANT#{own}"), format!("TENANT#{other}")]),
            );
            stack.arn("ConfigTable")
        }
        What::Schemas => {
            context.insert("dynamodb:LeadingKeys".into(), json!(["SCHEMA"]));
            stack.arn("ConfigTable")
        }
        What::Grants => {
            context.insert("dynamodb:LeadingKeys".into(), json!(["GRANTS"]));
            stack.arn("ConfigTable")
        }
        What::LayerItems(partition) => {
            context.insert("dynamodb:LeadingKeys".into(), json!([partition]));
            stack.arn("ConfigTable")
        }
        What::Registry => {
            context.insert("dynamodb:LeadingKeys".into(), json!(["REGISTRY"]));
            stack.arn("ConfigTable")
        }
        What::LayerPath(segment) => {
            format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{root}/{segment}/billing")
        }
        What::Journal => stack.arn("ChangeJournalTable"),
        What::Parameter(tenant) => parameter(tenant),
        What::ParameterPath(tenant) => {
            format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{root}/{tenant}/billing")
        }
        What::SigningKey => format!(
            "arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{}",
            stack.parameters["RefreshKeyParameterName"]
                .as_str()
                .unwrap()
        ),
        What::AgentTls(name) => {
            format!(
                "arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/tenant-config/{STACK}/agents/tls/{name}"
            )
        }
        What::Secret(tenant) => {
            context.insert(
                "kms:ViaService".into(),
                json!(format!("ssm.{REGION}.amazonaws.com")),
            );
            context.insert(
                "kms:EncryptionContext:PARAMETER_ARN".into(),
                json!(parameter(tenant)),
            );
            context.insert(
                "kms:ResourceAliases".into(),
                json!([format!("alias/{STACK}-secure-strings")]),
            );
            resource_policy = Some(match stack.given_key() {
                Some(_) => default_key_policy(),
                None => stack.key_policy("SecureStringKey"),
            });
            stack
                .given_key()
                .unwrap_or_else(|| stack.arn("SecureStringKey"))
        }
        What::AwsManagedKeySecret(tenant) => {
            context.insert(
                "kms:ViaService".into(),
                json!(format!("ssm.{REGION}.amazonaws.com")),
            );
            context.insert(
                "kms:EncryptionContext:PARAMETER_ARN".into(),
                json!(parameter(tenant)),
            );
            context.insert("kms:ResourceAliases".into(), json!(["alias/aws/ssm"]));
            context.insert("kms:CallerAccount".into(), json!(ACCOUNT));
            resource_policy = Some(aws_ssm_key_policy());
            format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/aws-ssm")
        }
        What::UserPool => {
            format!("arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{REGION}_UserPool")
        }
        What::ReadRole(tenant) | What::WriteRole(tenant) => {
            let target = match case.what {
                What::ReadRole(_) => "TenantReadRole",
                _ => "TenantWriteRole",
            };
            context.insert("aws:RequestTag/TenantId".into(), json!(tenant));
            resource_policy = Some(stack.trust_policy(target));
            stack.arn(target)
        }
        What::PlatformRole => {
            resource_policy = Some(stack.trust_policy("PlatformWriteRole"));
            stack.arn("PlatformWriteRole")
        }
        What::AgentSnapshot(in_context) => {
            if in_context {
                context.insert(
                    "kms:EncryptionContext:purpose".into(),
                    json!(tenant_config_shared::warm_start::kms::CONTEXT_VALUE),
                );
            }
            resource_policy = Some(stack.key_policy("AgentSnapshotKey"));
            stack.arn("AgentSnapshotKey")
        }
    };
    let mut simulation = json!({
        "identityPolicies": identity_policies
            .into_iter()
            .enumerate()
            .map(|(i, policy)| json!({"name": format!("{role}-{i}"), "policy": policy}))
            .collect::<Vec<_>>(),
        "request": {
            "principal": principal,
            "action": case.action,
            "resource": {"resource": resource, "accountId": ACCOUNT},
            "contextVariables": context,
        },
        "contextKeysWithColons": case.action.starts_with("kms:"),
    });
    if let Some(policy) = resource_policy {
        simulation["resourcePolicy"] = policy;
    }
    simulation
}

/// The policy of a key made with KMS's default policy (the account's IAM
/// policies decide), standing in for a key given as `SecureStringKmsKeyArn`.
fn default_key_policy() -> Json {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
        "Action": "kms:*",
        "Resource": "*"
    }]})
}

/// The policy of Parameter Store's AWS managed key `aws/ssm`, as AWS sets it:
/// any principal of the account, through SSM, no IAM policy needed.
fn aws_ssm_key_policy() -> Json {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": "*"},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"],
        "Resource": "*",
        "Condition": {"StringEquals": {
            "kms:ViaService": format!("ssm.{REGION}.amazonaws.com"),
            "kms:CallerAccount": ACCOUNT
        }}
    }]})
}

/// Runs every case through the simulator; the cases whose decision differs
/// from what is expected, described.
fn mismatches(stack: &Resolved, cases: &[Case]) -> Vec<String> {
    let simulations: Vec<Json> = cases.iter().map(|case| simulation(stack, case)).collect();
    let root = tenant_config_local_stack::process::workspace_root();
    let script = root.join("tests/iam/simulate.mjs");
    assert!(
        root.join("tests/iam/node_modules/@cloud-copilot/iam-simulate")
            .exists(),
        "the IAM simulator is not installed: run `bash tests/setup.sh`"
    );
    let mut child = Command::new("node")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (Node.js is on the machine)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&simulations).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the simulator failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Json> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results.len(), cases.len());
    let mut wrong = Vec::new();
    for (case, result) in cases.iter().zip(&results) {
        let Some(decision) = result["decision"].as_str() else {
            panic!(
                "{:?} {} {:?}: the simulator refused the request: {result}",
                case.who, case.action, case.what
            );
        };
        if (decision == "Allowed") != case.allowed {
            wrong.push(format!(
                "{:?} {} {:?}: {decision}, expected {}",
                case.who,
                case.action,
                case.what,
                if case.allowed { "allowed" } else { "denied" }
            ));
        }
    }
    wrong
}

use What::*;
use Who::*;

/// Each role × each action × own tenant / other tenant / schemas / journal /
/// signing key, as designed (docs/security.md#what-each-role-can-do).
const MATRIX: &[Case] = &[
    // config-api: no tenant data of its own; assumes either tenant role.
    case(ConfigApi, "sts:AssumeRole", ReadRole(OWN), true),
    case(ConfigApi, "sts:AssumeRole", WriteRole(OWN), true),
    case(ConfigApi, "sts:TagSession", ReadRole(OWN), true),
    case(ConfigApi, "sts:TagSession", WriteRole(OWN), true),
    // No session may be tagged with a shared layer's name ("_global"):
    // its paths would be that session's own.
    case(ConfigApi, "sts:AssumeRole", ReadRole(LAYER_NAME), false),
    // Shared layers and registrations: read with its own role (every
    // tenant's read merges them); writing them is not this role's either:
    // the platform routes assume the platform write role for that.
    case(ConfigApi, "sts:AssumeRole", PlatformRole, true),
    case(
        ConfigApi,
        "dynamodb:Query",
        LayerItems("LAYER#global"),
        true,
    ),
    case(ConfigApi, "dynamodb:GetItem", Registry, true),
    case(ConfigApi, "dynamodb:Query", Registry, false),
    case(
        ConfigApi,
        "dynamodb:PutItem",
        LayerItems("LAYER#tier#gold"),
        false,
    ),
    case(
        ConfigApi,
        "ssm:GetParametersByPath",
        LayerPath("_tiers/gold"),
        true,
    ),
    case(
        ConfigApi,
        "ssm:GetParametersByPath",
        ParameterPath(OWN),
        false,
    ),
    case(ConfigApi, "sts:AssumeRole", WriteRole(LAYER_NAME), false),
    case(ConfigApi, "dynamodb:GetItem", Item(OWN), false),
    case(ConfigApi, "dynamodb:PutItem", Item(OWN), false),
    case(ConfigApi, "dynamodb:GetItem", Schemas, true),
    case(ConfigApi, "dynamodb:PutItem", Schemas, false),
    case(ConfigApi, "dynamodb:GetItem", Grants, true),
    case(ConfigApi, "dynamodb:PutItem", Grants, false),
    case(ConfigApi, "dynamodb:Query", Journal, true),
    case(ConfigApi, "dynamodb:BatchWriteItem", Journal, false),
    case(ConfigApi, "ssm:GetParameter", Parameter(OWN), false),
    case(ConfigApi, "ssm:PutParameter", Parameter(OWN), false),
    case(ConfigApi, "ssm:GetParameter", SigningKey, false),
    case(ConfigApi, "kms:Decrypt", Secret(OWN), false),
    case(
        ConfigApi,
        "cognito-idp:AdminListGroupsForUser",
        UserPool,
        true,
    ),
    case(
        ConfigApi,
        "cognito-idp:AdminAddUserToGroup",
        UserPool,
        false,
    ),
    // Live rollouts: every reader lists them; writing them is the platform
    // role's (the routes) and the driver's.
    case(ConfigApi, "dynamodb:Query", LayerItems("ROLLOUTS"), true),
    case(ConfigApi, "dynamodb:PutItem", LayerItems("ROLLOUTS"), false),
    case(Agent, "dynamodb:Query", LayerItems("ROLLOUTS"), true),
    case(Agent, "dynamodb:PutItem", LayerItems("ROLLOUT#r-1"), false),
    case(Platform, "dynamodb:PutItem", LayerItems("ROLLOUTS"), true),
    case(
        Platform,
        "dynamodb:DeleteItem",
        LayerItems("ROLLOUTS"),
        true,
    ),
    case(
        Platform,
        "dynamodb:PutItem",
        LayerItems("ROLLOUT#r-1"),
        true,
    ),
    // The rollout driver: rollouts and the shared layers' entries it lands;
    // a tenant's data it may read (the blast radius), never write or decrypt.
    case(Driver, "dynamodb:PutItem", LayerItems("ROLLOUT#r-1"), true),
    case(Driver, "dynamodb:DeleteItem", LayerItems("ROLLOUTS"), true),
    case(Driver, "dynamodb:PutItem", LayerItems("LAYER#global"), true),
    case(Driver, "dynamodb:PutItem", Registry, false),
    case(Driver, "dynamodb:GetItem", Registry, true),
    case(Driver, "dynamodb:GetItem", Item(OWN), true),
    case(Driver, "dynamodb:Query", Item(OWN), false),
    case(Driver, "dynamodb:PutItem", Item(OWN), false),
    case(Driver, "dynamodb:DeleteItem", Item(OWN), false),
    case(Driver, "ssm:PutParameter", LayerPath("_tiers/gold"), true),
    case(Driver, "ssm:PutParameter", Parameter(OWN), false),
    case(Driver, "ssm:GetParameter", SigningKey, false),
    case(Driver, "kms:Decrypt", AwsManagedKeySecret(OWN), false),
    case(Driver, "kms:Decrypt", Secret(OWN), false),
    case(Driver, "dynamodb:Query", Journal, false),
    // config-refresh: the signing key and the journal; no tenant data.
    case(ConfigRefresh, "ssm:GetParameter", SigningKey, true),
    // The agents' CA, to verify them; never their identity (private key).
    case(ConfigRefresh, "ssm:GetParameter", AgentTls("ca"), true),
    case(
        ConfigRefresh,
        "ssm:GetParameter",
        AgentTls("identity"),
        false,
    ),
    case(ConfigRefresh, "ssm:PutParameter", AgentTls("ca"), false),
    case(ConfigApi, "ssm:GetParameter", AgentTls("ca"), false),
    case(ConfigApi, "ssm:PutParameter", AgentTls("ca"), false),
    case(ConfigRefresh, "dynamodb:BatchWriteItem", Journal, true),
    case(ConfigRefresh, "sts:AssumeRole", ReadRole(OWN), false),
    case(ConfigRefresh, "sts:AssumeRole", WriteRole(OWN), false),
    case(ConfigRefresh, "dynamodb:GetItem", Item(OWN), false),
    case(ConfigRefresh, "ssm:PutParameter", Parameter(OWN), false),
    case(ConfigRefresh, "kms:Decrypt", Secret(OWN), false),
    // Agents (and whatever shares their task role): read through the read
    // role, the journal; nothing else.
    case(Agent, "sts:AssumeRole", ReadRole(OWN), true),
    case(Agent, "sts:AssumeRole", WriteRole(OWN), false),
    case(Agent, "sts:AssumeRole", ReadRole(LAYER_NAME), false),
    case(Agent, "sts:TagSession", WriteRole(OWN), false),
    case(Agent, "dynamodb:Query", Journal, true),
    case(Agent, "dynamodb:BatchWriteItem", Journal, false),
    case(Agent, "dynamodb:GetItem", Item(OWN), false),
    case(Agent, "dynamodb:PutItem", Item(OWN), false),
    case(Agent, "dynamodb:UpdateItem", Item(OWN), false),
    // The service grants, read only.
    case(Agent, "dynamodb:GetItem", Grants, true),
    case(Agent, "sts:AssumeRole", PlatformRole, false),
    case(ConfigRefresh, "sts:AssumeRole", PlatformRole, false),
    case(SomeoneElse, "sts:AssumeRole", PlatformRole, false),
    // The platform write role's session: the shared layers and the
    // registry, nothing of a tenant's, never a secret.
    case(
        Platform,
        "dynamodb:PutItem",
        LayerItems("LAYER#global"),
        true,
    ),
    case(
        Platform,
        "dynamodb:PutItem",
        LayerItems("LAYER#tier#gold"),
        true,
    ),
    case(Platform, "dynamodb:PutItem", Registry, true),
    case(Platform, "dynamodb:GetItem", Schemas, true),
    case(Platform, "dynamodb:PutItem", Schemas, false),
    case(Platform, "dynamodb:PutItem", Item(OWN), false),
    // A blast radius reads the tenants that hold their own value of the
    // key (the override index) and those values, item by item (100 a
    // BatchGetItem, 10 a GetParameters), and decrypts nothing; it lists no
    // tenant's partition.
    case(Platform, "dynamodb:GetItem", Item(OWN), true),
    case(Platform, "dynamodb:BatchGetItem", Item(OWN), true),
    case(Platform, "dynamodb:Query", Item(OWN), false),
    case(
        Platform,
        "dynamodb:Query",
        LayerItems("OVERRIDES#billing#k"),
        true,
    ),
    case(
        Platform,
        "dynamodb:PutItem",
        LayerItems("OVERRIDES#billing#k"),
        false,
    ),
    case(Platform, "ssm:GetParameter", Parameter(OWN), true),
    case(Platform, "ssm:GetParameters", Parameter(OWN), true),
    case(Platform, "ssm:GetParameters", SigningKey, false),
    case(
        Platform,
        "ssm:GetParametersByPath",
        ParameterPath(OWN),
        false,
    ),
    // Registrations move a tenant between tier members and counts.
    case(Platform, "dynamodb:PutItem", LayerItems("TIER#gold"), true),
    case(Platform, "dynamodb:UpdateItem", LayerItems("TIERS"), true),
    case(Platform, "dynamodb:BatchGetItem", Registry, true),
    case(Writer, "dynamodb:PutItem", LayerItems("TIER#gold"), false),
    case(ConfigApi, "dynamodb:PutItem", LayerItems("TIERS"), false),
    // Guardrails are set by platform administrators only.
    case(Platform, "dynamodb:PutItem", LayerItems("GUARDRAIL"), true),
    case(ConfigApi, "dynamodb:GetItem", LayerItems("GUARDRAIL"), true),
    case(
        ConfigApi,
        "dynamodb:PutItem",
        LayerItems("GUARDRAIL"),
        false,
    ),
    case(Writer, "dynamodb:PutItem", LayerItems("GUARDRAIL"), false),
    case(
        Writer,
        "dynamodb:PutItem",
        LayerItems("OVERRIDES#billing#k"),
        false,
    ),
    // config-refresh keeps the override index from the change feed, and
    // writes no tenant's item.
    case(
        ConfigRefresh,
        "dynamodb:PutItem",
        LayerItems("OVERRIDES#billing#k"),
        true,
    ),
    case(ConfigRefresh, "dynamodb:PutItem", Item(OWN), false),
    case(
        ConfigRefresh,
        "dynamodb:PutItem",
        LayerItems("GUARDRAIL"),
        false,
    ),
    case(Platform, "dynamodb:BatchWriteItem", Journal, false),
    case(Platform, "ssm:PutParameter", LayerPath("_global"), true),
    case(Platform, "ssm:PutParameter", LayerPath("_tiers/gold"), true),
    case(Platform, "ssm:PutParameter", Parameter(OWN), false),
    case(Platform, "ssm:GetParameter", SigningKey, false),
    case(Platform, "kms:Encrypt", Secret(OWN), false),
    case(Platform, "kms:Decrypt", Secret(OWN), false),
    case(Platform, "sts:AssumeRole", WriteRole(OWN), false),
    // The shared layers and registrations, read only; no listing of tenants.
    case(Agent, "dynamodb:Query", LayerItems("LAYER#global"), true),
    case(Agent, "dynamodb:Query", LayerItems("LAYER#tier#gold"), true),
    case(Agent, "dynamodb:GetItem", Registry, true),
    case(Agent, "dynamodb:Query", Registry, false),
    case(Agent, "dynamodb:PutItem", LayerItems("LAYER#global"), false),
    case(Agent, "dynamodb:PutItem", Registry, false),
    case(Agent, "ssm:GetParametersByPath", LayerPath("_global"), true),
    case(
        Agent,
        "ssm:GetParametersByPath",
        LayerPath("_tiers/gold"),
        true,
    ),
    case(Agent, "ssm:PutParameter", LayerPath("_global"), false),
    // ... and not a tenant's parameters with its own role
    case(Agent, "ssm:GetParametersByPath", ParameterPath(OWN), false),
    case(Agent, "dynamodb:PutItem", Grants, false),
    case(Agent, "dynamodb:GetItem", Schemas, false),
    case(Agent, "dynamodb:DeleteItem", Item(OWN), false),
    case(Agent, "ssm:GetParameter", Parameter(OWN), false),
    case(Agent, "ssm:PutParameter", Parameter(OWN), false),
    case(Agent, "ssm:GetParameter", SigningKey, false),
    // The agents' identity reaches them through ECS's execution role only.
    case(Agent, "ssm:GetParameter", AgentTls("identity"), false),
    case(Agent, "ssm:PutParameter", AgentTls("ca"), false),
    case(Agent, "kms:Decrypt", Secret(OWN), false),
    case(Agent, "kms:Encrypt", Secret(OWN), false),
    // Its warm-start snapshot: data keys in the snapshot context only.
    case(Agent, "kms:GenerateDataKey", AgentSnapshot(true), true),
    case(Agent, "kms:Decrypt", AgentSnapshot(true), true),
    case(Agent, "kms:Decrypt", AgentSnapshot(false), false),
    case(Agent, "kms:Encrypt", AgentSnapshot(true), false),
    case(AgentHost, "kms:Decrypt", AgentSnapshot(true), true),
    case(ConfigApi, "kms:Decrypt", AgentSnapshot(true), false),
    case(ConfigRefresh, "kms:Decrypt", AgentSnapshot(true), false),
    case(Reader, "kms:Decrypt", AgentSnapshot(true), false),
    case(Agent, "cognito-idp:AdminListGroupsForUser", UserPool, false),
    // The read role's session for tenant-a: reads tenant-a, nothing else.
    case(Reader, "dynamodb:GetItem", Item(OWN), true),
    case(Reader, "dynamodb:Query", Item(OWN), true),
    case(Reader, "dynamodb:GetItem", Item(OTHER), false),
    case(Reader, "dynamodb:BatchGetItem", Items(OWN, OWN), true),
    case(Reader, "dynamodb:BatchGetItem", Items(OWN, OTHER), false),
    case(Reader, "dynamodb:PutItem", Item(OWN), false),
    case(Reader, "dynamodb:UpdateItem", Item(OWN), false),
    case(Reader, "dynamodb:DeleteItem", Item(OWN), false),
    case(Reader, "dynamodb:GetItem", Schemas, false),
    case(Reader, "dynamodb:GetItem", Grants, false),
    case(Reader, "dynamodb:Query", LayerItems("LAYER#global"), false),
    case(Reader, "dynamodb:GetItem", Registry, false),
    case(Reader, "dynamodb:Query", Journal, false),
    case(Reader, "ssm:GetParameter", Parameter(OWN), true),
    case(Reader, "ssm:GetParametersByPath", ParameterPath(OWN), true),
    case(
        Reader,
        "ssm:GetParametersByPath",
        ParameterPath(OTHER),
        false,
    ),
    case(Reader, "ssm:GetParameter", Parameter(OTHER), false),
    case(Reader, "ssm:GetParameters", Parameter(OTHER), false),
    case(Reader, "ssm:PutParameter", Parameter(OWN), false),
    case(Reader, "ssm:DeleteParameter", Parameter(OWN), false),
    case(Reader, "ssm:GetParameterHistory", Parameter(OWN), false),
    case(Reader, "ssm:GetParameter", SigningKey, false),
    case(Reader, "ssm:GetParameter", AgentTls("identity"), false),
    case(Reader, "kms:Decrypt", Secret(OWN), true),
    case(Reader, "kms:Decrypt", Secret(OTHER), false),
    case(Reader, "kms:Encrypt", Secret(OWN), false),
    case(Reader, "kms:GenerateDataKey", Secret(OWN), false),
    case(Reader, "kms:CreateGrant", Secret(OWN), false),
    case(Reader, "kms:Encrypt", AwsManagedKeySecret(OWN), false),
    case(Reader, "sts:AssumeRole", WriteRole(OWN), false),
    // The write role's session for tenant-a: writes tenant-a, nothing else.
    case(Writer, "dynamodb:PutItem", Item(OWN), true),
    case(Writer, "dynamodb:DeleteItem", Item(OWN), true),
    // Quota counters live in the tenant's own partition.
    case(Writer, "dynamodb:UpdateItem", Item(OWN), true),
    case(Writer, "dynamodb:UpdateItem", Item(OTHER), false),
    case(Writer, "dynamodb:PutItem", Item(OTHER), false),
    case(Writer, "dynamodb:GetItem", Item(OTHER), false),
    case(Writer, "dynamodb:ConditionCheckItem", Item(OTHER), false),
    case(Writer, "dynamodb:PutItem", Schemas, false),
    case(Writer, "dynamodb:PutItem", Grants, false),
    // A tenant administrator's session never writes a shared layer or a tier.
    case(
        Writer,
        "dynamodb:PutItem",
        LayerItems("LAYER#global"),
        false,
    ),
    case(Writer, "dynamodb:PutItem", Registry, false),
    case(Writer, "ssm:PutParameter", LayerPath("_global"), false),
    case(Writer, "dynamodb:BatchWriteItem", Journal, false),
    case(Writer, "ssm:PutParameter", Parameter(OWN), true),
    case(Writer, "ssm:DeleteParameter", Parameter(OWN), true),
    case(Writer, "ssm:PutParameter", AgentTls("ca"), false),
    case(Writer, "ssm:GetParameterHistory", Parameter(OWN), true),
    case(Writer, "ssm:PutParameter", Parameter(OTHER), false),
    case(Writer, "ssm:GetParameter", SigningKey, false),
    case(Writer, "kms:Encrypt", Secret(OWN), true),
    case(Writer, "kms:GenerateDataKey", Secret(OWN), true),
    case(Writer, "kms:Encrypt", Secret(OTHER), false),
    case(Writer, "kms:Decrypt", Secret(OTHER), false),
    // never under another key: aws/ssm would let the whole account decrypt
    case(Writer, "kms:Encrypt", AwsManagedKeySecret(OWN), false),
    case(
        Writer,
        "kms:GenerateDataKey",
        AwsManagedKeySecret(OWN),
        false,
    ),
    // secrets written before the stack's key existed stay readable
    case(Writer, "kms:Decrypt", AwsManagedKeySecret(OWN), true),
    case(Writer, "kms:CreateGrant", Secret(OWN), false),
    // Any other role of the account, however broad its own policy: the
    // tenant roles' trust names who may assume them.
    case(SomeoneElse, "sts:AssumeRole", ReadRole(OWN), false),
    case(SomeoneElse, "sts:AssumeRole", WriteRole(OWN), false),
    // an administrator of the account may use the key through SSM (to seed
    // secrets), and cannot grant it to anyone
    case(SomeoneElse, "kms:Decrypt", Secret(OWN), true),
    case(SomeoneElse, "kms:CreateGrant", Secret(OWN), false),
];

#[test]
fn each_role_can_do_exactly_its_job_with_the_templates_policies() {
    // GIVEN the template with its defaults (tenant credentials, a key of its own)
    let stack = Resolved::new(template(), &[]);
    assert!(stack.condition("VendsTenantCredentials") && stack.condition("CreatesKmsKey"));
    // WHEN each role asks for each action THEN the simulator decides as designed
    let wrong = mismatches(&stack, MATRIX);
    assert!(
        wrong.is_empty(),
        "IAM decided otherwise:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn agents_limited_to_named_tenants_can_assume_the_read_role_for_those_only() {
    // GIVEN AgentTenants naming tenant-a
    let stack = Resolved::new(template(), &[("AgentTenants", json!([OWN]))]);
    // THEN an agent reads tenant-a and cannot even ask for tenant-b
    let wrong = mismatches(
        &stack,
        &[
            case(Agent, "sts:AssumeRole", ReadRole(OWN), true),
            case(Agent, "sts:AssumeRole", ReadRole(OTHER), false),
            case(ConfigApi, "sts:AssumeRole", ReadRole(OTHER), true),
        ],
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The statement with `sid` in the template, to change it.
fn statement<'a>(template: &'a mut Value, resource: &str, sid: &str) -> &'a mut Value {
    fn find<'a>(value: &'a mut Value, sid: &str) -> Option<&'a mut Value> {
        if value.get("Sid").and_then(Value::as_str) == Some(sid) {
            return Some(value);
        }
        match value {
            Value::Sequence(items) => items.iter_mut().find_map(|v| find(v, sid)),
            Value::Mapping(map) => map.values_mut().find_map(|v| find(v, sid)),
            Value::Tagged(tagged) => find(&mut tagged.value, sid),
            _ => None,
        }
    }
    find(&mut template["Resources"][resource], sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {resource}"))
}

#[test]
fn the_matrix_notices_a_write_given_to_a_reader_or_a_tenant_condition_dropped() {
    // WHEN the read role is given PutItem back
    let mut changed = template();
    let items = statement(&mut changed, "TenantReadRole", "ReadOneTenantsItems");
    items["Action"]
        .as_sequence_mut()
        .unwrap()
        .push(Value::String("dynamodb:PutItem".into()));
    let wrong = mismatches(&Resolved::new(changed, &[]), MATRIX);
    // THEN the matrix fails on it
    assert!(
        wrong
            .iter()
            .any(|w| w.starts_with("Reader dynamodb:PutItem Item(\"tenant-a\")")),
        "{wrong:?}"
    );

    // WHEN the agents' policy may write items again
    let mut changed = template();
    let journal = statement(&mut changed, "AgentTaskPolicy", "CatchUpFromTheJournal");
    journal["Action"] = serde_norway::from_str("[dynamodb:Query, dynamodb:PutItem]").unwrap();
    journal["Resource"] = serde_norway::from_str("'*'").unwrap();
    let wrong = mismatches(&Resolved::new(changed, &[]), MATRIX);
    assert!(
        wrong
            .iter()
            .any(|w| w.starts_with("Agent dynamodb:PutItem")),
        "{wrong:?}"
    );

    // WHEN the write role's LeadingKeys condition is dropped
    let mut changed = template();
    let items = statement(&mut changed, "TenantWriteRole", "WriteOneTenantsItems");
    items.as_mapping_mut().unwrap().remove("Condition");
    let wrong = mismatches(&Resolved::new(changed, &[]), MATRIX);
    assert!(
        wrong
            .iter()
            .any(|w| w.starts_with("Writer dynamodb:PutItem Item(\"tenant-b\")")),
        "{wrong:?}"
    );

    // WHEN the read role's trust no longer names the agents' roles
    let mut changed = template();
    statement(&mut changed, "TenantReadRole", "AgentsReadTheirTenants")["Condition"]
        .as_mapping_mut()
        .unwrap()
        .remove("ArnEquals");
    let wrong = mismatches(&Resolved::new(changed, &[]), MATRIX);
    assert!(
        wrong
            .iter()
            .any(|w| w.starts_with("SomeoneElse sts:AssumeRole ReadRole")),
        "{wrong:?}"
    );

    // WHEN the read role's own policy loses its tenant condition on Decrypt
    let mut changed = template();
    let decrypt = statement(
        &mut changed,
        "TenantReadRole",
        "DecryptOneTenantsSecureStrings",
    );
    decrypt.as_mapping_mut().unwrap().remove("Condition");
    let wrong = mismatches(&Resolved::new(changed.clone(), &[]), MATRIX);
    // THEN the key's policy still keeps it to its tenant (it holds on its own)
    assert!(
        !wrong
            .iter()
            .any(|w| w.starts_with("Reader kms:Decrypt Secret")),
        "{wrong:?}"
    );
    // WHEN the key policy's tenant deny goes too THEN the matrix notices
    let deny = statement(
        &mut changed,
        "SecureStringKey",
        "TenantRolesOnlyForTheirOwnTenant",
    );
    deny["Action"] = Value::String("kms:ScheduleKeyDeletion".into());
    let wrong = mismatches(&Resolved::new(changed, &[]), MATRIX);
    assert!(
        wrong
            .iter()
            .any(|w| w.starts_with("Reader kms:Decrypt Secret(\"tenant-b\")")),
        "{wrong:?}"
    );
}

#[test]
fn agents_outside_ecs_read_only_under_a_role_named_in_agent_role_arns() {
    // GIVEN a host role named in AgentRoleArns (with AgentTaskPolicy attached)
    let host = format!("arn:aws:iam::{ACCOUNT}:role/AgentHostRole");
    let stack = Resolved::new(template(), &[("AgentRoleArns", json!([host]))]);
    // THEN it reads through the read role like the ECS tasks, and a role with
    // the same policy that is not named cannot
    let wrong = mismatches(
        &stack,
        &[
            case(AgentHost, "sts:AssumeRole", ReadRole(OWN), true),
            case(AgentHost, "sts:AssumeRole", WriteRole(OWN), false),
            case(Agent, "sts:AssumeRole", ReadRole(OWN), true),
            case(UnlistedHost, "sts:AssumeRole", ReadRole(OWN), false),
        ],
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_given_key_is_the_only_key_secure_strings_are_written_with() {
    // GIVEN a key of the operator's own instead of the stack's
    let given = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/given");
    let stack = Resolved::new(template(), &[("SecureStringKmsKeyArn", json!(given))]);
    assert!(!stack.condition("CreatesKmsKey"));
    // THEN the write role encrypts its tenant's secrets with it, and with no other
    let wrong = mismatches(
        &stack,
        &[
            case(Writer, "kms:Encrypt", Secret(OWN), true),
            case(Writer, "kms:Encrypt", Secret(OTHER), false),
            case(Writer, "kms:Encrypt", AwsManagedKeySecret(OWN), false),
            case(Reader, "kms:Decrypt", Secret(OWN), true),
            case(Reader, "kms:Decrypt", Secret(OTHER), false),
        ],
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn without_tenant_credentials_config_api_reads_and_writes_every_tenant_and_agents_only_read() {
    // GIVEN VendTenantCredentials=false (no tenant roles)
    let stack = Resolved::new(template(), &[("VendTenantCredentials", json!("false"))]);
    // THEN config-api's own role reads and writes every tenant, agents read
    // every tenant and write nothing, and nobody reads the signing key
    let wrong = mismatches(
        &stack,
        &[
            case(ConfigApi, "dynamodb:GetItem", Item(OTHER), true),
            case(ConfigApi, "dynamodb:PutItem", Item(OWN), true),
            case(ConfigApi, "ssm:PutParameter", Parameter(OWN), true),
            case(ConfigApi, "ssm:GetParameter", SigningKey, false),
            case(Agent, "dynamodb:GetItem", Item(OTHER), true),
            case(Agent, "dynamodb:PutItem", Item(OWN), false),
            case(Agent, "ssm:GetParameter", Parameter(OWN), true),
            case(Agent, "ssm:PutParameter", Parameter(OWN), false),
            case(Agent, "ssm:GetParameter", SigningKey, false),
            case(ConfigRefresh, "ssm:GetParameter", SigningKey, true),
        ],
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
