//! `sam local` against the local stack: the inputs SAM needs, written from
//! the running stack, and the commands that use them.
//!
//! `tests/sam-local.sh setup` installs docker, builds a stand-in for the
//! Lambda base image and runs `sam build`. A stack started with
//! [`crate::stack::StackOptions::containers`] then reaches containers through
//! the docker bridge ([`crate::bridge`]) and writes:
//! - `target/sam-env.json`, the `--env-vars` file, with every function's
//!   settings as a container needs them;
//! - `.aws-sam/build/template.local.yaml`, the built template with each
//!   function declaring those settings (sam local passes only what a template
//!   declares: `local-stack/sam_local_inputs.py` says more);
//! - `target/sam-events/`, the sample events of `events/` with real ID
//!   tokens in place of `${ID_TOKEN}` (alice) and `${ADMIN_ID_TOKEN}` (dana,
//!   her tenant's administrator).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{tool, workspace_root};

/// Where `tests/sam-local.sh` keeps what it made (the image's tag, logs).
pub const STATE_DIR: &str = "target/sam-local";
/// The `--env-vars` file.
pub const ENV_FILE: &str = "target/sam-env.json";
/// The built template as sam local runs it here.
pub const LOCAL_TEMPLATE: &str = ".aws-sam/build/template.local.yaml";
/// `events/` with real tokens.
pub const EVENTS_DIR: &str = "target/sam-events";
/// The placeholders the sample events carry where a user's token goes, and
/// where a tenant administrator's does (the write routes).
const TOKEN_PLACEHOLDER: &str = "${ID_TOKEN}";
const ADMIN_TOKEN_PLACEHOLDER: &str = "${ADMIN_ID_TOKEN}";

/// Whether `tests/setup.sh deploy` installed the SAM CLI into `.venv/`
/// (writing the inputs needs its Python package too).
pub fn sam_cli_installed() -> bool {
    workspace_root().join(".venv/bin/sam").exists()
}

/// What `sam local` runs against this stack with.
#[derive(Debug, Clone)]
pub struct SamLocal {
    /// `--env-vars`.
    pub env_file: PathBuf,
    /// `-t`, once `sam build` has run.
    pub template: Option<PathBuf>,
    /// The sample events, token filled in.
    pub events: PathBuf,
    /// `--invoke-image`: the stand-in `tests/sam-local.sh` built, if it did.
    pub image: Option<String>,
}

impl SamLocal {
    /// Writes the inputs for a container's `settings`; `token` and
    /// `admin_token` go into the sample events that carry their placeholders.
    pub fn write(
        settings: &[(String, String)],
        token: &str,
        admin_token: &str,
    ) -> Result<Self, String> {
        let root = workspace_root();
        let state = root.join(STATE_DIR);
        std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        let settings_file = state.join("settings.json");
        let object: serde_json::Map<String, serde_json::Value> = settings
            .iter()
            .map(|(name, value)| (name.clone(), serde_json::Value::from(value.as_str())))
            .collect();
        write_json(&settings_file, &serde_json::Value::Object(object))?;
        let out = Command::new(tool("python"))
            .arg(root.join("local-stack/sam_local_inputs.py"))
            .arg(&settings_file)
            .current_dir(&root)
            .output()
            .map_err(|e| format!("local-stack/sam_local_inputs.py: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "local-stack/sam_local_inputs.py: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let events = root.join(EVENTS_DIR);
        write_events(&root.join("events"), &events, token, admin_token)?;
        let template = root.join(LOCAL_TEMPLATE);
        Ok(Self {
            env_file: root.join(ENV_FILE),
            template: template.exists().then_some(template),
            events,
            image: std::fs::read_to_string(state.join("image"))
                .ok()
                .map(|tag| tag.trim().to_owned())
                .filter(|tag| !tag.is_empty()),
        })
    }

    /// `sam local invoke FUNCTION -e EVENT` against this stack, as a
    /// command line a person can copy (paths relative to the repository).
    pub fn invoke_args(&self, function: &str, event: &Path) -> Vec<String> {
        let mut args = vec!["local".to_owned(), "invoke".to_owned(), function.to_owned()];
        args.extend(self.common_args());
        args.extend(["--event".to_owned(), relative(event)]);
        args
    }

    /// `sam local start-api` on `port` against this stack.
    pub fn start_api_args(&self, port: u16) -> Vec<String> {
        let mut args = vec!["local".to_owned(), "start-api".to_owned()];
        args.extend(self.common_args());
        args.extend([
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            // One container kept per function, started at its first request:
            // under emulation a container's start is seconds.
            "--warm-containers".to_owned(),
            "LAZY".to_owned(),
        ]);
        args
    }

    fn common_args(&self) -> Vec<String> {
        let mut args = vec![
            "--template-file".to_owned(),
            self.template
                .as_deref()
                .map_or_else(|| LOCAL_TEMPLATE.to_owned(), relative),
            "--env-vars".to_owned(),
            relative(&self.env_file),
        ];
        if let Some(image) = &self.image {
            args.extend([
                "--invoke-image".to_owned(),
                image.clone(),
                "--skip-pull-image".to_owned(),
            ]);
        }
        args
    }
}

/// Every `events/*.json`, with the tokens where their placeholders were.
fn write_events(from: &Path, to: &Path, token: &str, admin_token: &str) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let filled = text
            .replace(TOKEN_PLACEHOLDER, token)
            .replace(ADMIN_TOKEN_PLACEHOLDER, admin_token);
        std::fs::write(to.join(entry.file_name()), filled)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `path` relative to the repository, for a command line to copy.
fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}
