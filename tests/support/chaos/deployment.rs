//! The deployment a chaos run faults: API issuers and consumers as processes on ports of
//! their own, each restartable there, all serving the run's campaigns from one file;
//! each reaches a service whose link the schedule faults through a link of its own
//! ([`Links`]).

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::links::Links;
use super::schedule::{API_ISSUERS, CONSUMERS, CampaignPlan};
use crate::Services;
use crate::issuer::listen_args;
use crate::process::{Ports, Process};
use crate::tokens;

/// How long a process may take to come back (its backends may still be down).
const START_BUDGET: Duration = Duration::from_secs(120);

/// The processes' log filter: `FIRSTCOME_CHAOS_LOG` (e.g. `warn,firstcome_issuer=info` to
/// look into a seed), by default errors only: a run's faults make every process warn,
/// thousands of lines a seed.
fn log_filter() -> String {
    std::env::var("FIRSTCOME_CHAOS_LOG").unwrap_or_else(|_| "error".to_string())
}

/// One issuer process of the deployment, on its ports; `None` while a fault has it down.
pub struct Slot {
    args: Vec<String>,
    ports: Ports,
    process: Mutex<Option<Process>>,
}

impl Slot {
    /// A process of `role` reaching Redis, Kafka and PostgreSQL at `backends`.
    fn new(role: &str, backends: [String; 3], common: &[String]) -> Self {
        let ports = Ports::free();
        let mut args = listen_args(ports).to_vec();
        args.extend(["--role".to_string(), role.to_string()]);
        let [redis, kafka, database] = backends;
        args.extend(["--redis-url".to_string(), redis]);
        args.extend(["--kafka-brokers".to_string(), kafka]);
        args.extend(["--database-url".to_string(), database]);
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
            match Process::try_start(
                "firstcome-issuer",
                &self.args,
                &[("RUST_LOG", log_filter())],
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
    /// The links the run's faults slow or partition.
    pub links: Links,
}

impl Deployment {
    /// Starts [`API_ISSUERS`] API issuers (ready: their campaigns provisioned) and
    /// [`CONSUMERS`] consumers serving `campaigns` (as named by `names`), each reaching
    /// the services through its `links` where it has one.
    pub async fn start(
        services: &Services,
        dir: &Path,
        campaigns: &[(String, CampaignPlan)],
        links: Links,
    ) -> Self {
        let file = dir.join("campaigns.json");
        std::fs::write(&file, campaigns_file(dir, campaigns).to_string())
            .expect("writing the campaigns file");
        let secret = dir.join("room-secret");
        std::fs::write(&secret, "chaos-waiting-room-secret-".repeat(2))
            .expect("writing the waiting rooms' secret");
        let common: Vec<String> = [
            "--campaigns-file",
            file.to_str().expect("a UTF-8 temporary path"),
            "--waiting-room-secret-file",
            secret.to_str().expect("a UTF-8 temporary path"),
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
        let api = |i: usize| {
            let redis = links.redis_url(services, i);
            let kafka = links.kafka_brokers(services, i);
            [redis, kafka, services.database_url.clone()]
        };
        let consumer = |i: usize| {
            let database = links.database_url(services, i);
            [
                services.redis_url.clone(),
                services.kafka_brokers.clone(),
                database,
            ]
        };
        let deployment = Self {
            apis: (0..API_ISSUERS)
                .map(|i| Slot::new("api", api(i), &common))
                .collect(),
            consumers: (0..CONSUMERS)
                .map(|i| Slot::new("consumer", consumer(i), &common))
                .collect(),
            links,
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
        self.links.close().await;
    }
}

/// The topic of a campaign of a chaos run.
pub fn topic(name: &str) -> String {
    format!("chaos.{name}.winners")
}

/// Deletes the run's topics (each campaign's and its dead-letter topic) once it is
/// checked: the bed's broker loads every partition it holds when a fault restarts it, so
/// a soak's later seeds would wait on all the earlier ones'.
pub async fn delete_topics(services: &Services, names: &[String]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &services.kafka_brokers)
        .create()
        .expect("a Kafka admin client");
    let topics: Vec<String> = (names.iter())
        .flat_map(|name| [topic(name), format!("{}.dlq", topic(name))])
        .collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    match admin.delete_topics(&topics, &options).await {
        Ok(results) => {
            for failed in results.iter().filter_map(|r| r.as_ref().err()) {
                println!("deleting the chaos topic {} failed: {}", failed.0, failed.1);
            }
        }
        Err(error) => println!("deleting the chaos run's topics failed: {error}"),
    }
}

/// The campaigns file: rate limits out of the way (the runs test admission, not the
/// buckets), identity jwt with the test keys and a waiting room where the plan says so.
/// A room lets users in fast (the runs test admission, not the pace), and its passes
/// outlive a client's whole retrying, so a pass never expires in a run.
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
            if plan.room {
                entry["waitingRoom"] = json!({
                    "admissionRate": 500,
                    "passTtlSeconds": 600,
                    "ticketTimeoutSeconds": 60,
                });
            }
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
