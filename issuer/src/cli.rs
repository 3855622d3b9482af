//! Command line and environment configuration of `firstcome-issuer`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use firstcome_contract::{
    Bucket, CampaignConfig, DEFAULT_LEEWAY_SECONDS, DEFAULT_USER_CLAIM, HeaderConfig,
    IdentityConfig, JwtConfig, RateLimits, RedisTarget,
};

use crate::client_addr::{ProxyNet, TrustedProxies};

/// `--delivery-timeout-ms` unless set.
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 5000;
/// `--topic-partitions` unless set.
pub const DEFAULT_TOPIC_PARTITIONS: i32 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "firstcome-issuer",
    version,
    about = "First-come-first-served coupon issuer",
    long_about = "First-come-first-served coupon issuer.\n\n\
        With no Redis, Kafka or PostgreSQL configured it runs standalone: admission in \
        process, winners written to an embedded SQLite file before they are answered.\n\
        With them, admission runs in Redis, winners go to Kafka and a consumer persists \
        them into PostgreSQL.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API and/or consume winners (the default command).
    Serve(ServeArgs),
    /// Retry the failed events stored in PostgreSQL once, print what happened, and exit.
    /// Consumers also do this every minute.
    RetryFailed(RetryFailedArgs),
    /// Audit drift once: compare the winners in Redis with the coupons in PostgreSQL,
    /// re-publish every missing winner, print the drift of each campaign, and exit. API
    /// issuers also do this every --audit-interval-ms. (`reconcile` is its former name.)
    #[command(alias = "reconcile")]
    Audit(ServeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RetryFailedArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "FIRSTCOME_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// Which parts of the issuer this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The apply API (admission + publishing winners).
    Api,
    /// The consumer that persists winners into PostgreSQL.
    Consumer,
    /// Both.
    All,
}

impl Role {
    pub fn serves_api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }

    pub fn consumes(self) -> bool {
        matches!(self, Role::Consumer | Role::All)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address the public API listens on.
    #[arg(long, env = "FIRSTCOME_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address the operational endpoints (/healthz, /readyz, /metrics) listen on, apart
    /// from the public API.
    #[arg(long, env = "FIRSTCOME_OPS_LISTEN", default_value = "127.0.0.1:9090")]
    pub ops_listen: SocketAddr,

    /// Parts of the issuer this process runs (distributed mode).
    #[arg(long, env = "FIRSTCOME_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// Where Redis is (distributed mode): redis://host:port for one primary,
    /// redis+sentinel://host:port,host:port/<master> for the primary Sentinel names,
    /// redis+cluster://host:port,host:port for a Redis Cluster. See docs/configuration.md.
    #[arg(long, env = "FIRSTCOME_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<RedisTarget>,

    /// Kafka bootstrap servers, comma separated (distributed mode).
    #[arg(long, env = "FIRSTCOME_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// PostgreSQL URL, e.g. postgres://user:pass@host/db (distributed mode, every role).
    #[arg(long, env = "FIRSTCOME_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory of the standalone issuer's SQLite ledger.
    #[arg(long, env = "FIRSTCOME_DATA_DIR", default_value = "firstcome-data")]
    pub data_dir: PathBuf,

    /// JSON file listing the campaigns to serve: {"campaigns": [{"name": ..., "limit": ...,
    /// "perUserLimit": ..., "opensAt": ..., "closesAt": ..., "topic": ..., "identity": ...,
    /// "rateLimits": ..., "waitingRoom": ...}]} (docs/configuration.md).
    #[arg(long, env = "FIRSTCOME_CAMPAIGNS_FILE")]
    pub campaigns_file: Option<PathBuf>,

    /// A campaign as NAME:LIMIT (one coupon per user, always open, default topic).
    /// Repeatable. Without any campaign the standalone issuer serves `demo:100`.
    #[arg(
        long = "campaign",
        env = "FIRSTCOME_CAMPAIGN",
        value_delimiter = ',',
        value_parser = parse_campaign_shorthand
    )]
    pub campaigns: Vec<CampaignConfig>,

    /// Token bucket per client address of the --campaign campaigns, as PER_SECOND:BURST;
    /// off unless given. Every user behind one address (a carrier NAT, an office, a proxy
    /// not in --trusted-proxies) shares it. (A campaigns file sets each campaign's own
    /// `rateLimits`.)
    #[arg(
        long,
        env = "FIRSTCOME_RATE_LIMIT_PER_CLIENT",
        value_parser = parse_bucket
    )]
    pub rate_limit_per_client: Option<Bucket>,

    /// Token bucket per user of the --campaign campaigns, as PER_SECOND:BURST.
    #[arg(
        long,
        env = "FIRSTCOME_RATE_LIMIT_PER_USER",
        value_parser = parse_bucket,
        default_value = "5:10"
    )]
    pub rate_limit_per_user: Bucket,

    /// Proxies whose X-Forwarded-For names the client, as CIDRs or addresses, comma
    /// separated (e.g. the ingress pods' network). X-Forwarded-For from any other peer is
    /// ignored.
    #[arg(long, env = "FIRSTCOME_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ProxyNet>,

    /// Longest wait for the broker to acknowledge a winner event before the apply is
    /// answered 503 (the admission stays and is re-published).
    #[arg(long, env = "FIRSTCOME_DELIVERY_TIMEOUT_MS", default_value_t = DEFAULT_DELIVERY_TIMEOUT_MS)]
    pub delivery_timeout_ms: u64,

    /// How often an API issuer compares Redis's winners with PostgreSQL's coupons; a winner
    /// missing in two passes in a row is published again.
    /// (`--reconcile-interval-ms` is its former name.)
    #[arg(
        long,
        alias = "reconcile-interval-ms",
        env = "FIRSTCOME_AUDIT_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub audit_interval_ms: u64,

    /// How long the consumer retries persisting a batch before it parks the batch on the
    /// campaign's dead-letter topic and moves on.
    #[arg(
        long,
        env = "FIRSTCOME_PERSIST_RETRY_BUDGET_MS",
        default_value_t = 60_000
    )]
    pub persist_retry_budget_ms: u64,

    /// Timeout of one Redis command.
    #[arg(long, env = "FIRSTCOME_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    /// After each admission, wait until this many replicas have it (Redis `WAIT`) before
    /// the hand-off: an answered admission is then on a replica a failover may promote.
    /// 0 (the default) for a single Redis. Best effort: past the timeout the hand-off goes
    /// on, and fencing still guards against a promoted replica that lacks it.
    #[arg(long, env = "FIRSTCOME_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// Longest `WAIT` for the replicas, when `--redis-wait-replicas` is set.
    #[arg(long, env = "FIRSTCOME_REDIS_WAIT_TIMEOUT_MS", default_value_t = 100)]
    pub redis_wait_timeout_ms: u64,

    /// Partitions of a campaign topic the issuer creates.
    #[arg(long, env = "FIRSTCOME_TOPIC_PARTITIONS", default_value_t = DEFAULT_TOPIC_PARTITIONS)]
    pub topic_partitions: i32,

    /// Replication factor of a campaign topic the issuer creates.
    #[arg(long, env = "FIRSTCOME_TOPIC_REPLICATION_FACTOR", default_value_t = 1)]
    pub topic_replication_factor: i32,

    /// Most PostgreSQL connections of this process.
    #[arg(long, env = "FIRSTCOME_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// On SIGTERM, keep serving this long after readiness turns false, so load
    /// balancers stop sending traffic before the server stops accepting it.
    #[arg(long, env = "FIRSTCOME_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,

    /// Log format.
    #[arg(long, env = "FIRSTCOME_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export traces with OpenTelemetry (OTLP over HTTP, protobuf) to this collector's
    /// base URL, e.g. http://otel-collector:4318 (spans go to its /v1/traces). Off when
    /// unset. The OTEL_TRACES_SAMPLER* and OTEL_RESOURCE_ATTRIBUTES variables apply.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The file holding the secret (at least 32 bytes) that waiting-room tickets, the
    /// pre-queue order and passes derive from; every issuer of a campaign needs the same.
    /// Required when a campaign has a `waitingRoom`.
    #[arg(long, env = "FIRSTCOME_WAITING_ROOM_SECRET_FILE")]
    pub waiting_room_secret_file: Option<PathBuf>,

    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// How a `--campaign` campaign learns who applies (see docs/security.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdentityMode {
    /// The body's userId is believed: anyone can apply as anyone (a demo only).
    None,
    /// A bearer JWT verified with the keys of --jwt-keys-dir or --jwt-jwks-url.
    Jwt,
    /// A user header from an authenticating gateway, with its shared secret.
    Header,
}

/// The identity of the `--campaign` campaigns; a campaigns file's campaigns say their own.
#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// Who a `--campaign` campaign believes an apply comes from.
    #[arg(long = "identity", env = "FIRSTCOME_IDENTITY", value_enum, default_value_t = IdentityMode::None)]
    pub mode: IdentityMode,
    /// Directory of the JWT verification keys, one file each, named by kid (--identity jwt).
    #[arg(long, env = "FIRSTCOME_JWT_KEYS_DIR", conflicts_with = "jwt_jwks_url")]
    pub jwt_keys_dir: Option<PathBuf>,
    /// The identity provider's JSON Web Key Set, instead of --jwt-keys-dir (https, or
    /// http to a loopback host).
    #[arg(long, env = "FIRSTCOME_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// The iss every token must carry (--identity jwt).
    #[arg(long, env = "FIRSTCOME_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The aud every token must carry (--identity jwt).
    #[arg(long, env = "FIRSTCOME_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The claim holding the user id (--identity jwt).
    #[arg(long, env = "FIRSTCOME_JWT_USER_CLAIM", default_value = DEFAULT_USER_CLAIM)]
    pub jwt_user_claim: String,
    /// Clock skew allowed on exp and nbf (--identity jwt).
    #[arg(long, env = "FIRSTCOME_JWT_LEEWAY_SECONDS", default_value_t = DEFAULT_LEEWAY_SECONDS)]
    pub jwt_leeway_seconds: u64,
    /// The header the gateway names the user in (--identity header).
    #[arg(long, env = "FIRSTCOME_IDENTITY_USER_HEADER")]
    pub identity_user_header: Option<String>,
    /// The header the gateway sends its shared secret in (--identity header).
    #[arg(long, env = "FIRSTCOME_IDENTITY_SECRET_HEADER")]
    pub identity_secret_header: Option<String>,
    /// The file holding the gateway's shared secret (--identity header).
    #[arg(long, env = "FIRSTCOME_IDENTITY_SECRET_FILE")]
    pub identity_secret_file: Option<PathBuf>,
}

impl IdentityArgs {
    fn has_jwt_keys(&self) -> bool {
        self.jwt_keys_dir.is_some() || self.jwt_jwks_url.is_some()
    }

    /// The identity these flags describe; names the flags a mode lacks.
    pub fn config(&self) -> Result<IdentityConfig, String> {
        let missing = |mode: &str, flags: &[(&str, bool)]| {
            let absent: Vec<&str> = flags.iter().filter(|f| !f.1).map(|f| f.0).collect();
            format!("--identity {mode} also needs {}", absent.join(", "))
        };
        match self.mode {
            IdentityMode::None => Ok(IdentityConfig::None),
            IdentityMode::Jwt => match (&self.jwt_issuer, &self.jwt_audience) {
                (Some(issuer), Some(audience)) if self.has_jwt_keys() => Ok(IdentityConfig::Jwt {
                    jwt: JwtConfig {
                        issuer: issuer.clone(),
                        audience: audience.clone(),
                        user_claim: self.jwt_user_claim.clone(),
                        leeway_seconds: self.jwt_leeway_seconds,
                        keys_dir: self.jwt_keys_dir.clone(),
                        jwks_url: self.jwt_jwks_url.clone(),
                    },
                }),
                (issuer, audience) => Err(missing(
                    "jwt",
                    &[
                        ("--jwt-keys-dir or --jwt-jwks-url", self.has_jwt_keys()),
                        ("--jwt-issuer", issuer.is_some()),
                        ("--jwt-audience", audience.is_some()),
                    ],
                )),
            },
            IdentityMode::Header => match (
                &self.identity_user_header,
                &self.identity_secret_header,
                &self.identity_secret_file,
            ) {
                (Some(user), Some(secret), Some(file)) => Ok(IdentityConfig::Header {
                    header: HeaderConfig {
                        user_header: user.clone(),
                        secret_header: secret.clone(),
                        secret_file: file.clone(),
                    },
                }),
                (user, secret, file) => Err(missing(
                    "header",
                    &[
                        ("--identity-user-header", user.is_some()),
                        ("--identity-secret-header", secret.is_some()),
                        ("--identity-secret-file", file.is_some()),
                    ],
                )),
            },
        }
    }
}

/// How many replicas must have an admission before its hand-off, and how long to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaWait {
    pub replicas: u32,
    pub timeout: Duration,
}

/// Where admission and persistence happen.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode<'a> {
    Standalone,
    Distributed(Backends<'a>),
}

/// Where the distributed backends are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backends<'a> {
    /// Absent for a process that only consumes.
    pub redis_url: Option<&'a RedisTarget>,
    pub kafka_brokers: &'a str,
    pub database_url: &'a str,
}

impl ServeArgs {
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The replicas an admission waits for, if any.
    pub fn replica_wait(&self) -> Option<ReplicaWait> {
        (self.redis_wait_replicas > 0).then(|| ReplicaWait {
            replicas: self.redis_wait_replicas,
            timeout: Duration::from_millis(self.redis_wait_timeout_ms),
        })
    }

    pub fn persist_retry_budget(&self) -> Duration {
        Duration::from_millis(self.persist_retry_budget_ms)
    }

    pub fn audit_interval(&self) -> Duration {
        Duration::from_millis(self.audit_interval_ms)
    }

    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }

    /// The rate limits of the --campaign campaigns.
    pub fn shorthand_rate_limits(&self) -> RateLimits {
        RateLimits {
            per_client: self.rate_limit_per_client,
            per_user: self.rate_limit_per_user,
        }
    }

    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.iter().copied())
    }

    /// Standalone when no backend is configured; otherwise every backend the role needs
    /// must be.
    pub fn mode(&self) -> Result<Mode<'_>, String> {
        let (redis, kafka, database) = (
            self.redis_url.as_ref(),
            self.kafka_brokers.as_deref(),
            self.database_url.as_deref(),
        );
        if redis.is_none() && kafka.is_none() && database.is_none() {
            return if self.role == Role::All {
                Ok(Mode::Standalone)
            } else {
                Err("--role api/consumer needs the distributed backends (--redis-url, --kafka-brokers, --database-url)".into())
            };
        }
        let mut missing = Vec::new();
        if self.role.serves_api() && redis.is_none() {
            missing.push("--redis-url");
        }
        if kafka.is_none() {
            missing.push("--kafka-brokers");
        }
        // The API needs PostgreSQL too: it restores a campaign from there when Redis lost it.
        if database.is_none() {
            missing.push("--database-url");
        }
        match (kafka, database) {
            (Some(kafka_brokers), Some(database_url)) if missing.is_empty() => {
                Ok(Mode::Distributed(Backends {
                    redis_url: redis,
                    kafka_brokers,
                    database_url,
                }))
            }
            _ => Err(format!(
                "role {:?} in distributed mode also needs {}",
                self.role,
                missing.join(", ")
            )),
        }
    }
}

fn parse_campaign_shorthand(value: &str) -> Result<CampaignConfig, String> {
    let (name, limit) = value
        .split_once(':')
        .ok_or_else(|| format!("expected NAME:LIMIT, got {value:?}"))?;
    let limit = limit
        .parse()
        .map_err(|_| format!("limit of {name:?} is not a whole number: {limit:?}"))?;
    let campaign = CampaignConfig::new(name, limit);
    campaign.validate().map_err(|e| e.to_string())?;
    Ok(campaign)
}

fn parse_bucket(value: &str) -> Result<Bucket, String> {
    let parsed = value.split_once(':').and_then(|(rate, burst)| {
        Some(Bucket {
            per_second: rate.parse().ok()?,
            burst: burst.parse().ok()?,
        })
    });
    match parsed {
        Some(bucket) if bucket.is_valid() => Ok(bucket),
        _ => Err(format!(
            "expected PER_SECOND:BURST, each 1..={}, got {value:?}",
            firstcome_contract::MAX_BUCKET_RATE
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> ServeArgs {
        let mut argv = vec!["firstcome-issuer"];
        argv.extend_from_slice(list);
        Cli::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn no_backends_means_standalone() {
        assert_eq!(args(&[]).mode(), Ok(Mode::Standalone));
        assert!(args(&["--role", "api"]).mode().is_err());
    }

    #[test]
    fn distributed_needs_what_the_role_uses() {
        let all = args(&["--redis-url", "redis://r", "--kafka-brokers", "k"]);
        assert!(all.mode().unwrap_err().contains("--database-url"));
        let api = args(&[
            "--role",
            "api",
            "--redis-url",
            "redis://r",
            "--kafka-brokers",
            "k",
        ]);
        assert!(
            api.mode().unwrap_err().contains("--database-url"),
            "the API restores campaigns from PostgreSQL"
        );
        let consumer = args(&[
            "--role",
            "consumer",
            "--kafka-brokers",
            "k",
            "--database-url",
            "postgres://d",
        ]);
        assert!(matches!(
            consumer.mode(),
            Ok(Mode::Distributed(Backends {
                redis_url: None,
                ..
            }))
        ));
    }

    #[test]
    fn redis_url_takes_every_deployment() {
        for url in [
            "redis://r:6379",
            "redis+sentinel://s1:26379,s2:26379/shop",
            "redis+cluster://n1:7000,n2:7001",
        ] {
            let parsed = args(&["--redis-url", url]);
            assert_eq!(parsed.redis_url.unwrap().to_string(), url);
        }
        let argv = [
            "firstcome-issuer",
            "--redis-url",
            "redis+sentinel://s1:26379",
        ];
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "a Sentinel URL names its primary"
        );
    }

    #[test]
    fn identity_flags_describe_the_campaign_flags_identity() {
        assert_eq!(args(&[]).identity.config(), Ok(IdentityConfig::None));
        let jwt = args(&[
            "--identity",
            "jwt",
            "--jwt-keys-dir",
            "/keys",
            "--jwt-issuer",
            "https://login.example",
            "--jwt-audience",
            "coupons",
        ]);
        let Ok(IdentityConfig::Jwt { jwt }) = jwt.identity.config() else {
            panic!("jwt flags give a jwt identity");
        };
        assert_eq!(
            (jwt.user_claim.as_str(), jwt.leeway_seconds),
            ("sub", DEFAULT_LEEWAY_SECONDS)
        );
        let lacking = args(&["--identity", "jwt", "--jwt-issuer", "i"])
            .identity
            .config();
        assert_eq!(
            lacking,
            Err(
                "--identity jwt also needs --jwt-keys-dir or --jwt-jwks-url, --jwt-audience".into()
            )
        );
        let header = args(&["--identity", "header", "--identity-user-header", "x-user"]);
        assert!(
            header
                .identity
                .config()
                .unwrap_err()
                .contains("--identity-secret-file")
        );
    }

    #[test]
    fn rate_limit_flags_and_trusted_proxies() {
        let plain = args(&[]);
        assert_eq!(plain.shorthand_rate_limits(), RateLimits::default());
        assert_eq!(
            plain.shorthand_rate_limits().per_client,
            None,
            "no per-client limit unless asked"
        );
        assert_eq!(plain.trusted_proxies(), TrustedProxies::default());
        let set = args(&[
            "--rate-limit-per-client",
            "2:3",
            "--trusted-proxies",
            "10.0.0.0/8,fd00::1",
        ]);
        let limits = set.shorthand_rate_limits();
        assert_eq!(
            limits.per_client,
            Some(Bucket {
                per_second: 2,
                burst: 3
            })
        );
        assert_eq!(limits.per_user, RateLimits::default_per_user());
        assert_eq!(set.trusted_proxies.len(), 2);
        for bad in ["2", "0:1", "1:0", "a:b", "1:2:3"] {
            assert!(parse_bucket(bad).is_err(), "{bad}");
        }
        let argv = ["firstcome-issuer", "--trusted-proxies", "ingress"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn campaign_shorthand() {
        let parsed = args(&["--campaign", "launch:100", "--campaign", "b:2"]);
        assert_eq!(parsed.campaigns[0], CampaignConfig::new("launch", 100));
        assert_eq!(parsed.campaigns[1].limit, 2);
        for bad in ["launch", "launch:x", "Launch:1", "launch:0"] {
            assert!(parse_campaign_shorthand(bad).is_err(), "{bad}");
        }
    }
}
