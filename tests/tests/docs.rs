//! The docs cannot drift from the code: every setting a binary reads is in
//! its table of docs/configuration.md with the default the code applies (and
//! every documented one is read), the template's description and the runbook
//! give the same first-deploy steps, every relative link and anchor in the
//! docs resolves, and the README stays a front door.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use tenant_config_shared::metrics::DEFAULT_NAMESPACE;
use tenant_config_shared::refresh::signing::RefreshKey;
use tenant_config_shared::settings::{
    AGENT_CACHE_DEFAULTS, AgentSettings, AwsCallSettings, DriverSettings, LAMBDA_CACHE_DEFAULTS,
    RefreshSettings, Settings,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// How a documented row states its default.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Documented {
    Required,
    Unset,
    /// A value as the variable would be set (`3600`, `127.0.0.1:50051`).
    Value(String),
    /// A value computed from others (`{issuer}/.well-known/jwks.json`).
    Derived(String),
}

/// The `| Variable | Default | Meaning |` table of each `## binary` section.
fn documented() -> BTreeMap<String, BTreeMap<String, Documented>> {
    let text = read("docs/configuration.md");
    let mut sections: BTreeMap<String, BTreeMap<String, Documented>> = BTreeMap::new();
    let mut section = None;
    let mut in_table = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            section = Some(name.trim().to_owned());
            continue;
        }
        // Only the settings tables: other tables explain, they do not list.
        if line.starts_with('|') {
            in_table |= line.replace(' ', "") == "|Variable|Default|Meaning|";
        } else {
            in_table = false;
        }
        let Some(section) = section.as_ref().filter(|_| in_table) else {
            continue;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let variable = cells[1].trim_matches('`').to_owned();
        let default = match cells[2] {
            "required" => Documented::Required,
            "unset" => Documented::Unset,
            value if value.starts_with('`') && value.ends_with('`') => {
                let value = value.trim_matches('`').to_owned();
                if value.contains('{') {
                    Documented::Derived(value)
                } else {
                    Documented::Value(value)
                }
            }
            other => {
                panic!("{section}: {variable}: default '{other}' is not `value`, required or unset")
            }
        };
        let previous = sections
            .entry(section.clone())
            .or_default()
            .insert(variable.clone(), default);
        assert!(previous.is_none(), "{section}: {variable} documented twice");
    }
    sections
}

/// A parse of one binary's settings through a lookup, printed.
type Parse = fn(&dyn Fn(&str) -> Option<String>) -> Result<String, String>;

fn config_api(lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let reader =
        Settings::from_lookup(lookup, LAMBDA_CACHE_DEFAULTS).map_err(|e| e.variable.to_owned())?;
    reader
        .check_write_credentials()
        .map_err(|e| e.variable.to_owned())?;
    let calls = AwsCallSettings::from_lookup(lookup).map_err(|e| e.variable.to_owned())?;
    Ok(format!("{reader:?} {calls:?}"))
}

fn config_agent(lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let reader =
        Settings::from_lookup(lookup, AGENT_CACHE_DEFAULTS).map_err(|e| e.variable.to_owned())?;
    let agent = AgentSettings::from_lookup(lookup).map_err(|e| e.variable.to_owned())?;
    let calls = AwsCallSettings::from_lookup(lookup).map_err(|e| e.variable.to_owned())?;
    Ok(format!("{reader:?} {agent:?} {calls:?}"))
}

fn config_refresh(lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let refresh = RefreshSettings::from_lookup(lookup).map_err(|e| e.variable.to_owned())?;
    let calls = AwsCallSettings::from_lookup(lookup).map_err(|e| e.variable.to_owned())?;
    Ok(format!("{refresh:?} {calls:?}"))
}

fn rollout_driver(lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let driver = DriverSettings::from_lookup(lookup).map_err(|e| e.variable.to_owned())?;
    let calls = AwsCallSettings::from_lookup(lookup).map_err(|e| e.variable.to_owned())?;
    Ok(format!("{driver:?} {calls:?}"))
}

/// Read outside the settings modules, by every binary: the metrics
/// namespace and the log filter.
const READ_ELSEWHERE: &[(&str, &str)] = &[
    ("METRICS_NAMESPACE", DEFAULT_NAMESPACE),
    ("RUST_LOG", "info"),
];

/// Valid values for variables documented without a default value, so that
/// every conditional setting is reached (e.g. the session length is read
/// only with a tenant role).
fn sample(variable: &str) -> Option<String> {
    Some(match variable {
        "CONFIG_TABLE_NAME" | "JOURNAL_TABLE_NAME" => "tenant-config".to_owned(),
        "COGNITO_ISSUER" => {
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example".to_owned()
        }
        "COGNITO_CLIENT_IDS" => "client-1".to_owned(),
        "ADMIN_GROUP" => "config-admins".to_owned(),
        "SERVICE_GRANTS" => "enforce".to_owned(),
        "TENANT_ROLE_ARN" => "arn:aws:iam::123456789012:role/tenant-read".to_owned(),
        "TENANT_WRITE_ROLE_ARN" => "arn:aws:iam::123456789012:role/tenant-write".to_owned(),
        "FLUSH_QUEUE_URL" => "https://sqs.us-east-1.amazonaws.com/123456789012/flush".to_owned(),
        "REFRESH_PUBLIC_KEYS" => RefreshKey::generate("k1").unwrap().0.public_entry(),
        "CLOUD_MAP_SERVICE_ID" => "srv-example".to_owned(),
        "AGENT_ADVERTISE_IP" => "10.0.0.7".to_owned(),
        "AGENT_TLS_CERT_FILE" => "/etc/agent/cert.pem".to_owned(),
        "AGENT_TLS_KEY_FILE" => "/etc/agent/key.pem".to_owned(),
        "REFRESH_KEY_PARAMETER" => "/tenant-config/refresh-key".to_owned(),
        "CLOUD_MAP_NAMESPACE" => "tenant-config.internal".to_owned(),
        "CLOUD_MAP_SERVICE" => "config-agent".to_owned(),
        "REFRESH_TLS_CA_PEM" => "-----BEGIN CERTIFICATE-----".to_owned(),
        "STAGE_CACHE_REST_API_ID" => "a1b2c3".to_owned(),
        "STAGE_CACHE_STAGE" => "prod".to_owned(),
        "AGENT_SNAPSHOT_FILE" => "/var/lib/tenant-config/agent.snapshot".to_owned(),
        "AGENT_SNAPSHOT_KMS_KEY_ID" => "alias/tenant-config-agent-snapshots".to_owned(),
        _ => return None,
    })
}

/// Every documented variable of a binary set: to its documented value, or
/// a sample for those without one.
fn full_environment(rows: &BTreeMap<String, Documented>) -> BTreeMap<String, String> {
    rows.iter()
        .filter_map(|(variable, documented)| match documented {
            Documented::Value(value) => Some((variable.clone(), value.clone())),
            _ => sample(variable).map(|value| (variable.clone(), value)),
        })
        .collect()
}

/// Parses with `environment`, recording every variable the code asks for.
fn parse_recording(
    parse: Parse,
    environment: &BTreeMap<String, String>,
) -> (Result<String, String>, BTreeSet<String>) {
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_owned());
        environment.get(name).cloned()
    };
    let result = parse(&lookup);
    (result, asked.into_inner())
}

#[test]
fn every_setting_a_binary_reads_is_documented_with_the_default_the_code_applies() {
    let documented = documented();
    for (binary, parse) in [
        ("config-api", config_api as Parse),
        ("config-refresh", config_refresh as Parse),
        ("config-agent", config_agent as Parse),
        ("rollout-driver", rollout_driver as Parse),
    ] {
        let rows = documented
            .get(binary)
            .unwrap_or_else(|| panic!("docs/configuration.md has no '## {binary}' table"));
        // GIVEN every documented variable set
        let full = full_environment(rows);
        let (parsed, asked) = parse_recording(parse, &full);
        let expected =
            parsed.unwrap_or_else(|v| panic!("{binary}: the documented values are refused: {v}"));
        // THEN the code reads exactly the documented variables
        let mut documented_names: BTreeSet<String> = rows.keys().cloned().collect();
        for (elsewhere, _) in READ_ELSEWHERE {
            assert!(
                documented_names.remove(*elsewhere),
                "{binary}: {elsewhere} is read but undocumented"
            );
        }
        let undocumented: Vec<&String> = asked.difference(&documented_names).collect();
        assert!(
            undocumented.is_empty(),
            "{binary} reads {undocumented:?}, which docs/configuration.md does not list"
        );
        let unread: Vec<&String> = documented_names.difference(&asked).collect();
        assert!(
            unread.is_empty(),
            "{binary}: docs/configuration.md lists {unread:?}, which it never reads"
        );
        for (variable, documented) in rows {
            let mut without = full.clone();
            without.remove(variable);
            let (parsed, _) = parse_recording(parse, &without);
            match documented {
                // AND leaving a default out changes nothing
                Documented::Value(value) => assert_eq!(
                    parsed.as_ref().ok(),
                    Some(&expected),
                    "{binary}: {variable}'s documented default `{value}` is not the code's"
                ),
                // AND leaving a required one out is refused, naming it
                Documented::Required => {
                    assert_eq!(
                        parsed,
                        Err(variable.clone()),
                        "{binary}: {variable} is documented as required"
                    )
                }
                Documented::Unset | Documented::Derived(_) => {}
            }
        }
    }
    // AND what is read outside the settings modules has its documented default
    for binary in [
        "config-api",
        "config-refresh",
        "config-agent",
        "rollout-driver",
    ] {
        for (variable, default) in READ_ELSEWHERE {
            assert_eq!(
                documented[binary].get(*variable),
                Some(&Documented::Value((*default).to_owned())),
                "{binary}: {variable}"
            );
        }
    }
}

#[test]
fn every_variable_named_in_the_settings_code_is_in_some_table() {
    // A variable read only under a condition the test above does not reach
    // still cannot hide: every SCREAMING_CASE string in the settings code
    // must be documented somewhere.
    let documented: BTreeSet<String> = documented()
        .into_values()
        .flat_map(|rows| rows.into_keys())
        .collect();
    let mut named = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("shared/src/settings")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for literal in code.split('"').skip(1).step_by(2) {
            if literal.len() > 3
                && literal
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && literal.contains('_')
            {
                named.insert(literal.to_owned());
            }
        }
    }
    assert!(named.len() > 30, "the scan found the settings: {named:?}");
    let undocumented: Vec<&String> = named.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "undocumented settings: {undocumented:?}"
    );
}

#[test]
fn the_cli_reads_exactly_the_documented_variables_with_their_defaults() {
    let rows = &documented()["tenant-config-admin"];
    let mut read: BTreeMap<String, Option<String>> = BTreeMap::new();
    fn walk(command: &clap::Command, read: &mut BTreeMap<String, Option<String>>) {
        for argument in command.get_arguments() {
            if let Some(env) = argument.get_env() {
                let default = argument
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned());
                read.insert(env.to_string_lossy().into_owned(), default);
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, read);
        }
    }
    walk(&tenant_config_admin::cli::Cli::command(), &mut read);
    // The SDK's call bounds (Aws::from_env) and the CLI's own std::env reads.
    let (_, calls) = parse_recording(
        |lookup| {
            AwsCallSettings::from_lookup(lookup)
                .map(|c| format!("{c:?}"))
                .map_err(|e| e.to_string())
        },
        &BTreeMap::new(),
    );
    for variable in calls {
        read.entry(variable).or_insert(None);
    }
    for entry in std::fs::read_dir(root().join("admin/src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, call) in text.match_indices("std::env::var(\"") {
                let name = &text[at + call.len()..];
                read.entry(name[..name.find('"').unwrap()].to_owned())
                    .or_insert(None);
            }
        }
    }
    let read_names: BTreeSet<&String> = read.keys().collect();
    let documented_names: BTreeSet<&String> = rows.keys().collect();
    assert_eq!(
        read_names, documented_names,
        "tenant-config-admin: read vs documented"
    );
    for (variable, default) in &read {
        if let Some(default) = default {
            assert_eq!(
                rows[variable],
                Documented::Value(default.clone()),
                "tenant-config-admin: {variable}'s default"
            );
        }
    }
}

/// Every `tenant-config-admin ...` command in a text, up to the end of its
/// sentence or line.
fn cli_commands(text: &str) -> Vec<String> {
    text.match_indices("tenant-config-admin ")
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest.find(['\n', '`', ';', ')', '(']).unwrap_or(rest.len());
            rest[..end].trim_end_matches(['.', ',', ' ']).to_owned()
        })
        .collect()
}

#[test]
fn the_template_description_and_the_runbook_give_the_same_first_deploy_steps() {
    let template: serde_norway::Value = serde_norway::from_str(&read("template.yaml")).unwrap();
    let description = template["Description"].as_str().unwrap().replace('\n', " ");
    let runbook = read("docs/deploy.md");
    // GIVEN the commands the template's description tells a deployer to run
    let commands = cli_commands(&description);
    for step in ["refresh-key", "stage-settings", "verify"] {
        assert!(
            commands.iter().any(|c| c.contains(&format!(" {step}"))),
            "the template's description names no `tenant-config-admin ... {step}`: {description}"
        );
    }
    // THEN the runbook gives each of them, word for word
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        let found = runbook.lines().any(|line| {
            let line: Vec<&str> = line.split_whitespace().collect();
            line.windows(words.len()).any(|w| {
                w.iter()
                    .zip(&words)
                    .all(|(a, b)| a == b || b.chars().all(|c| c.is_ascii_uppercase()))
            })
        });
        assert!(
            found,
            "docs/deploy.md does not give the template's step `{command}`"
        );
    }
    // AND in the same order: the key first, stage settings before verify
    // The commands the runbook runs (its command lines, not its prose).
    let runbook_commands: Vec<&str> = runbook
        .lines()
        .filter(|l| l.starts_with("tenant-config-admin "))
        .collect();
    let at = |step: &str| {
        runbook_commands
            .iter()
            .position(|c| c.split_whitespace().any(|w| w == step))
            .unwrap_or_else(|| panic!("docs/deploy.md runs no `tenant-config-admin ... {step}`"))
    };
    assert!(
        at("refresh-key") < at("stage-settings"),
        "the key comes first"
    );
    assert!(
        at("stage-settings") < at("verify"),
        "stage settings, then verify"
    );
    let deploy = runbook
        .find("sam deploy")
        .expect("docs/deploy.md runs sam deploy");
    let first_key = runbook.find(" refresh-key ").unwrap();
    assert!(first_key < deploy, "the key exists before the first deploy");
    // AND neither tells anyone to make the key with openssl, which config-refresh refuses
    for (name, text) in [
        ("template.yaml", &description),
        ("docs/deploy.md", &runbook),
    ] {
        assert!(
            !text.lines().any(|l| l.contains("openssl rand")
                && !["never", "not ", "refuse"]
                    .iter()
                    .any(|w| l.to_lowercase().contains(w))),
            "{name} creates the key with openssl"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-`
/// and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#').replace('`', "").as_str());
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    anchors
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("bench/RESULTS.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_code = false;
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            for (at, _) in line.match_indices("](") {
                let rest = &line[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let link = &rest[..end];
                if link.contains("://") || link.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
                let target = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                let place = format!("{}:{}: {link}", file.display(), number + 1);
                assert!(target.exists(), "{place}: no such file");
                if !anchor.is_empty() {
                    let target_text = std::fs::read_to_string(&target).unwrap();
                    assert!(
                        anchors(&target_text).contains(anchor),
                        "{place}: no heading with that anchor"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked > 20,
        "the docs link to each other ({checked} links)"
    );
}

#[test]
fn the_readme_is_a_front_door_and_each_figure_lives_in_one_place() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines (at most 250)");
    // The two commands come first
    let first_commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("bash "))
        .take(2)
        .filter_map(|l| l.split('#').next().map(str::trim))
        .collect();
    assert_eq!(first_commands, ["bash tests/demo.sh", "bash tests/run.sh"]);
    let first_heading = readme
        .lines()
        .skip(1)
        .position(|l| l.starts_with("## "))
        .unwrap();
    let first_command = readme
        .lines()
        .position(|l| l.starts_with("bash tests/demo.sh"))
        .unwrap();
    assert!(
        first_command < first_heading,
        "the two commands open the README"
    );
    assert!(readme.contains("docs/deploy.md"));
    // The test command's duration is stated once, in the development docs
    let statements: Vec<PathBuf> = markdown_files()
        .into_iter()
        .filter(|f| !f.ends_with("bench/RESULTS.md"))
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| l.starts_with("Measured:"))
        })
        .collect();
    assert_eq!(statements, [root().join("docs/development.md")]);
}

#[test]
fn the_sample_events_table_lists_exactly_the_files_in_events() {
    let development = read("docs/development.md");
    let section = development
        .split("\n## Sample events\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/development.md has a Sample events section");
    let listed: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("| `events/"))
        .filter_map(|l| l.split('`').nth(1))
        .map(str::to_owned)
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(root().join("events"))
        .unwrap()
        .flatten()
        .map(|e| format!("events/{}", e.file_name().to_string_lossy()))
        .collect();
    assert_eq!(listed, files);
}

#[test]
fn the_openfeature_routes_and_base_urls_documented_are_those_served() {
    let api = read("docs/api.md");
    let section = api
        .split("\n## OpenFeature (OFREP)\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/api.md has an OpenFeature (OFREP) section");
    let base = "/v1/services/{service}";
    let documented: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("| `GET /ofrep") || l.starts_with("| `POST /ofrep"))
        .filter_map(|l| l.split('`').nth(1))
        .map(|route| route.replacen(' ', &format!(" {base}"), 1))
        .collect();
    let served: BTreeSet<String> = tenant_config_shared::ofrep::ROUTES
        .iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert_eq!(documented, served);
    assert!(section.contains(base), "the base URL is documented");
    // The README's example and the demo's settings name the same base URLs.
    let (readme, guide) = (read("README.md"), read("local-stack/src/guide.rs"));
    for name in ["AGENT_1_OFREP", "OFREP_URL"] {
        assert!(readme.contains(name) && section.contains(name), "{name}");
        assert!(
            guide.contains(&format!("\"{name}\"")),
            "the demo writes {name}"
        );
    }
    assert!(readme.contains("http://127.0.0.1:50051/v1/services/billing"));
}
