//! A seed drawn into everything a chaos run does: its campaigns, its applies and its
//! faults with their times. Pure and deterministic (ChaCha8, a fixed algorithm), so a
//! seed replays the same run on any machine.
//!
//! Each fault kind draws from a ChaCha8 stream of its own, numbered from its name, and
//! kinds are placed in the order of [`FaultKind::ALL`] (a fault clashing with one placed
//! before it is dropped): a kind added at the end of `ALL` leaves every other kind's
//! faults of every seed as they were.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// API issuers of a run's deployment.
pub const API_ISSUERS: usize = 2;
/// Consumers of a run's deployment (one consumer group: a fault moves partitions).
pub const CONSUMERS: usize = 2;

/// What a fault does. Grows with the injectors (Redis failovers, partitions, slow links):
/// a new kind goes at the end of [`FaultKind::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9` of an API issuer, started again after the fault's length.
    KillApi,
    /// SIGSTOP of an API issuer, SIGCONT after the fault's length.
    PauseApi,
    /// `kill -9` of a consumer, started again after the fault's length.
    KillConsumer,
    /// SIGSTOP of a consumer, SIGCONT after the fault's length.
    PauseConsumer,
    /// SIGTERM to each API issuer in turn, each started again before the next, as a
    /// Kubernetes rolling update does.
    RollingRestart,
    /// `kill -9` of the Kafka broker, started again after the fault's length.
    KillBroker,
    /// PostgreSQL stopped, started again after the fault's length.
    StopPostgres,
    /// The link from an API issuer to Redis holds every reply past the issuer's Redis
    /// timeout for the fault's length: admissions run whose answers are lost.
    SlowRedisLink,
    /// `kill -9` of the Sentinel bed's primary: the Sentinels promote the replica (which
    /// has every write that reached it); the dead node rejoins as a replica after the
    /// fault's length.
    KillRedisPrimary,
    /// The Sentinel bed's replica stopped (SIGSTOP) and dropped by the primary for the
    /// fault's length while admissions go on, then the primary killed and the replica
    /// resumed: the Sentinels promote a replica that lacks those admissions (lost writes).
    PromoteLaggingReplica,
    /// `kill -9` of the Cluster bed's primary serving one campaign's slot: its replica
    /// takes the slot over; the dead node rejoins as a replica after the fault's length.
    KillSlotPrimary,
    /// The link from an API issuer to Redis partitioned for the fault's length: nothing
    /// passes either way, connections stay open; then what was held passes on.
    PartitionRedisLink,
    /// The link from a consumer to PostgreSQL partitioned for the fault's length.
    PartitionPostgresLink,
    /// The link from an API issuer to Kafka partitioned for the fault's length: its
    /// produces go unacknowledged past the delivery timeout while the other issuer's go on.
    PartitionKafkaLink,
    /// The link from an API issuer to Kafka holds every reply past the delivery timeout
    /// for the fault's length: events the broker wrote whose acks come too late.
    SlowKafkaLink,
}

impl FaultKind {
    pub const ALL: [Self; 15] = [
        Self::KillApi,
        Self::PauseApi,
        Self::KillConsumer,
        Self::PauseConsumer,
        Self::RollingRestart,
        Self::KillBroker,
        Self::StopPostgres,
        Self::SlowRedisLink,
        Self::KillRedisPrimary,
        Self::PromoteLaggingReplica,
        Self::KillSlotPrimary,
        Self::PartitionRedisLink,
        Self::PartitionPostgresLink,
        Self::PartitionKafkaLink,
        Self::SlowKafkaLink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::KillApi => "kill_api",
            Self::PauseApi => "pause_api",
            Self::KillConsumer => "kill_consumer",
            Self::PauseConsumer => "pause_consumer",
            Self::RollingRestart => "rolling_restart",
            Self::KillBroker => "kill_broker",
            Self::StopPostgres => "stop_postgres",
            Self::SlowRedisLink => "slow_redis_link",
            Self::KillRedisPrimary => "kill_redis_primary",
            Self::PromoteLaggingReplica => "promote_lagging_replica",
            Self::KillSlotPrimary => "kill_slot_primary",
            Self::PartitionRedisLink => "partition_redis_link",
            Self::PartitionPostgresLink => "partition_postgres_link",
            Self::PartitionKafkaLink => "partition_kafka_link",
            Self::SlowKafkaLink => "slow_kafka_link",
        }
    }

    /// Whether the kind can be injected on `redis`: a slow or partitioned link needs the
    /// single Redis's one address; failovers need the replicated bed they fail over.
    pub fn runs_on(self, redis: RedisBed) -> bool {
        match self {
            Self::SlowRedisLink | Self::PartitionRedisLink => redis == RedisBed::Single,
            Self::KillRedisPrimary | Self::PromoteLaggingReplica => redis == RedisBed::Sentinel,
            Self::KillSlotPrimary => redis == RedisBed::Cluster,
            _ => true,
        }
    }

    /// The ChaCha8 stream this kind draws from: FNV-1a of its name, so it depends on
    /// nothing but the name.
    fn stream(self) -> u64 {
        use std::hash::Hasher;
        let mut hasher = fnv::FnvHasher::default();
        hasher.write(self.name().as_bytes());
        hasher.finish()
    }

    /// The shortest and longest the fault lasts, in milliseconds.
    fn lengths_ms(self) -> (u64, u64) {
        match self {
            Self::KillApi | Self::KillConsumer => (200, 4_000),
            // Past the 2 s delivery timeout at times: a frozen hand-off.
            Self::PauseApi | Self::PauseConsumer => (500, 8_000),
            Self::RollingRestart => (8_000, 8_000),
            Self::KillBroker => (1_000, 8_000),
            Self::StopPostgres => (1_000, 10_000),
            Self::SlowRedisLink | Self::SlowKafkaLink => (1_000, 6_000),
            Self::PartitionRedisLink | Self::PartitionKafkaLink => (1_000, 8_000),
            Self::PartitionPostgresLink => (1_000, 10_000),
            Self::KillRedisPrimary | Self::KillSlotPrimary => (1_000, 8_000),
            // The replica's lag: under the Sentinels' ten down-after periods (10 s), past
            // which they would not promote it.
            Self::PromoteLaggingReplica => (2_000, 6_000),
        }
    }
}

/// What a fault hits. Faults on one target never overlap in a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Api(usize),
    Consumer(usize),
    /// Every API issuer, one after the other.
    Apis,
    Broker,
    Postgres,
    /// The link from an API issuer (by index) to Redis.
    RedisLink(usize),
    /// The link from an API issuer (by index) to Kafka.
    KafkaLink(usize),
    /// The link from a consumer (by index) to PostgreSQL.
    PostgresLink(usize),
    /// The Sentinel bed's nodes.
    Sentinel,
    /// The Cluster bed's primary of one campaign's (by index) slot.
    SlotPrimary(usize),
}

/// A service whose links to the deployment's processes faults slow or partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Linked {
    Redis,
    Kafka,
    Postgres,
}

impl Target {
    /// The service whose link this is, if it is one.
    pub fn linked(self) -> Option<Linked> {
        match self {
            Self::RedisLink(_) => Some(Linked::Redis),
            Self::KafkaLink(_) => Some(Linked::Kafka),
            Self::PostgresLink(_) => Some(Linked::Postgres),
            _ => None,
        }
    }

    /// Whether faults on `self` and `other` touch the same process or service.
    fn overlaps(self, other: Self) -> bool {
        match (self, other) {
            (Self::Apis, Self::Api(_)) | (Self::Api(_), Self::Apis) => true,
            // One failover at a time: two primaries down at once leave the Cluster
            // without the majority that elects a replica.
            (Self::SlotPrimary(_), Self::SlotPrimary(_)) => true,
            (a, b) => a == b,
        }
    }
}

/// One fault of a schedule: injected at `at` (from the run's start), healed `lasts` later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: Target,
    pub at: Duration,
    pub lasts: Duration,
}

/// The Redis a run's issuers admit on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisBed {
    /// The chaos bed's one Redis (slow links to it possible).
    Single,
    /// A primary, a replica and three Sentinels (`scripts/testbed up-sentinel`).
    Sentinel,
    /// Three primaries with a replica each (`scripts/testbed up-cluster`).
    Cluster,
}

impl RedisBed {
    pub fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Sentinel => "sentinel",
            Self::Cluster => "cluster",
        }
    }

    /// Half the seeds run on the single Redis, a quarter on each replicated bed: drawn
    /// from a stream of its own, so the seed's other draws are as they were before beds
    /// were drawn.
    fn drawn(seed: u64) -> Self {
        const STREAM: u64 = 1;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(STREAM);
        match rng.random_range(0..4) {
            0 => Self::Sentinel,
            1 => Self::Cluster,
            _ => Self::Single,
        }
    }
}

/// A campaign of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignPlan {
    pub limit: u32,
    pub per_user_limit: u32,
    /// Identity jwt: each user applies with a bearer token naming them.
    pub jwt: bool,
    /// A waiting room: each user joins its queue, polls it for a pass and applies with it.
    pub room: bool,
}

/// One apply a client sends: to `issuer` (index of the API issuers) at `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Apply {
    pub campaign: usize,
    pub user: String,
    pub at: Duration,
    pub issuer: usize,
}

/// Everything one seed decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub seed: u64,
    /// How long the schedule runs: applies and faults start within it.
    pub span: Duration,
    pub redis: RedisBed,
    pub campaigns: Vec<CampaignPlan>,
    /// By time.
    pub applies: Vec<Apply>,
    /// By time.
    pub faults: Vec<Fault>,
}

impl Plan {
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let span = Duration::from_secs(rng.random_range(15..=40));
        let mut campaigns = campaigns(&mut rng);
        draw_rooms(seed, &mut campaigns);
        let applies = applies(&mut rng, &campaigns, span);
        let redis = RedisBed::drawn(seed);
        let kinds: Vec<FaultKind> = (FaultKind::ALL.into_iter())
            .filter(|kind| kind.runs_on(redis))
            .collect();
        let faults = faults(seed, span, &kinds);
        Self {
            seed,
            span,
            redis,
            campaigns,
            applies,
            faults,
        }
    }

    /// The services whose links the schedule faults.
    pub fn linked(&self) -> std::collections::BTreeSet<Linked> {
        (self.faults.iter())
            .filter_map(|fault| fault.target.linked())
            .collect()
    }

    /// How many faults of each kind the schedule injects.
    pub fn faults_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for fault in &self.faults {
            *counts.entry(fault.kind.name()).or_default() += 1;
        }
        counts
    }
}

/// Campaigns of a run: see [`campaigns`].
pub const CAMPAIGNS: usize = 3;

/// A small campaign (one coupon each), a large one, and one of several coupons per user;
/// at least one with identity jwt.
fn campaigns(rng: &mut ChaCha8Rng) -> Vec<CampaignPlan> {
    let mut plans = vec![
        CampaignPlan {
            limit: rng.random_range(3..=30),
            per_user_limit: 1,
            jwt: rng.random_bool(0.5),
            room: false,
        },
        CampaignPlan {
            limit: rng.random_range(100..=400),
            per_user_limit: 1,
            jwt: rng.random_bool(0.5),
            room: false,
        },
        CampaignPlan {
            limit: rng.random_range(20..=120),
            per_user_limit: rng.random_range(2..=3),
            jwt: rng.random_bool(0.5),
            room: false,
        },
    ];
    let with_identity = rng.random_range(0..plans.len());
    plans[with_identity].jwt = true;
    plans
}

/// The first seed whose campaigns may have a waiting room: the seeds before it keep the
/// plans the soak ran them with (docs/soak.md).
pub const ROOM_SEEDS: u64 = 5000;

/// From [`ROOM_SEEDS`] on, each campaign has a waiting room with probability one half,
/// drawn from a stream of its own (the seed's other draws stay as they were).
fn draw_rooms(seed: u64, campaigns: &mut [CampaignPlan]) {
    const STREAM: u64 = 2;
    if seed < ROOM_SEEDS {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(STREAM);
    for campaign in campaigns {
        campaign.room = rng.random_bool(0.5);
    }
}

/// Users enough to sell some campaigns out and not others; each applies up to its
/// per-user limit, and some apply again past it (duplicates).
fn applies(rng: &mut ChaCha8Rng, campaigns: &[CampaignPlan], span: Duration) -> Vec<Apply> {
    let window = span.as_millis() as u64 * 4 / 5;
    let mut applies = Vec::new();
    for (index, campaign) in campaigns.iter().enumerate() {
        let demand = f64::from(campaign.limit) * rng.random_range(0.6..2.5);
        let users = (demand / f64::from(campaign.per_user_limit))
            .ceil()
            .max(1.0) as usize;
        for n in 0..users {
            let user = format!("u{n}");
            let extra = if rng.random_bool(0.2) {
                rng.random_range(1..=2)
            } else {
                0
            };
            for _ in 0..campaign.per_user_limit + extra {
                applies.push(Apply {
                    campaign: index,
                    user: user.clone(),
                    at: Duration::from_millis(rng.random_range(0..window)),
                    issuer: rng.random_range(0..API_ISSUERS),
                });
            }
        }
    }
    applies.shuffle(rng);
    applies.sort_by_key(|apply| apply.at);
    applies
}

/// Seconds of schedule per chance of each kind's fault.
const SLOT_SECONDS: u64 = 6;
/// The chance, per slot of [`SLOT_SECONDS`], that a kind injects a fault: with the seven
/// first kinds, about 1.4 faults every six seconds.
const CHANCE_PER_SLOT: f64 = 0.2;

/// The faults of `kinds`, each drawn from its own stream, placed in the order given:
/// none on a target still faulted by one placed before it.
fn faults(seed: u64, span: Duration, kinds: &[FaultKind]) -> Vec<Fault> {
    let mut faults: Vec<Fault> = Vec::new();
    for &kind in kinds {
        for fault in drawn(seed, span, kind) {
            let clashes = faults.iter().any(|other| {
                other.target.overlaps(fault.target)
                    && other.at < fault.at + fault.lasts
                    && fault.at < other.at + other.lasts
            });
            if !clashes {
                faults.push(fault);
            }
        }
    }
    faults.sort_by_key(|fault| (fault.at, fault.kind));
    faults
}

/// The faults of one kind a seed draws, before any clash is resolved: from the kind's own
/// stream of the seed, whatever other kinds exist.
fn drawn(seed: u64, span: Duration, kind: FaultKind) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(kind.stream());
    let window = span.as_millis() as u64 * 4 / 5;
    let slots = (span.as_secs() / SLOT_SECONDS).max(2);
    let (shortest, longest) = kind.lengths_ms();
    let mut faults = Vec::new();
    for _ in 0..slots {
        if !rng.random_bool(CHANCE_PER_SLOT) {
            continue;
        }
        let target = match kind {
            FaultKind::KillApi | FaultKind::PauseApi => {
                Target::Api(rng.random_range(0..API_ISSUERS))
            }
            FaultKind::KillConsumer | FaultKind::PauseConsumer => {
                Target::Consumer(rng.random_range(0..CONSUMERS))
            }
            FaultKind::RollingRestart => Target::Apis,
            FaultKind::KillBroker => Target::Broker,
            FaultKind::StopPostgres => Target::Postgres,
            FaultKind::SlowRedisLink | FaultKind::PartitionRedisLink => {
                Target::RedisLink(rng.random_range(0..API_ISSUERS))
            }
            FaultKind::PartitionKafkaLink | FaultKind::SlowKafkaLink => {
                Target::KafkaLink(rng.random_range(0..API_ISSUERS))
            }
            FaultKind::PartitionPostgresLink => {
                Target::PostgresLink(rng.random_range(0..CONSUMERS))
            }
            FaultKind::KillRedisPrimary | FaultKind::PromoteLaggingReplica => Target::Sentinel,
            FaultKind::KillSlotPrimary => Target::SlotPrimary(rng.random_range(0..CAMPAIGNS)),
        };
        faults.push(Fault {
            kind,
            target,
            at: Duration::from_millis(rng.random_range(1_000..window)),
            lasts: Duration::from_millis(rng.random_range(shortest..=longest)),
        });
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_plan_every_time() {
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(Plan::from_seed(seed), Plan::from_seed(seed));
        }
        assert_ne!(Plan::from_seed(1), Plan::from_seed(2));
    }

    #[test]
    fn a_seed_replays_on_any_machine() {
        // ChaCha8 is a fixed algorithm: these figures are the same everywhere, and
        // change only if the drawing itself is changed (which changes every seed).
        let plan = Plan::from_seed(7);
        let fingerprint = (
            plan.span.as_secs(),
            plan.campaigns.iter().map(|c| c.limit).collect::<Vec<_>>(),
            plan.applies.len(),
            plan.faults
                .iter()
                .map(|f| f.kind.name())
                .collect::<Vec<_>>(),
        );
        let faults = vec![
            "kill_api",
            "slow_redis_link",
            "kill_consumer",
            "slow_kafka_link",
            "partition_postgres_link",
            "kill_consumer",
        ];
        assert_eq!(fingerprint, (19, vec![8, 311, 27], 681, faults));
    }

    #[test]
    fn campaigns_are_small_large_and_several_per_user_with_identity_on_one_at_least() {
        for seed in 0..200 {
            let plan = Plan::from_seed(seed);
            let [small, large, several] = &plan.campaigns[..] else {
                panic!("three campaigns")
            };
            assert!(small.limit <= 30 && small.per_user_limit == 1);
            assert!(large.limit >= 100 && large.per_user_limit == 1);
            assert!(several.per_user_limit > 1);
            assert!(plan.campaigns.iter().any(|c| c.jwt), "seed {seed}");
        }
    }

    #[test]
    fn waiting_rooms_come_with_the_seeds_from_5000_only() {
        let rooms = |seeds: std::ops::Range<u64>| {
            (seeds.flat_map(|seed| Plan::from_seed(seed).campaigns))
                .filter(|c| c.room)
                .count()
        };
        assert_eq!(rooms(0..ROOM_SEEDS), 0);
        let drawn = rooms(ROOM_SEEDS..ROOM_SEEDS + 200);
        assert!(
            (200..400).contains(&drawn),
            "{drawn} rooms of 600 campaigns"
        );
    }

    #[test]
    fn applies_fall_within_the_schedule_by_time_with_duplicates() {
        for seed in 0..200 {
            let plan = Plan::from_seed(seed);
            assert!(plan.applies.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(plan.applies.iter().all(|a| a.at < plan.span));
            assert!(plan.applies.iter().all(|a| a.issuer < API_ISSUERS));
            let mut per_user = BTreeMap::new();
            for apply in &plan.applies {
                *per_user
                    .entry((apply.campaign, &apply.user))
                    .or_insert(0u32) += 1;
            }
            for ((campaign, user), applies) in per_user {
                let limit = plan.campaigns[campaign].per_user_limit;
                assert!(
                    applies >= limit,
                    "seed {seed}: {user} applies up to its limit"
                );
            }
        }
        let duplicated = (0..20).any(|seed| {
            let plan = Plan::from_seed(seed);
            let mut seen = std::collections::HashSet::new();
            plan.applies
                .iter()
                .filter(|a| a.campaign == 0)
                .any(|a| !seen.insert(&a.user))
        });
        assert!(duplicated, "some users apply more than once");
    }

    #[test]
    fn a_kind_added_at_the_end_leaves_every_other_kinds_faults_as_they_were() {
        for seed in 0..300 {
            let span = Duration::from_secs(15 + seed % 26);
            let all = faults(seed, span, &FaultKind::ALL);
            for known in 1..FaultKind::ALL.len() {
                let before = &FaultKind::ALL[..known];
                let of_known: Vec<Fault> = (all.iter())
                    .filter(|f| before.contains(&f.kind))
                    .copied()
                    .collect();
                assert_eq!(
                    faults(seed, span, before),
                    of_known,
                    "seed {seed}: adding {:?}",
                    &FaultKind::ALL[known..]
                );
            }
        }
    }

    #[test]
    fn a_kinds_draws_depend_on_the_seed_and_its_name_only() {
        let span = Duration::from_secs(40);
        let streams: std::collections::HashSet<u64> =
            FaultKind::ALL.iter().map(|k| k.stream()).collect();
        assert_eq!(streams.len(), FaultKind::ALL.len(), "one stream per kind");
        // FNV-1a of the name, fixed forever: a kind renamed is a new kind.
        assert_eq!(FaultKind::KillApi.stream(), 0xe73e_fad5_d92e_5f76);
        let seeds_drawing = |kind| {
            (0..100)
                .filter(|&s| !drawn(s, span, kind).is_empty())
                .count()
        };
        for kind in FaultKind::ALL {
            assert!(seeds_drawing(kind) > 50, "{kind:?} is drawn");
            assert_eq!(drawn(3, span, kind), drawn(3, span, kind));
        }
    }

    #[test]
    fn a_quarter_of_the_seeds_run_on_each_replicated_bed_with_its_failovers_only() {
        let mut beds = BTreeMap::new();
        for seed in 0..400 {
            let plan = Plan::from_seed(seed);
            *beds.entry(format!("{:?}", plan.redis)).or_insert(0) += 1;
            for fault in &plan.faults {
                assert!(fault.kind.runs_on(plan.redis), "seed {seed}: {fault:?}");
            }
            // The bed is drawn apart: the rest of the plan is the one drawn before beds.
            let on_single = faults(seed, plan.span, &FaultKind::ALL[..8]);
            let kept: Vec<Fault> = (on_single.into_iter())
                .filter(|f| f.kind.runs_on(plan.redis))
                .collect();
            let older: Vec<Fault> = (plan.faults.iter())
                .filter(|f| FaultKind::ALL[..8].contains(&f.kind))
                .copied()
                .collect();
            assert_eq!(older, kept, "seed {seed}");
        }
        for (bed, low, high) in [
            ("Single", 160, 240),
            ("Sentinel", 70, 130),
            ("Cluster", 70, 130),
        ] {
            assert!((low..=high).contains(&beds[bed]), "{beds:?}");
        }
    }

    #[test]
    fn faults_on_one_target_never_overlap_and_every_kind_is_drawn() {
        let mut kinds = std::collections::HashSet::new();
        let mut without_fault = 0;
        for seed in 0..200 {
            let plan = Plan::from_seed(seed);
            without_fault += usize::from(plan.faults.is_empty());
            for (i, a) in plan.faults.iter().enumerate() {
                assert!(a.at < plan.span && !a.lasts.is_zero());
                kinds.insert(a.kind);
                for b in &plan.faults[i + 1..] {
                    let disjoint = a.at + a.lasts <= b.at || b.at + b.lasts <= a.at;
                    assert!(
                        !a.target.overlaps(b.target) || disjoint,
                        "seed {seed}: {a:?} and {b:?}"
                    );
                }
            }
        }
        assert_eq!(kinds.len(), FaultKind::ALL.len());
        assert!(
            without_fault < 10,
            "{without_fault} of 200 seeds inject no fault"
        );
    }
}
