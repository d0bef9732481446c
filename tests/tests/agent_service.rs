//! The agent as something you deploy, kept honest: the example ECS service
//! (`agent-service.yaml`) imports only what `template.yaml` exports, gives
//! the agent exactly the settings it reads (the ones the local stack's agents
//! get, save the local and the self-registration ones), and registers it on
//! the port it serves Refresh on, which the image (`agent/Dockerfile`)
//! exposes and the security group opens to config-refresh only. End to end,
//! a real `config-agent` with the example's environment, each import and
//! parameter resolved to the local stack's value, serves a tenant's read,
//! registers nothing itself, and takes config-refresh's push once registered
//! the way ECS registers a task.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_norway::Value;
use tenant_config_local_stack::agent::{AgentProcess, agent_binary};
use tenant_config_local_stack::process::workspace_root;
use tenant_config_local_stack::seed;
use tenant_config_local_stack::stack::{ALICE, LocalStack, SERVICE, StackOptions};
use tenant_config_shared::refresh::signing::RefreshKey;
use tenant_config_shared::settings::{
    AGENT_CACHE_DEFAULTS, AgentSettings, AwsCallSettings, RefreshListenerTls, Settings,
};

/// Where the image keeps the warm-start snapshot (a task volume in ECS).
const SNAPSHOT_DIRECTORY: &str = "/var/lib/tenant-config";
/// The functions of the main stack whose settings an agent shares.
const FUNCTIONS: [&str; 2] = ["ConfigApiFunction", "ConfigRefreshFunction"];

/// Read by the agent straight from its environment, not through the settings
/// readers: the log filter (telemetry), the metrics namespace (EMF) and the
/// region (the AWS SDK, which Fargate would not give it otherwise).
const READ_OUTSIDE_SETTINGS: [&str; 3] = ["RUST_LOG", "METRICS_NAMESPACE", "AWS_REGION"];

fn yaml_file(name: &str) -> Value {
    let path = workspace_root().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{name} is YAML: {e}"))
}

fn text_file(name: &str) -> String {
    let path = workspace_root().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).expect("a YAML fragment")
}

fn tag_is(value: &Value, tag: &str) -> Option<Value> {
    match value {
        Value::Tagged(tagged) if tagged.tag == tag => Some(tagged.value.clone()),
        _ => None,
    }
}

/// The output `X` of an import `Fn::ImportValue: !Sub "${MainStackName}-X"`
/// (the only form the example may use: the main stack exports
/// `{stack}-{output}`), or `None` if `value` is no import.
fn import(value: &Value) -> Option<String> {
    let imported = value
        .as_mapping()
        .and_then(|m| m.get("Fn::ImportValue"))
        .cloned()
        .or_else(|| tag_is(value, "ImportValue"))?;
    let name = tag_is(&imported, "Sub")
        .and_then(|s| s.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("import by !Sub \"${{MainStackName}}-…\": {imported:?}"));
    Some(
        name.strip_prefix("${MainStackName}-")
            .unwrap_or_else(|| panic!("import of another stack: {name}"))
            .to_owned(),
    )
}

/// Every import anywhere in `value`.
fn imports(value: &Value) -> Vec<String> {
    if let Some(output) = import(value) {
        return vec![output];
    }
    match value {
        Value::Sequence(items) => items.iter().flat_map(imports).collect(),
        Value::Mapping(map) => map.values().flat_map(imports).collect(),
        Value::Tagged(tagged) => imports(&tagged.value),
        _ => Vec::new(),
    }
}

/// Where one variable of the example's container gets its value.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// An export of the main stack: the output's name.
    Import(String),
    /// A String parameter the main stack creates, read when the example is
    /// deployed (`{{resolve:ssm:…}}`): the logical id of the main stack's
    /// `AWS::SSM::Parameter` of that name.
    MainStackParameter(String),
    /// A parameter of the example.
    Parameter(String),
    /// A secret ECS reads from the main stack's `AgentTlsParameterPath` when
    /// the task starts: the parameter's name under it (`certificate`).
    AgentTlsSecret(String),
    /// A pseudo parameter (`AWS::Region`).
    Pseudo(String),
    Literal(String),
}

fn source(value: &Value) -> Source {
    if let Some(output) = import(value) {
        return Source::Import(output);
    }
    if let Some(text) = tag_is(value, "Sub").and_then(|v| v.as_str().map(str::to_owned))
        && let Some(reference) = text
            .strip_prefix("{{resolve:ssm:")
            .and_then(|text| text.strip_suffix("}}"))
    {
        return Source::MainStackParameter(main_stack_parameter(reference));
    }
    if let Some(name) = tag_is(value, "Ref").and_then(|v| v.as_str().map(str::to_owned)) {
        return if name.starts_with("AWS::") {
            Source::Pseudo(name)
        } else {
            Source::Parameter(name)
        };
    }
    match value {
        Value::String(text) => Source::Literal(text.clone()),
        other => panic!("an environment value the test cannot place: {other:?}"),
    }
}

/// The logical id of the main stack's SSM parameter that a dynamic
/// reference of the example names (`${MainStackName}` standing for the main
/// stack's `${AWS::StackName}`).
fn main_stack_parameter(reference: &str) -> String {
    let main = yaml_file("template.yaml");
    let wanted = reference.replace("${MainStackName}", "${AWS::StackName}");
    main["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .find(|(_, resource)| {
            resource["Type"].as_str() == Some("AWS::SSM::Parameter")
                && tag_is(&resource["Properties"]["Name"], "Sub")
                    .and_then(|n| n.as_str().map(str::to_owned))
                    == Some(wanted.clone())
        })
        .and_then(|(id, _)| id.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("the main stack creates no parameter {reference}"))
}

/// The config-agent container of the example's task definition.
fn container(ecs: &Value) -> &Value {
    let definitions = &ecs["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"];
    definitions
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["Name"].as_str() == Some("config-agent"))
        .expect("a config-agent container")
}

/// The container's environment and secrets: each variable and its source.
fn container_env(ecs: &Value) -> Vec<(String, Source)> {
    let environment = container(ecs)["Environment"]
        .as_sequence()
        .expect("an Environment list")
        .iter()
        .map(|entry| {
            (
                entry["Name"].as_str().unwrap().to_owned(),
                source(&entry["Value"]),
            )
        });
    let secrets = container(ecs)["Secrets"]
        .as_sequence()
        .expect("a Secrets list (the Refresh listener's TLS identity)")
        .iter()
        .map(|entry| {
            (
                entry["Name"].as_str().unwrap().to_owned(),
                Source::AgentTlsSecret(agent_tls_secret(&entry["ValueFrom"])),
            )
        });
    environment.chain(secrets).collect()
}

/// The parameter a secret names under the main stack's
/// `AgentTlsParameterPath`, refusing any other form: `!Sub ["arn:…:parameter${Path}/NAME", {Path: import}]`.
fn agent_tls_secret(value_from: &Value) -> String {
    let sub = tag_is(value_from, "Sub").expect("ValueFrom: !Sub [arn, {Path: import}]");
    let parts = sub.as_sequence().expect("the list form of !Sub");
    assert_eq!(
        import(&parts[1]["Path"]).as_deref(),
        Some("AgentTlsParameterPath"),
        "{value_from:?}"
    );
    let arn = parts[0].as_str().unwrap();
    assert!(
        arn.starts_with(
            "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${Path}/"
        ),
        "{arn}"
    );
    arn.rsplit_once("${Path}/").unwrap().1.to_owned()
}

fn resolve(
    env: &[(String, Source)],
    value_of: impl Fn(&Source) -> String,
) -> Vec<(String, String)> {
    env.iter()
        .map(|(name, source)| (name.clone(), value_of(source)))
        .collect()
}

/// What the agent reads of `env` at start, as `config-agent`'s main reads it
/// (reader settings with the agent's defaults, agent settings, AWS call
/// bounds; every variable asked for is recorded), and the first refusal.
fn agent_reads(env: &[(String, String)]) -> (BTreeSet<String>, Result<AgentSettings, String>) {
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_owned());
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    let settings = Settings::from_lookup(&lookup, AGENT_CACHE_DEFAULTS).map(drop);
    let agent = AgentSettings::from_lookup(&lookup);
    let calls = AwsCallSettings::from_lookup(&lookup).map(drop);
    let parsed = settings
        .and(calls)
        .and(agent)
        .map_err(|e| format!("{}: {}", e.variable, e.reason));
    let mut asked = asked.into_inner();
    asked.extend(READ_OUTSIDE_SETTINGS.map(str::to_owned));
    (asked, parsed)
}

/// The agent's Refresh port when nothing overrides it.
fn default_refresh_port() -> u16 {
    let key = RefreshKey::generate("k1").unwrap().0.public_entry();
    let lookup = |name: &str| match name {
        "REFRESH_PUBLIC_KEYS" => Some(key.clone()),
        "CLOUD_MAP_REGISTER" => Some("false".to_owned()),
        "REFRESH_PLAINTEXT" => Some("allow".to_owned()),
        _ => None,
    };
    let refresh_port = AgentSettings::from_lookup(&lookup)
        .expect("the agent's defaults parse")
        .refresh_listen
        .port();
    // The registered port is the agent's default, so the example states it
    // (and the test can check it) instead of inventing another.
    assert_eq!(refresh_port, 50052);
    refresh_port
}

/// Whether a condition of the main template holds with every parameter at
/// its default (the deployment the example is written for).
fn holds_by_default(main: &Value, condition: &str) -> bool {
    fn eval(main: &Value, expression: &Value) -> bool {
        if let Some(inner) = tag_is(expression, "Not") {
            return !eval(main, &inner[0]);
        }
        if let Some(pair) = tag_is(expression, "Equals") {
            let side = |v: &Value| match tag_is(v, "Ref") {
                Some(name) => main["Parameters"][name.as_str().unwrap()]["Default"].clone(),
                None => v.clone(),
            };
            return side(&pair[0]) == side(&pair[1]);
        }
        panic!("a condition the test cannot evaluate: {expression:?}");
    }
    eval(main, &main["Conditions"][condition])
}

/// The expressions a function's variable may take (both branches of an `!If`).
fn branches(value: &Value) -> Vec<Value> {
    // The whole expression too: an output may carry the same `!If`.
    let mut all = vec![value.clone()];
    if let Some(choice) = tag_is(value, "If") {
        all.extend([&choice[1], &choice[2]].into_iter().flat_map(branches));
    }
    all
}

/// The variables the main stack's functions are given, with their
/// expressions.
fn function_env(main: &Value) -> Vec<(String, Value)> {
    FUNCTIONS
        .iter()
        .flat_map(|function| {
            main["Resources"][*function]["Properties"]["Environment"]["Variables"]
                .as_mapping()
                .unwrap()
                .iter()
                .map(|(name, value)| (name.as_str().unwrap().to_owned(), value.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The functions' variable given the same value as output `output`.
fn function_variable_of_output(main: &Value, output: &str) -> Option<String> {
    let value = &main["Outputs"][output]["Value"];
    function_env(main)
        .into_iter()
        .find(|(_, expression)| branches(expression).contains(value))
        .map(|(name, _)| name)
}

#[test]
fn the_ecs_example_imports_only_exports_of_the_main_stack_that_exist_by_default() {
    // GIVEN the main template and the ECS example
    let main = yaml_file("template.yaml");
    let ecs = yaml_file("agent-service.yaml");
    let imported = imports(&ecs);
    assert!(imported.len() >= 7, "imports were found: {imported:?}");
    // AND every parameter it reads at deploy time ({{resolve:ssm:…}}) is one
    // the main stack creates with its defaults (container_env finds it)
    let read: Vec<String> = container_env(&ecs)
        .into_iter()
        .filter_map(|(_, source)| match source {
            Source::MainStackParameter(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(read.len(), 2, "{read:?}");
    for id in &read {
        assert!(
            main["Resources"][id.as_str()]["Condition"].is_null(),
            "{id}"
        );
    }
    for output in &imported {
        // THEN every import names an output the main stack exports as
        // "{stack}-{output}"
        let definition = &main["Outputs"][output.as_str()];
        assert!(!definition.is_null(), "no output {output} to import");
        assert_eq!(
            definition["Export"]["Name"],
            yaml(&format!("!Sub \"${{AWS::StackName}}-{output}\"")),
            "{output}"
        );
        // AND exists when the main stack is deployed with its defaults
        // (importing a missing export fails the example's deploy)
        if let Some(condition) = definition["Condition"].as_str() {
            assert!(
                holds_by_default(&main, condition),
                "{output} exists only when {condition}"
            );
        }
    }
    // AND the example names the main stack samconfig.toml deploys
    let samconfig = text_file("samconfig.toml");
    let stack_name = samconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("stack_name = "))
        .expect("samconfig.toml names the stack")
        .trim_matches('"');
    assert_eq!(
        ecs["Parameters"]["MainStackName"]["Default"].as_str(),
        Some(stack_name)
    );
}

#[test]
fn the_ecs_example_gives_the_agent_the_values_the_main_stack_gives_its_functions() {
    // GIVEN the variables the container and the main stack's functions share
    let main = yaml_file("template.yaml");
    let ecs = yaml_file("agent-service.yaml");
    let functions = function_env(&main);
    let mut shared = 0;
    for (name, source) in container_env(&ecs) {
        let Some((_, expression)) = functions.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        shared += 1;
        let expected: Vec<Value> = branches(expression);
        // THEN each comes from the same place: the output whose value is the
        // functions' expression, or the stack name for the metrics namespace
        match &source {
            Source::Import(output) => assert!(
                expected.contains(&main["Outputs"][output.as_str()]["Value"]),
                "{name}: imported from {output}, but the functions get {expression:?}"
            ),
            Source::MainStackParameter(id) => assert!(
                expected.contains(&main["Resources"][id.as_str()]["Properties"]["Value"]),
                "{name}: read from {id}, but the functions get {expression:?}"
            ),
            // A parameter named after an output the main stack makes only
            // when a feature is on: the operator copies that output.
            Source::Parameter(parameter) if main["Outputs"][parameter.as_str()].is_mapping() => {
                assert!(
                    expected.contains(&main["Outputs"][parameter.as_str()]["Value"]),
                    "{name}: copied from output {parameter}, but the functions get {expression:?}"
                )
            }
            Source::Parameter(parameter) if parameter == "MainStackName" => assert!(
                expected.contains(&yaml("!Sub \"${AWS::StackName}\""))
                    || expected.contains(&yaml("!Ref AWS::StackName")),
                "{name}: the stack name, but the functions get {expression:?}"
            ),
            other => panic!("{name}: {other:?}, but the functions get {expression:?}"),
        }
    }
    assert!(shared >= 6, "shared variables were found: {shared}");
}

#[test]
fn the_ecs_example_sets_exactly_what_the_agent_reads_and_the_agent_accepts_it() {
    // GIVEN the example's environment, imports of a parameter resolved to the
    // main stack's default and of a resource to a stand-in id (the settings
    // take those as opaque text), a fresh public key
    let main = yaml_file("template.yaml");
    let ecs = yaml_file("agent-service.yaml");
    let env = container_env(&ecs);
    let public_key = RefreshKey::generate("k1").unwrap().0.public_entry();
    let resolved = resolve(&env, |source| match source {
        Source::Import(output) => {
            let value = &main["Outputs"][output.as_str()]["Value"];
            match tag_is(value, "Ref").and_then(|r| r.as_str().map(str::to_owned)) {
                Some(parameter) if !main["Parameters"][parameter.as_str()].is_null() => {
                    main["Parameters"][parameter.as_str()]["Default"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                }
                _ => format!("{output}-of-the-main-stack"),
            }
        }
        // As the template's default (EnforceServiceGrants true) resolves.
        Source::MainStackParameter(id) if id == "AgentServiceGrantsParameter" => {
            "enforce".to_owned()
        }
        Source::MainStackParameter(id) => format!("{id}-of-the-main-stack"),
        Source::Parameter(name) if name == "RefreshPublicKeys" => public_key.clone(),
        Source::Parameter(name) => ecs["Parameters"][name.as_str()]["Default"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has a default"))
            .to_owned(),
        Source::AgentTlsSecret(name) => {
            assert_eq!(name, "identity", "agent-tls writes no {name}");
            concat!(
                include_str!("../../testkit/fixtures/tls/agent.pem"),
                include_str!("../../testkit/fixtures/tls/agent.key")
            )
            .to_owned()
        }
        Source::Pseudo(name) => {
            assert_eq!(name, "AWS::Region");
            "us-east-1".to_owned()
        }
        Source::Literal(text) => text.clone(),
    });

    // WHEN the agent's settings readers take it
    let (read, parsed) = agent_reads(&resolved);

    // THEN every required setting is there: the agent starts with it
    let agent = parsed.expect("the agent accepts the example's environment");
    // AND every variable set is one the agent reads (none is ignored)
    let set: BTreeSet<String> = env.iter().map(|(name, _)| name.clone()).collect();
    let ignored: Vec<&String> = set.difference(&read).collect();
    assert!(ignored.is_empty(), "set but never read: {ignored:?}");
    assert_eq!(set.len(), env.len(), "a variable is set twice");
    // AND the platform registers the agent, as the main stack expects by
    // default: the agent does not register itself
    assert!(agent.registration.is_none());
    assert_eq!(
        main["Parameters"]["AgentRegistration"]["Default"].as_str(),
        Some("platform")
    );
    // AND Refresh is served over TLS with the identity agent-tls wrote
    assert!(
        matches!(agent.refresh_tls, RefreshListenerTls::Pem { .. }),
        "{:?}",
        agent.refresh_tls
    );
    // AND ECS may read exactly that parameter to hand it over
    let secrets: Vec<Value> = container(&ecs)["Secrets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|secret| secret["ValueFrom"].clone())
        .collect();
    let statement = &ecs["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        ["Statement"][0];
    assert_eq!(statement["Action"].as_str(), Some("ssm:GetParameters"));
    assert_eq!(statement["Resource"].as_sequence().unwrap(), &secrets);
    // AND readers are served on loopback only, Refresh on the task's address
    assert!(agent.listen.ip().is_loopback(), "{}", agent.listen);
    assert!(
        agent.refresh_listen.ip().is_unspecified(),
        "{}",
        agent.refresh_listen
    );
}

#[test]
fn the_refresh_port_is_the_same_in_the_agent_the_image_the_registry_and_the_firewall() {
    // GIVEN the agent's default Refresh port
    let port = default_refresh_port();
    let ecs = yaml_file("agent-service.yaml");

    // THEN ECS registers each task on it, in the main stack's agent service
    let registries = ecs["Resources"]["Service"]["Properties"]["ServiceRegistries"]
        .as_sequence()
        .expect("ServiceRegistries");
    assert_eq!(registries.len(), 1);
    assert_eq!(registries[0]["Port"].as_u64(), Some(u64::from(port)));
    assert_eq!(
        import(&registries[0]["RegistryArn"]).as_deref(),
        Some("AgentServiceArn")
    );
    // AND the agent listens there, and the task maps it
    let listen = container_env(&ecs)
        .into_iter()
        .find(|(name, _)| name == "AGENT_REFRESH_LISTEN_ADDR")
        .map(|(_, source)| source);
    let Some(Source::Literal(listen)) = listen else {
        panic!("AGENT_REFRESH_LISTEN_ADDR is a literal: {listen:?}");
    };
    assert_eq!(listen.parse::<SocketAddr>().unwrap().port(), port);
    let mapped: Vec<u64> = container(&ecs)["PortMappings"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|m| m["ContainerPort"].as_u64())
        .collect();
    assert_eq!(mapped, vec![u64::from(port)]);
    let task = &ecs["Resources"]["TaskDefinition"]["Properties"];
    assert_eq!(task["NetworkMode"].as_str(), Some("awsvpc"));
    // AND only config-refresh's security group may reach it
    let group = &ecs["Resources"]["AgentSecurityGroup"]["Properties"];
    let rules = group["SecurityGroupIngress"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    assert_eq!(rule["IpProtocol"].as_str(), Some("tcp"));
    assert_eq!(rule["FromPort"].as_u64(), Some(u64::from(port)));
    assert_eq!(rule["ToPort"].as_u64(), Some(u64::from(port)));
    assert_eq!(
        rule["SourceSecurityGroupId"],
        yaml("!Ref ConfigRefreshSecurityGroupId")
    );
    assert!(rule["CidrIp"].is_null() && rule["CidrIpv6"].is_null());
    // AND the service's tasks run where ECS places them in the VPC, with the
    // main stack's agent
    // role (AgentTaskRole: it reads through TenantReadRole, writes nothing)
    let task_definition = ecs["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .find(|r| r["Type"].as_str() == Some("AWS::ECS::TaskDefinition"))
        .unwrap();
    assert_eq!(
        import(&task_definition["Properties"]["TaskRoleArn"]).as_deref(),
        Some("AgentTaskRoleArn")
    );
    assert!(ecs["Resources"]["TaskRole"].is_null(), "no role of its own");

    // AND the image exposes that port and nothing else
    let dockerfile = text_file("agent/Dockerfile");
    let instructions: Vec<(String, String)> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (instruction, rest) = l.split_once(' ').unwrap_or((l, ""));
            (instruction.to_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let all = |name: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, rest)| rest.clone())
            .collect()
    };
    assert_eq!(all("EXPOSE"), vec![port.to_string()]);
    // AND it runs the binary the config-agent package builds, by exec form
    // (the distroless base has no shell to run a command string), as the
    // base image's non-root user
    let binary = agent_binary();
    let binary = binary.file_name().unwrap().to_str().unwrap();
    let agent_manifest = text_file("agent/Cargo.toml");
    assert!(
        agent_manifest.contains(&format!("name = \"{binary}\""))
            && !agent_manifest.contains("[[bin]]"),
        "the config-agent package builds one binary named after it"
    );
    let entrypoint: Vec<String> =
        serde_json::from_str(&all("ENTRYPOINT")[0]).expect("ENTRYPOINT in exec form");
    assert_eq!(entrypoint.len(), 1, "{entrypoint:?}");
    assert!(
        entrypoint[0].ends_with(&format!("/{binary}")),
        "{entrypoint:?}"
    );
    let copy = all("COPY");
    assert_eq!(
        copy,
        vec![
            format!("{binary} {}", entrypoint[0]),
            // the snapshot's directory, the nonroot user's, a VOLUME
            format!("--chown=nonroot:nonroot --chmod=700 state {SNAPSHOT_DIRECTORY}"),
        ]
    );
    assert_eq!(all("VOLUME"), vec![format!("[\"{SNAPSHOT_DIRECTORY}\"]")]);
    assert!(all("FROM")[0].starts_with("gcr.io/distroless/cc-debian12:nonroot"));
    assert_eq!(all("USER"), vec!["nonroot:nonroot"]);
    // AND neither the image nor the task asks for a health check command the
    // image could not run
    assert!(all("HEALTHCHECK").is_empty());
    assert!(container(&ecs)["HealthCheck"].is_null());
    // AND image.sh builds that binary and puts it in the context under that name
    let script = text_file("agent/image.sh");
    assert!(
        script.contains(&format!("--bin {binary}")),
        "image.sh builds {binary}"
    );
    assert!(
        script.contains(&format!("\"$context/{binary}\"")),
        "image.sh copies {binary} into the build context"
    );
}

/// Variables only the local stack's agents need: moto serves the JWKS apart
/// from the issuer (in AWS the agent derives it from COGNITO_ISSUER).
const LOCAL_ONLY: [&str; 1] = ["COGNITO_JWKS_URL"];
/// Read only by an agent that registers itself (the local stack's agents).
const SELF_REGISTRATION_ONLY: [&str; 2] = ["CLOUD_MAP_SERVICE_ID", "AGENT_INSTANCE_ID"];
/// Parsed by the reader settings the agent shares with config-api, used by
/// config-api only (the local stack gives functions and agents one
/// environment).
const CONFIG_API_ONLY: [&str; 3] = ["FLUSH_QUEUE_URL", "ADMIN_GROUP", "SECURESTRING_KMS_KEY_ID"];
/// Only the example sets: platform registration, the main stack's metrics
/// namespace (the local stack leaves the default), and the warm-start
/// snapshot (the local stack's agents keep none unless a test gives one a file).
const ECS_ONLY: [&str; 4] = [
    "CLOUD_MAP_REGISTER",
    "METRICS_NAMESPACE",
    "AGENT_SNAPSHOT_FILE",
    "AGENT_SNAPSHOT_KMS_KEY_ID",
];
/// How a process of the harness reaches moto instead of AWS.
fn is_local_aws(name: &str) -> bool {
    name.starts_with("AWS_ENDPOINT_URL")
        || [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_EC2_METADATA_DISABLED",
        ]
        .contains(&name)
}

#[tokio::test]
async fn an_agent_configured_as_the_ecs_example_serves_reads_registers_nothing_and_takes_pushes() {
    // GIVEN the local stack with one agent of its own (which registers
    // itself), serving Refresh over TLS as a deploy does
    let stack = LocalStack::start(
        StackOptions {
            agent_tls: true,
            ..StackOptions::with_agents(1)
        },
        &|_, _| {},
    )
    .await
    .expect("local stack starts");
    // AND the identity ECS would hand over, read from where agent-tls wrote it
    let identity = tenant_config_admin::agent_tls::read_agent_identity(
        &aws_sdk_ssm::Client::new(&stack.aws),
        &tenant_config_admin::agent_tls::AgentTlsParameters::under(
            tenant_config_local_stack::stack::AGENT_TLS_PATH,
        ),
    )
    .await
    .unwrap();
    let main = yaml_file("template.yaml");
    let ecs = yaml_file("agent-service.yaml");
    let env = container_env(&ecs);

    // AND the example's environment, each import resolved to the local
    // stack's value of the function setting the main stack gives that
    // output's value to (so an import of the wrong output gets the wrong value)
    let resolved = resolve(&env, |source| match source {
        // The snapshot key is the agents' alone: no function is given it.
        Source::Import(output) if output == "AgentSnapshotKeyArn" => stack
            .setting("AGENT_SNAPSHOT_KMS_KEY_ID")
            .expect("the local stack gives agents a snapshot key"),
        Source::Import(output) => {
            let variable = function_variable_of_output(&main, output)
                .unwrap_or_else(|| panic!("no function is given output {output}'s value"));
            stack
                .setting(&variable)
                .unwrap_or_else(|| panic!("the local stack has no {variable}"))
        }
        Source::MainStackParameter(id) => {
            let value = &main["Resources"][id.as_str()]["Properties"]["Value"];
            let variable = function_env(&main)
                .into_iter()
                .find(|(_, expression)| branches(expression).contains(value))
                .map(|(name, _)| name)
                .unwrap_or_else(|| panic!("no function is given {id}'s value"));
            stack
                .setting(&variable)
                .unwrap_or_else(|| panic!("the local stack has no {variable}"))
        }
        Source::Parameter(name) if name == "RefreshPublicKeys" => {
            stack.setting("REFRESH_PUBLIC_KEYS").unwrap()
        }
        Source::AgentTlsSecret(name) => {
            assert_eq!(name, "identity", "agent-tls writes no {name}");
            identity.clone()
        }
        Source::Parameter(name) => ecs["Parameters"][name.as_str()]["Default"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has a default"))
            .to_owned(),
        Source::Pseudo(name) => {
            assert_eq!(name, "AWS::Region");
            stack.setting("AWS_REGION").unwrap()
        }
        Source::Literal(text) => text.clone(),
    });

    // THEN it holds the settings the local stack's agents get and read,
    // save the local ones, those of self-registration and config-api's
    let local_env = stack.agents[0].environment().unwrap();
    let (local_reads, local_parsed) = agent_reads(&local_env);
    local_parsed.expect("the local agent's settings parse");
    let local: BTreeSet<&str> = local_env
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| local_reads.contains(*name) && !is_local_aws(name))
        .collect();
    let mut expected: BTreeSet<&str> = local
        .iter()
        .copied()
        .filter(|name| {
            ![&LOCAL_ONLY[..], &SELF_REGISTRATION_ONLY, &CONFIG_API_ONLY]
                .concat()
                .contains(name)
        })
        .collect();
    expected.extend(ECS_ONLY);
    let example: BTreeSet<&str> = resolved.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(example, expected, "local agents get {local:?}");
    for name in [
        "JOURNAL_TABLE_NAME",
        "TENANT_ROLE_ARN",
        "REFRESH_PUBLIC_KEYS",
    ] {
        assert!(example.contains(name), "{name}");
    }

    // WHEN a real config-agent starts with it (plus how to reach moto; the
    // harness listens on free loopback ports instead of 50051 and 50052)
    let mut agent_env = resolved.clone();
    agent_env.extend(
        stack
            .env
            .iter()
            .filter(|(name, _)| is_local_aws(name) || LOCAL_ONLY.contains(&name.as_str()))
            .cloned(),
    );
    let agent = AgentProcess::start_binary("ecs-example-agent", &agent_env, &agent_binary())
        .await
        .expect("the agent starts with the example's environment");

    // THEN a tenant's read is served
    let alice = stack.token(ALICE).await.unwrap();
    let key = "param_config_endpoint";
    assert_eq!(
        agent.get_config(&alice, SERVICE, key).await.unwrap(),
        "\"https://billing.tenant-a.example\""
    );
    // AND the agent registered nothing: only the local stack's own agent is
    // in Cloud Map
    let registered = seed::discovered_instance_ids(&stack.aws, &stack.cloud_map)
        .await
        .unwrap();
    assert_eq!(registered, vec![stack.agents[0].instance_id.clone()]);

    // WHEN the platform registers it as ECS registers a task: its address and
    // the ServiceRegistries port (here the harness's Refresh port)
    let address: SocketAddr = ([127, 0, 0, 1], agent.refresh_port).into();
    seed::register_instance(&stack.aws, &stack.cloud_map, "ecs-task-1", address)
        .await
        .unwrap();
    // AND a value changes and EventBridge tells config-refresh
    let summary = stack
        .change_parameter("tenant-a", key, "https://billing-ecs.tenant-a.example")
        .await
        .unwrap()
        .expect("refresh succeeds");

    // THEN config-refresh's signed push reaches both agents (the example's
    // agent trusts the key it was given)
    assert_eq!(summary["status"], "delivered", "{summary}");
    assert_eq!(summary["instances"], 2, "{summary}");
    // AND the example's agent serves the new value at once
    assert_eq!(
        agent.get_config(&alice, SERVICE, key).await.unwrap(),
        "\"https://billing-ecs.tenant-a.example\"",
        "{}",
        agent.log_tail()
    );
}
