//! Child processes owned by the harness: started in their own process group so
//! that dropping the handle stops them and everything they spawned
//! (a `moto_fork_server.py start` and the moto server it joins to its group).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Root of the workspace (this crate lives in `local-stack/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("local-stack/ has a parent")
        .to_path_buf()
}

/// Where the project's own tools (moto_server, cargo-lambda) are installed:
/// `$TENANT_CONFIG_TOOLS`, else the repository's `.venv/bin`, else `PATH`.
pub fn tool(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("TENANT_CONFIG_TOOLS") {
        return Path::new(&dir).join(name);
    }
    let venv = workspace_root().join(".venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

/// A binary of the workspace built with `profile` ("debug" or "release").
pub fn binary_of(name: &str, profile: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join(profile).join(name)
}

/// A PATH with the project's tool directory first, so `cargo lambda` finds
/// the `cargo-lambda` installed in the venv.
pub fn path_with_tools() -> std::ffi::OsString {
    let tools = tool("cargo-lambda")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut paths = vec![tools];
    if let Some(existing) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// Removes the variables cargo sets for the running crate (`cargo test` /
/// `cargo run`) from a command that itself runs cargo. Build scripts such as
/// aws-lc-sys rerun when e.g. `CARGO_MANIFEST_DIR` changes, which would
/// rebuild the whole dependency tree for every function start.
pub fn clear_inherited_cargo_env(command: &mut Command) {
    const PREFIXES: &[&str] = &[
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if PREFIXES.iter().any(|p| name_str.starts_with(p)) {
            command.env_remove(&name);
        }
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Two different free loopback ports: both are held while the second is
/// picked, so the kernel cannot hand out the same one twice (two calls of
/// [`free_port`] can, and an agent then refuses equal listen addresses).
pub fn two_free_ports() -> std::io::Result<(u16, u16)> {
    let first = TcpListener::bind("127.0.0.1:0")?;
    let second = TcpListener::bind("127.0.0.1:0")?;
    Ok((first.local_addr()?.port(), second.local_addr()?.port()))
}

/// A running process group; stopped (TERM, then KILL) on drop.
pub struct ProcessGroup {
    name: String,
    child: Child,
    pub log: PathBuf,
    /// Set once the group was stopped, so its (reusable) id is not signalled again.
    reaped: bool,
}

impl ProcessGroup {
    /// Spawns `command` in a new process group with output sent to a log file
    /// under `target/local-stack-logs/`.
    pub fn spawn(name: &str, mut command: Command) -> std::io::Result<Self> {
        let dir = workspace_root().join("target/local-stack-logs");
        std::fs::create_dir_all(&dir)?;
        // One file per process started (a test process may start several
        // stacks at once); the harness's pid last, which is how a test finds
        // the logs of the processes it started.
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("{name}-{seq}-{}.log", std::process::id()));
        let out = std::fs::File::create(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        // If the harness dies without running Drop (SIGKILL, panic=abort), the
        // group leader is told to stop instead of living on as an orphan.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot start {name} ({command:?}): {e}"))
        })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the tail of the log if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); log:\n{}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// Polls `ready` every `interval` until it answers true; fails with the
    /// log's tail if the process exits first or `timeout` passes (`what` names
    /// the awaited state in the error).
    pub async fn wait_until<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        interval: Duration,
        mut ready: F,
    ) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if ready().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not {what} within {timeout:?}:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the whole group: a process that
    /// holds its connections and answers nothing, like a paused VM.
    pub fn set_paused(&self, paused: bool) {
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on the group this handle started and still owns.
        unsafe { libc::kill(-(self.child.id() as i32), signal) };
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends SIGTERM to the leader only and waits for it to exit by itself.
    pub fn terminate_and_wait(
        &mut self,
        limit: Duration,
    ) -> Result<std::process::ExitStatus, String> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = true;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not exit within {limit:?} of SIGTERM",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to the whole group: no chance to clean up.
    pub fn kill(&mut self) {
        // SAFETY: kill(2) with a negative pid signals our own child's group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// Stops the group: SIGTERM, up to 5 s grace, then SIGKILL.
    pub fn stop(&mut self) {
        if self.reaped {
            return;
        }
        self.reaped = true;
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) with a negative pid signals our own child's group.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Grandchildren may outlive the leader; make sure the group is gone.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.stop();
    }
}
