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

use crate::cfn::{ACCOUNT, REGION, Resolved, template};

const OWN: &str = "tenant-a";
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
    /// Any other role of the account, whose own policy allows everything.
    SomeoneElse,
}

/// What is asked for.
#[derive(Debug, Clone, Copy)]
enum What {
    Item(&'static str),
    Schemas,
    Journal,
    Parameter(&'static str),
    SigningKey,
    /// A SecureString of the tenant, through SSM, with the stack's key.
    Secret(&'static str),
    ReadRole(&'static str),
    WriteRole(&'static str),
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
        Who::SomeoneElse => "SomeoneElsesRole",
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
    let identity_policies = match case.who {
        Who::SomeoneElse => vec![json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}
        ]})],
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
        What::Schemas => {
            context.insert("dynamodb:LeadingKeys".into(), json!(["SCHEMA"]));
            stack.arn("ConfigTable")
        }
        What::Journal => stack.arn("ChangeJournalTable"),
        What::Parameter(tenant) => parameter(tenant),
        What::SigningKey => format!(
            "arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{}",
            stack.parameters["RefreshKeyParameterName"]
                .as_str()
                .unwrap()
        ),
        What::Secret(tenant) => {
            context.insert(
                "kms:ViaService".into(),
                json!(format!("ssm.{REGION}.amazonaws.com")),
            );
            context.insert(
                "kms:EncryptionContext:PARAMETER_ARN".into(),
                json!(parameter(tenant)),
            );
            resource_policy = Some(stack.key_policy("SecureStringKey"));
            stack.arn("SecureStringKey")
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
    case(ConfigApi, "dynamodb:GetItem", Item(OWN), false),
    case(ConfigApi, "dynamodb:PutItem", Item(OWN), false),
    case(ConfigApi, "dynamodb:GetItem", Schemas, true),
    case(ConfigApi, "dynamodb:PutItem", Schemas, false),
    case(ConfigApi, "dynamodb:Query", Journal, true),
    case(ConfigApi, "dynamodb:BatchWriteItem", Journal, false),
    case(ConfigApi, "ssm:GetParameter", Parameter(OWN), false),
    case(ConfigApi, "ssm:PutParameter", Parameter(OWN), false),
    case(ConfigApi, "ssm:GetParameter", SigningKey, false),
    case(ConfigApi, "kms:Decrypt", Secret(OWN), false),
    // config-refresh: the signing key and the journal; no tenant data.
    case(ConfigRefresh, "ssm:GetParameter", SigningKey, true),
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
    case(Agent, "dynamodb:Query", Journal, true),
    case(Agent, "dynamodb:BatchWriteItem", Journal, false),
    case(Agent, "dynamodb:GetItem", Item(OWN), false),
    case(Agent, "dynamodb:PutItem", Item(OWN), false),
    case(Agent, "dynamodb:DeleteItem", Item(OWN), false),
    case(Agent, "ssm:GetParameter", Parameter(OWN), false),
    case(Agent, "ssm:PutParameter", Parameter(OWN), false),
    case(Agent, "ssm:GetParameter", SigningKey, false),
    case(Agent, "kms:Decrypt", Secret(OWN), false),
    case(Agent, "kms:Encrypt", Secret(OWN), false),
    // The read role's session for tenant-a: reads tenant-a, nothing else.
    case(Reader, "dynamodb:GetItem", Item(OWN), true),
    case(Reader, "dynamodb:Query", Item(OWN), true),
    case(Reader, "dynamodb:GetItem", Item(OTHER), false),
    case(Reader, "dynamodb:PutItem", Item(OWN), false),
    case(Reader, "dynamodb:DeleteItem", Item(OWN), false),
    case(Reader, "dynamodb:GetItem", Schemas, false),
    case(Reader, "dynamodb:Query", Journal, false),
    case(Reader, "ssm:GetParameter", Parameter(OWN), true),
    case(Reader, "ssm:GetParametersByPath", Parameter(OWN), true),
    case(Reader, "ssm:GetParameter", Parameter(OTHER), false),
    case(Reader, "ssm:PutParameter", Parameter(OWN), false),
    case(Reader, "ssm:DeleteParameter", Parameter(OWN), false),
    case(Reader, "ssm:GetParameterHistory", Parameter(OWN), false),
    case(Reader, "ssm:GetParameter", SigningKey, false),
    case(Reader, "kms:Decrypt", Secret(OWN), true),
    case(Reader, "kms:Decrypt", Secret(OTHER), false),
    case(Reader, "kms:Encrypt", Secret(OWN), false),
    case(Reader, "kms:GenerateDataKey", Secret(OWN), false),
    case(Reader, "sts:AssumeRole", WriteRole(OWN), false),
    // The write role's session for tenant-a: writes tenant-a, nothing else.
    case(Writer, "dynamodb:PutItem", Item(OWN), true),
    case(Writer, "dynamodb:DeleteItem", Item(OWN), true),
    case(Writer, "dynamodb:PutItem", Item(OTHER), false),
    case(Writer, "dynamodb:GetItem", Item(OTHER), false),
    case(Writer, "dynamodb:PutItem", Schemas, false),
    case(Writer, "dynamodb:BatchWriteItem", Journal, false),
    case(Writer, "ssm:PutParameter", Parameter(OWN), true),
    case(Writer, "ssm:DeleteParameter", Parameter(OWN), true),
    case(Writer, "ssm:GetParameterHistory", Parameter(OWN), true),
    case(Writer, "ssm:PutParameter", Parameter(OTHER), false),
    case(Writer, "ssm:GetParameter", SigningKey, false),
    case(Writer, "kms:Encrypt", Secret(OWN), true),
    case(Writer, "kms:GenerateDataKey", Secret(OWN), true),
    case(Writer, "kms:Encrypt", Secret(OTHER), false),
    case(Writer, "kms:Decrypt", Secret(OTHER), false),
    // Any other role of the account, however broad its own policy: the
    // tenant roles' trust names who may assume them.
    case(SomeoneElse, "sts:AssumeRole", ReadRole(OWN), false),
    case(SomeoneElse, "sts:AssumeRole", WriteRole(OWN), false),
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

    // WHEN the read role's trust names the whole account again
    let mut changed = template();
    statement(&mut changed, "TenantReadRole", "AgentsReadTheirTenants")["Principal"]["AWS"] =
        serde_norway::from_str("'arn:aws:iam::123456789012:root'").unwrap();
    let wrong = mismatches(&Resolved::new(changed, &[]), MATRIX);
    assert!(
        wrong
            .iter()
            .any(|w| w.starts_with("SomeoneElse sts:AssumeRole ReadRole")),
        "{wrong:?}"
    );

    // WHEN the key policy no longer keeps the tenant roles to their tenant,
    // and the read role's own policy loses its condition too
    let mut changed = template();
    let deny = statement(
        &mut changed,
        "SecureStringKey",
        "TenantRolesOnlyForTheirOwnTenant",
    );
    deny.as_mapping_mut().unwrap().remove("Condition");
    deny["Action"] = Value::String("kms:CreateGrant".into());
    let decrypt = statement(
        &mut changed,
        "TenantReadRole",
        "DecryptOneTenantsSecureStrings",
    );
    decrypt.as_mapping_mut().unwrap().remove("Condition");
    let wrong = mismatches(&Resolved::new(changed, &[]), MATRIX);
    assert!(
        wrong
            .iter()
            .any(|w| w.starts_with("Reader kms:Decrypt Secret(\"tenant-b\")")),
        "{wrong:?}"
    );
}
