//! The project's binaries as child processes, killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A binary of this workspace, next to the test executable's directory
/// (`target/<profile>/`). `scripts/test` builds every binary before the tests run.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` (scripts/test does)",
        path.display()
    );
    if let Some(source) = newer_source(&path, name) {
        panic!(
            "{} is older than {}: run `cargo build --workspace` (scripts/test does; \
             `cargo test` alone builds no binary of another package)",
            path.display(),
            source.display()
        );
    }
    path
}

/// What a workspace binary is built from, relative to the workspace root.
fn sources_of(name: &str) -> &'static [&'static str] {
    match name {
        "firstcome-issuer" => &[
            "issuer/src",
            "issuer/migrations",
            "issuer/openapi.yaml",
            "issuer/Cargo.toml",
            "contract/src",
        ],
        "firstcome-operator" | "crdgen" => &["operator/src", "operator/Cargo.toml", "contract/src"],
        _ => &[],
    }
}

/// A source of binary `name` modified after the binary at `path` was built, if any.
fn newer_source(path: &Path, name: &str) -> Option<PathBuf> {
    let built = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let mut pending: Vec<PathBuf> = sources_of(name).iter().map(|s| root.join(s)).collect();
    while let Some(entry) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&entry) else {
            continue;
        };
        if meta.is_dir() {
            let children = std::fs::read_dir(&entry).into_iter().flatten().flatten();
            pending.extend(children.map(|child| child.path()));
        } else if meta.modified().is_ok_and(|modified| modified > built) {
            return Some(entry);
        }
    }
    None
}

/// Ports handed to test processes: below the kernel's ephemeral range (32768 and up), so
/// the outgoing connections of a spike cannot take one between the check and the bind,
/// and clear of the test beds' fixed ports.
const TEST_PORTS: std::ops::Range<u16> = 20_000..25_000;

/// A port nobody listens on, from [`TEST_PORTS`]; each test binary starts at its own
/// offset, so concurrent binaries rarely try the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    let span = TEST_PORTS.end - TEST_PORTS.start;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let port = TEST_PORTS.start + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}")
}

/// The ports a process serves on, as its arguments say: its API, and its operational
/// endpoints (probes, metrics); the same port for a process that has one listener.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub api: u16,
    pub ops: u16,
}

impl Ports {
    /// Two free ports.
    pub fn free() -> Self {
        Self {
            api: free_port(),
            ops: free_port(),
        }
    }

    /// One port for everything.
    pub fn one(port: u16) -> Self {
        Self {
            api: port,
            ops: port,
        }
    }
}

/// A child process serving HTTP: its API on `base`, probes and metrics on `ops_base`.
pub struct Process {
    child: Child,
    pub base: String,
    pub ops_base: String,
    name: String,
}

impl Process {
    /// Starts `binary` with `args` and `env`, then waits until `GET {ops_base}{ready_path}`
    /// answers 200. `ports` are the ones the arguments make it listen on.
    pub async fn start(
        binary: &str,
        args: &[String],
        env: &[(&str, String)],
        ports: Ports,
        ready_path: &str,
    ) -> Self {
        Self::try_start(binary, args, env, ports, ready_path)
            .await
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// [`Process::start`], telling why the process did not get ready (it exited, or was
    /// not ready within 60 s: then it is killed) instead of failing the test.
    pub async fn try_start(
        binary: &str,
        args: &[String],
        env: &[(&str, String)],
        ports: Ports,
        ready_path: &str,
    ) -> Result<Self, String> {
        let mut command = Command::new(workspace_binary(binary));
        command
            .args(args)
            .env(
                "RUST_LOG",
                "warn,firstcome_issuer=info,firstcome_operator=info",
            )
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let mut process = Self {
            child,
            base: format!("http://127.0.0.1:{}", ports.api),
            ops_base: format!("http://127.0.0.1:{}", ports.ops),
            name: binary.to_string(),
        };
        process.wait_http(ready_path).await?;
        Ok(process)
    }

    async fn wait_http(&mut self, path: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("{} exited during start-up ({status})", self.name));
            }
            if let Ok(response) = reqwest::get(format!("{}{path}", self.ops_base)).await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{} not ready within 60 s", self.name));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` (a name `kill` knows: `STOP`, `CONT`, …).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "SIG{signal} to {}", self.name);
    }

    /// Sends SIGTERM (the process keeps running until it has shut down).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Waits (bounded) for the process to exit; returns whether it exited successfully.
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        self.exit_within(timeout)
            .await
            .unwrap_or_else(|| panic!("{} still running after {timeout:?}", self.name))
    }

    /// Waits (bounded) for the process to exit: whether it exited successfully, `None`
    /// while it still runs after `timeout`.
    pub async fn exit_within(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.success());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for a graceful exit with status 0.
    pub async fn stop(&mut self) {
        self.terminate();
        assert!(
            self.wait_exit(Duration::from_secs(30)).await,
            "{} exits 0 on SIGTERM",
            self.name
        );
    }

    /// GET `path`, answered with JSON.
    /// The summary of `campaign` (`GET /v1/campaigns/{campaign}`), which must answer.
    pub async fn summary(&self, campaign: &str) -> serde_json::Value {
        let (status, summary) = self.get(&format!("/v1/campaigns/{campaign}")).await;
        assert!(
            status.is_success(),
            "summary of {campaign}: {status} {summary}"
        );
        summary
    }

    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.ops_base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of one sample (`name{labels}`) in Prometheus text, summed over every line
/// that carries it (texts of several processes may be joined); 0 when absent.
pub fn sample(metrics: &str, sample: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(sample)?.trim().parse::<u64>().ok())
        .sum()
}
