//! The chaos runs' own test bed: `scripts/testbed` on ports and a state directory of its
//! own, so killing its broker or stopping its PostgreSQL touches no other test.

use std::process::{Command, Stdio};

use crate::Services;

/// Where the chaos bed lives, as `scripts/testbed` reads it from its environment (the
/// replicated Redis beds moved too, for when the schedule grows failovers).
const ENV: [(&str, &str); 7] = [
    ("FIRSTCOME_TESTBED_DIR", "/tmp/firstcome-chaos"),
    ("FIRSTCOME_REDIS_PORT", "16479"),
    ("FIRSTCOME_PG_PORT", "15532"),
    ("FIRSTCOME_KAFKA_PORT", "19192"),
    ("FIRSTCOME_SENTINEL_REDIS_PORT", "16490"),
    ("FIRSTCOME_SENTINEL_PORT", "26490"),
    ("FIRSTCOME_CLUSTER_PORT", "17100"),
];

/// The chaos bed, brought down when dropped if this process brought it up.
pub struct ChaosBed {
    pub services: Services,
    started_here: bool,
    /// Held through each outage of the broker, and of PostgreSQL: a service is started
    /// again (which may take far longer than the outage's length) before the next
    /// outage takes it down.
    broker: tokio::sync::Mutex<()>,
    postgres: tokio::sync::Mutex<()>,
}

fn testbed(args: &[&str]) -> Command {
    let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/testbed"));
    command.args(args).envs(ENV).stdin(Stdio::null());
    command
}

/// The value of `name` in `export NAME=value` lines.
fn exported(lines: &str, name: &str) -> String {
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
        }
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
    /// `start …`), off the async threads.
    async fn service(&self, action: &'static str, service: &'static str) {
        let status = tokio::task::spawn_blocking(move || {
            testbed(&[action, service]).stdout(Stdio::null()).status()
        })
        .await
        .expect("the testbed command's thread")
        .expect("running scripts/testbed");
        assert!(
            status.success(),
            "scripts/testbed {action} {service} (the chaos bed)"
        );
    }
}

impl Drop for ChaosBed {
    fn drop(&mut self) {
        if self.started_here {
            let down = testbed(&["down"]).stdout(Stdio::null()).status();
            if !down.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("scripts/testbed down (the chaos bed) failed: {down:?}");
            }
        }
    }
}
