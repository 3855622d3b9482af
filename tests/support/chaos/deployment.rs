//! The deployment a chaos run faults: API issuers and consumers as processes on ports of
//! their own, each restartable there, all serving the run's campaigns from one file; on
//! a single Redis (`redis://`), each API issuer reaches it through a link of its own (a
//! [`DelayProxy`]) a fault can slow.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::schedule::{API_ISSUERS, CONSUMERS, CampaignPlan};
use crate::Services;
use crate::delay_proxy::DelayProxy;
use crate::issuer::listen_args;
use crate::process::{Ports, Process};
use crate::tokens;

/// How long a process may take to come back (its backends may still be down).
const START_BUDGET: Duration = Duration::from_secs(120);

/// One issuer process of the deployment, on its ports; `None` while a fault has it down.
pub struct Slot {
    args: Vec<String>,
    ports: Ports,
    process: Mutex<Option<Process>>,
}

impl Slot {
    fn new(role: &str, redis_url: String, common: &[String]) -> Self {
        let ports = Ports::free();
        let mut args = listen_args(ports).to_vec();
        args.extend(["--role".to_string(), role.to_string()]);
        args.extend(["--redis-url".to_string(), redis_url]);
        args.extend_from_slice(common);
        Self {
            args,
            ports,
            process: Mutex::new(None),
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.api)
    }

    /// Starts the process, trying again while it exits during start-up (a backend it
    /// needs at start-up is down), until `ready_path` answers 200.
    async fn spawn(&self, ready_path: &str) -> Process {
        let deadline = Instant::now() + START_BUDGET;
        loop {
            // Errors only: a run's faults make every process warn, thousands of lines a seed.
            let quiet = [("RUST_LOG", "error".to_string())];
            match Process::try_start(
                "firstcome-issuer",
                &self.args,
                &quiet,
                self.ports,
                ready_path,
            )
            .await
            {
                Ok(process) => return process,
                Err(why) if Instant::now() < deadline => {
                    eprintln!("chaos: {why}; starting it again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(why) => panic!("{why}, for {START_BUDGET:?}"),
            }
        }
    }

    async fn start(&self, ready_path: &str) {
        let process = self.spawn(ready_path).await;
        *self.process.lock().await = Some(process);
    }

    /// `kill -9`, down for `lasts`, then started again.
    pub async fn kill_for(&self, lasts: Duration) {
        let mut held = self.process.lock().await;
        if let Some(mut process) = held.take() {
            process.kill();
        }
        tokio::time::sleep(lasts).await;
        *held = Some(self.spawn("/healthz").await);
    }

    /// SIGSTOP, frozen for `lasts`, then SIGCONT.
    pub async fn pause_for(&self, lasts: Duration) {
        let held = self.process.lock().await;
        let process = held.as_ref().expect("a deployed process");
        process.signal("STOP");
        tokio::time::sleep(lasts).await;
        process.signal("CONT");
    }

    /// SIGTERM, a graceful exit awaited, then started again and given (bounded) time to
    /// get ready, as a rolling update does.
    pub async fn restart_gracefully(&self) {
        let mut held = self.process.lock().await;
        if let Some(mut process) = held.take() {
            process.terminate();
            if process.exit_within(Duration::from_secs(30)).await.is_none() {
                eprintln!("chaos: an issuer outlived SIGTERM by 30 s; killed");
            }
        }
        *held = Some(self.spawn("/readyz").await);
    }

    /// Stops the process (SIGKILL; the run is over).
    async fn stop(&self) {
        if let Some(mut process) = self.process.lock().await.take() {
            process.kill();
        }
    }
}

/// The API issuers and consumers of a run.
pub struct Deployment {
    pub apis: Vec<Slot>,
    pub consumers: Vec<Slot>,
    /// The link of each API issuer (by index) to a single Redis (none on a replicated one).
    pub redis_links: Vec<DelayProxy>,
}

impl Deployment {
    /// Starts [`API_ISSUERS`] API issuers (ready: their campaigns provisioned) and
    /// [`CONSUMERS`] consumers serving `campaigns` (as named by `names`).
    pub async fn start(
        services: &Services,
        dir: &Path,
        campaigns: &[(String, CampaignPlan)],
    ) -> Self {
        let file = dir.join("campaigns.json");
        std::fs::write(&file, campaigns_file(dir, campaigns).to_string())
            .expect("writing the campaigns file");
        let common: Vec<String> = [
            "--campaigns-file",
            file.to_str().expect("a UTF-8 temporary path"),
            "--kafka-brokers",
            services.kafka_brokers.as_str(),
            "--database-url",
            services.database_url.as_str(),
            "--delivery-timeout-ms",
            "2000",
            "--audit-interval-ms",
            "5000",
            "--shutdown-delay-ms",
            "300",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut redis_links = Vec::new();
        if services.redis_url.starts_with("redis://") {
            for _ in 0..API_ISSUERS {
                redis_links.push(DelayProxy::in_front_of_redis(&services.redis_url).await);
            }
        }
        let api_redis = |i: usize| {
            (redis_links.get(i)).map_or(services.redis_url.clone(), DelayProxy::redis_url)
        };
        let deployment = Self {
            apis: (0..API_ISSUERS)
                .map(|i| Slot::new("api", api_redis(i), &common))
                .collect(),
            consumers: (0..CONSUMERS)
                .map(|_| Slot::new("consumer", services.redis_url.clone(), &common))
                .collect(),
            redis_links,
        };
        let apis = deployment.apis.iter().map(|slot| slot.start("/readyz"));
        let consumers = deployment
            .consumers
            .iter()
            .map(|slot| slot.start("/readyz"));
        futures::future::join_all(apis.chain(consumers)).await;
        deployment
    }

    pub fn bases(&self) -> Vec<String> {
        self.apis.iter().map(Slot::base).collect()
    }

    pub async fn stop(&self) {
        for slot in self.apis.iter().chain(&self.consumers) {
            slot.stop().await;
        }
    }
}

/// The topic of a campaign of a chaos run.
pub fn topic(name: &str) -> String {
    format!("chaos.{name}.winners")
}

/// The campaigns file: rate limits out of the way (the runs test admission, not the
/// buckets), identity jwt with the test keys where the plan says so.
fn campaigns_file(dir: &Path, campaigns: &[(String, CampaignPlan)]) -> Value {
    let unlimited = json!({ "perSecond": 1_000_000, "burst": 1_000_000 });
    let keys = dir.join("keys");
    let entries: Vec<Value> = campaigns
        .iter()
        .map(|(name, plan)| {
            let mut entry = json!({
                "name": name,
                "limit": plan.limit,
                "perUserLimit": plan.per_user_limit,
                "topic": topic(name),
                "rateLimits": { "perClient": unlimited, "perUser": unlimited },
            });
            if plan.jwt {
                std::fs::create_dir_all(&keys).expect("creating the keys directory");
                std::fs::write(keys.join(tokens::KID), tokens::fixture("test-only-rsa.pub.pem"))
                    .expect("writing the public key");
                entry["identity"] = json!({
                    "mode": "jwt",
                    "jwt": { "issuer": tokens::ISSUER, "audience": tokens::AUDIENCE, "keysDir": keys },
                });
            }
            entry
        })
        .collect();
    json!({ "campaigns": entries })
}
