//! The chaos runs' own test bed: `scripts/testbed` on ports and a state directory of its
//! own, so killing its broker or stopping its PostgreSQL touches no other test; and
//! Toxiproxy, started for the first run that faults a link.

use std::process::{Command, Stdio};

use super::schedule::API_ISSUERS;
use crate::Services;
use crate::toxiproxy::Toxiproxy;

/// The Sentinel bed's primary (as started; the replica on +1).
pub const SENTINEL_REDIS_PORT: u16 = 16490;
/// The Sentinel bed's three Sentinels: +0, +1, +2.
pub const SENTINEL_PORT: u16 = 26490;
/// The Cluster bed's six nodes: +0 … +5.
pub const CLUSTER_PORT: u16 = 17100;
/// The broker's listeners for each API issuer (by index): the port it binds, and the
/// port it advertises, where that issuer's proxy listens (a client that bootstraps
/// through a proxy in front of the main listener would be told to go round it).
pub const KAFKA_PROXIED: [(u16, u16); API_ISSUERS] = [(19194, 19196), (19195, 19197)];

/// The chaos bed's state directory (its data, logs and pid files).
const STATE: &str = "/tmp/firstcome-chaos";

/// Where the chaos bed lives, as `scripts/testbed` reads it from its environment, with
/// its replicated Redis beds on ports of their own too.
fn env() -> [(&'static str, String); 8] {
    let proxied: Vec<String> = (KAFKA_PROXIED.iter())
        .map(|(bound, advertised)| format!("{bound}:{advertised}"))
        .collect();
    [
        ("FIRSTCOME_TESTBED_DIR", STATE.into()),
        ("FIRSTCOME_REDIS_PORT", "16479".into()),
        ("FIRSTCOME_PG_PORT", "15532".into()),
        ("FIRSTCOME_KAFKA_PORT", "19192".into()),
        (
            "FIRSTCOME_SENTINEL_REDIS_PORT",
            SENTINEL_REDIS_PORT.to_string(),
        ),
        ("FIRSTCOME_SENTINEL_PORT", SENTINEL_PORT.to_string()),
        ("FIRSTCOME_CLUSTER_PORT", CLUSTER_PORT.to_string()),
        ("FIRSTCOME_KAFKA_PROXIED_LISTENERS", proxied.join(",")),
    ]
}

/// The chaos bed, brought down when dropped if this process brought it up, its state
/// deleted too unless the run failed (then it stays for a look).
pub struct ChaosBed {
    pub services: Services,
    started_here: bool,
    /// Held through each outage of the broker, and of PostgreSQL: a service is started
    /// again (which may take far longer than the outage's length) before the next
    /// outage takes it down.
    broker: tokio::sync::Mutex<()>,
    postgres: tokio::sync::Mutex<()>,
    /// Held through each failover of the replicated Redis beds, healing included.
    pub redis: tokio::sync::Mutex<()>,
    /// Started by the first run that needs it; stopped with the bed if started here.
    toxiproxy: tokio::sync::OnceCell<Toxiproxy>,
}

fn testbed(args: &[&str]) -> Command {
    let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/testbed"));
    command.args(args).envs(env()).stdin(Stdio::null());
    command
}

/// The value of `name` in `export NAME=value` lines.
pub(super) fn exported(lines: &str, name: &str) -> String {
    let prefix = format!("export {name}=");
    (lines.lines())
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("scripts/testbed printed no {name}: {lines}"))
        .to_string()
}

impl ChaosBed {
    /// Starts the bed unless it runs (installing what is missing, as `scripts/testbed up`
    /// does).
    pub fn up() -> Self {
        let status = testbed(&["status"])
            .output()
            .expect("running scripts/testbed");
        let running = String::from_utf8_lossy(&status.stdout);
        let started_here = running.lines().take(3).any(|l| l.ends_with("stopped"));
        let up = testbed(&["up"])
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/testbed up");
        assert!(up.status.success(), "scripts/testbed up (the chaos bed)");
        let lines = String::from_utf8_lossy(&up.stdout);
        Self {
            services: Services {
                redis_url: exported(&lines, "FIRSTCOME_TEST_REDIS_URL"),
                database_url: exported(&lines, "FIRSTCOME_TEST_DATABASE_URL"),
                kafka_brokers: exported(&lines, "FIRSTCOME_TEST_KAFKA_BROKERS"),
            },
            started_here,
            broker: tokio::sync::Mutex::new(()),
            postgres: tokio::sync::Mutex::new(()),
            redis: tokio::sync::Mutex::new(()),
            toxiproxy: tokio::sync::OnceCell::new(),
        }
    }

    /// Toxiproxy, started unless it runs.
    pub async fn toxiproxy(&self) -> &Toxiproxy {
        (self.toxiproxy)
            .get_or_init(|| async {
                (tokio::task::spawn_blocking(Toxiproxy::up).await).expect("starting Toxiproxy")
            })
            .await
    }

    /// An outage of `service` (`kafka` or `postgres`): `action` (`kill`, `stop`), down for
    /// `lasts`, then started again; outages of one service never overlap.
    pub async fn outage(
        &self,
        action: &'static str,
        service: &'static str,
        lasts: std::time::Duration,
    ) {
        let lock = match service {
            "kafka" => &self.broker,
            "postgres" => &self.postgres,
            other => panic!("the chaos bed has no outage of {other}"),
        };
        let _one_at_a_time = lock.lock().await;
        self.service(action, service).await;
        tokio::time::sleep(lasts).await;
        self.service("start", service).await;
    }

    /// `scripts/testbed ACTION SERVICE` on the chaos bed (`kill kafka`, `stop postgres`,
    /// `start …`).
    async fn service(&self, action: &'static str, service: &'static str) {
        self.testbed(&[action, service]).await;
    }

    /// `scripts/testbed ARGS` on the chaos bed, off the async threads; its stdout.
    pub async fn testbed(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let output = tokio::task::spawn_blocking(move || {
            testbed(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .stderr(Stdio::inherit())
                .output()
                .map(|output| (args, output))
        })
        .await
        .expect("the testbed command's thread")
        .expect("running scripts/testbed");
        let (args, output) = output;
        assert!(
            output.status.success(),
            "scripts/testbed {args:?} (the chaos bed)"
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for ChaosBed {
    fn drop(&mut self) {
        // A replicated Redis bed a failed seed left up (each seed stops its own).
        for down in ["down-sentinel", "down-cluster"] {
            let _ = testbed(&[down]).stdout(Stdio::null()).status();
        }
        if self.started_here {
            let action = if std::thread::panicking() {
                eprintln!("the chaos bed's state stays in {STATE} for a look");
                "down"
            } else {
                "clean"
            };
            let done = testbed(&[action]).stdout(Stdio::null()).status();
            if !done.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("scripts/testbed {action} (the chaos bed) failed: {done:?}");
            }
        }
    }
}
