//! The status of a campaign, computed from what the reconcile observed. Pure: the one
//! place phases and conditions are decided, unit-tested without a cluster.

use chrono::{DateTime, Utc};
use firstcome_contract::{CampaignConfig, ConfigError, Window};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::backends::{BackendError, Persistence, RedisCounts};
use crate::describe;
use crate::reason::Reason;
use crate::resource::{CouponCampaignStatus, Phase, WaitingRoomStatus};

/// Everything one reconcile observed.
#[derive(Debug)]
pub struct Observation {
    pub now: DateTime<Utc>,
    pub generation: Option<i64>,
    pub config: Result<CampaignConfig, ConfigError>,
    pub backends: Backends,
    pub desired_issuers: i32,
    pub ready_issuers: i32,
}

/// What the backends said, or why they were not asked.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per reconcile, never stored in bulk"
)]
pub enum Backends {
    /// The spec is invalid: nothing was provisioned.
    NotTried,
    /// The backends Secret cannot be used: nothing was provisioned.
    NoSettings(BackendError),
    Asked(Answers),
}

/// Each backend's answer to one reconcile.
#[derive(Debug)]
pub struct Answers {
    pub redis: Result<RedisCounts, BackendError>,
    pub topic: Result<(), BackendError>,
    pub persistence: Result<Persistence, BackendError>,
}

impl Backends {
    /// One backend's answer, or the verdict of its condition when it has none.
    fn answer<T>(
        &self,
        pick: impl Fn(&Answers) -> &Result<T, BackendError>,
    ) -> Result<&T, Verdict> {
        let failed = |e: &BackendError| verdict(false, e.reason(), describe(e));
        match self {
            Self::NotTried => Err(verdict(
                false,
                Reason::InvalidSpec,
                "not provisioned: the spec is invalid",
            )),
            Self::NoSettings(e) => Err(failed(e)),
            Self::Asked(answers) => pick(answers).as_ref().map_err(failed),
        }
    }

    fn redis(&self) -> Result<&RedisCounts, Verdict> {
        self.answer(|a| &a.redis)
    }

    fn persistence(&self) -> Option<&Persistence> {
        self.answer(|a| &a.persistence).ok()
    }
}

pub const READY: &str = "Ready";
pub const REDIS_READY: &str = "RedisReady";
pub const TOPIC_READY: &str = "TopicReady";
pub const ISSUERS_AVAILABLE: &str = "IssuersAvailable";
pub const SOLD_OUT: &str = "SoldOut";
pub const LIMIT_ACCEPTED: &str = "LimitAccepted";

struct Verdict {
    ok: bool,
    reason: Reason,
    message: String,
}

fn verdict(ok: bool, reason: Reason, message: impl Into<String>) -> Verdict {
    Verdict {
        ok,
        reason,
        message: message.into(),
    }
}

/// The counts of the status: fresh where the backends answered, else the last known.
struct Counts {
    limit: Option<u64>,
    admitted: u64,
    issued: u64,
    failed_events: u64,
    remaining: u64,
}

fn counts(old: &CouponCampaignStatus, backends: &Backends) -> Counts {
    let redis = backends.redis().ok();
    let limit = redis.map(|r| r.limit);
    let admitted = redis.map_or(old.admitted, |r| r.admitted);
    let persistence = backends.persistence();
    Counts {
        limit,
        admitted,
        issued: persistence.map_or(old.issued, |p| p.issued),
        failed_events: persistence.map_or(old.failed_events, |p| p.failed_events),
        remaining: limit.map_or(old.remaining, |l| l.saturating_sub(admitted)),
    }
}

fn redis_verdict(backends: &Backends) -> Verdict {
    backends.redis().map_or_else(
        |failed| failed,
        |_| verdict(true, Reason::Provisioned, "campaign keys are in Redis"),
    )
}

fn topic_verdict(backends: &Backends) -> Verdict {
    backends.answer(|a| &a.topic).map_or_else(
        |failed| failed,
        |()| verdict(true, Reason::TopicReady, "the winners topic exists"),
    )
}

fn issuers_verdict(obs: &Observation) -> Verdict {
    let (ready, desired) = (obs.ready_issuers, obs.desired_issuers);
    if desired == 0 {
        verdict(false, Reason::Paused, "no issuer is meant to run")
    } else if ready > 0 {
        verdict(
            true,
            Reason::IssuersReady,
            format!("{ready}/{desired} issuers ready"),
        )
    } else {
        verdict(
            false,
            Reason::NoReadyIssuer,
            format!("0/{desired} issuers ready"),
        )
    }
}

fn limit_verdict(backends: &Backends) -> Verdict {
    match backends.redis() {
        Ok(RedisCounts {
            limit,
            admitted,
            refused_limit: Some(refused),
            ..
        }) => verdict(
            false,
            Reason::LimitBelowAdmitted,
            format!(
                "limit {refused} is below the {admitted} coupons already admitted; keeping {limit}"
            ),
        ),
        Ok(_) => verdict(true, Reason::LimitApplied, "the spec's limit is in force"),
        Err(failed) => verdict(
            false,
            Reason::Unknown,
            format!("the limit was not written: {}", failed.message),
        ),
    }
}

fn sold_out_verdict(counts: &Counts) -> Verdict {
    match counts.limit {
        Some(limit) if counts.admitted >= limit => verdict(
            true,
            Reason::SoldOut,
            format!("all {limit} coupons admitted"),
        ),
        _ => verdict(
            false,
            Reason::CouponsRemaining,
            format!("{} coupons remaining", counts.remaining),
        ),
    }
}

fn config_verdict(obs: &Observation) -> Verdict {
    match &obs.config {
        Ok(_) => verdict(true, Reason::Valid, "the spec is valid"),
        Err(e) => verdict(false, Reason::InvalidSpec, e.to_string()),
    }
}

/// Ready is the first failing check, in the order a user should look at them.
fn ready_verdict(checks: [&Verdict; 4]) -> Verdict {
    checks.into_iter().find(|v| !v.ok).map_or_else(
        || verdict(true, Reason::CampaignReady, "provisioned and serving"),
        |v| verdict(false, v.reason, v.message.clone()),
    )
}

fn phase(
    obs: &Observation,
    config: &Verdict,
    backends: [&Verdict; 2],
    sold_out: &Verdict,
) -> Phase {
    if !config.ok {
        return Phase::Failed;
    }
    if backends.iter().any(|v| !v.ok) {
        return Phase::Provisioning;
    }
    let window = obs
        .config
        .as_ref()
        .map_or(Window::Open, |c| c.window(obs.now));
    match window {
        Window::Scheduled => Phase::Scheduled,
        Window::Closed => Phase::Closed,
        Window::Open if sold_out.ok => Phase::SoldOut,
        Window::Open => Phase::Open,
    }
}

pub fn compute(old: Option<&CouponCampaignStatus>, obs: &Observation) -> CouponCampaignStatus {
    let old_status = old.cloned().unwrap_or_default();
    let counts = counts(&old_status, &obs.backends);
    let redis = redis_verdict(&obs.backends);
    let topic = topic_verdict(&obs.backends);
    let issuers = issuers_verdict(obs);
    let sold_out = sold_out_verdict(&counts);
    let config = config_verdict(obs);
    let ready = ready_verdict([&config, &redis, &topic, &issuers]);
    let phase = phase(obs, &config, [&redis, &topic], &sold_out);

    let mut conditions = old_status.conditions;
    for (kind, v) in [
        (READY, &ready),
        (REDIS_READY, &redis),
        (TOPIC_READY, &topic),
        (ISSUERS_AVAILABLE, &issuers),
        (LIMIT_ACCEPTED, &limit_verdict(&obs.backends)),
        (SOLD_OUT, &sold_out),
    ] {
        set_condition(&mut conditions, kind, v, obs);
    }

    CouponCampaignStatus {
        observed_generation: obs.generation,
        phase,
        admitted: counts.admitted,
        issued: counts.issued,
        remaining: counts.remaining,
        pending_persistence: counts.admitted.saturating_sub(counts.issued),
        failed_events: counts.failed_events,
        ready_issuers: obs.ready_issuers,
        issuer_replicas: obs.desired_issuers,
        campaign_id: obs
            .config
            .as_ref()
            .ok()
            .map(|c| c.name.clone())
            .or(old_status.campaign_id),
        waiting_room: waiting_room(old_status.waiting_room, obs),
        conditions,
    }
}

/// The waiting room's line as Redis last told it, and the rate it is let in at; none
/// without a room.
fn waiting_room(old: Option<WaitingRoomStatus>, obs: &Observation) -> Option<WaitingRoomStatus> {
    let room = obs.config.as_ref().ok()?.waiting_room.as_ref()?;
    let queue_length = match obs.backends.redis() {
        Ok(counts) => counts.waiting.unwrap_or_default(),
        Err(_) => old.map_or(0, |old| old.queue_length),
    };
    Some(WaitingRoomStatus {
        queue_length,
        admission_rate: room.admission_rate,
    })
}

/// Sets a condition; its `lastTransitionTime` changes only when its status flips.
fn set_condition(conditions: &mut Vec<Condition>, kind: &str, v: &Verdict, obs: &Observation) {
    let status = if v.ok { "True" } else { "False" };
    let now = Time(Timestamp::from_second(obs.now.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH));
    let fresh = Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: v.reason.to_string(),
        message: v.message.clone(),
        observed_generation: obs.generation,
        last_transition_time: now,
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) if existing.status == status => {
            let since = existing.last_transition_time.clone();
            *existing = Condition {
                last_transition_time: since,
                ..fresh
            };
        }
        Some(existing) => *existing = fresh,
        None => conditions.push(fresh),
    }
}

/// The condition of `kind`, if set.
pub fn condition<'a>(status: &'a CouponCampaignStatus, kind: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn counts(limit: u64, admitted: u64) -> Result<RedisCounts, BackendError> {
        Ok(RedisCounts {
            limit,
            admitted,
            refused_limit: None,
            waiting: None,
        })
    }

    fn healthy(now: &str) -> Observation {
        Observation {
            now: at(now),
            generation: Some(1),
            config: Ok(CampaignConfig::new("shop.black-friday", 100)),
            backends: Backends::Asked(Answers {
                redis: counts(100, 40),
                topic: Ok(()),
                persistence: Ok(Persistence {
                    issued: 35,
                    failed_events: 1,
                }),
            }),
            desired_issuers: 2,
            ready_issuers: 2,
        }
    }

    fn with_redis(mut obs: Observation, redis: Result<RedisCounts, BackendError>) -> Observation {
        if let Backends::Asked(answers) = &mut obs.backends {
            answers.redis = redis;
        }
        obs
    }

    fn status_of(s: &CouponCampaignStatus, kind: &str) -> String {
        condition(s, kind).unwrap().status.clone()
    }

    fn reason_of(s: &CouponCampaignStatus, kind: &str) -> (String, String) {
        let c = condition(s, kind).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn healthy_open_campaign() {
        let s = compute(None, &healthy("2026-01-01T00:00:00Z"));
        assert_eq!(s.phase, Phase::Open);
        assert_eq!(
            (
                s.admitted,
                s.issued,
                s.remaining,
                s.pending_persistence,
                s.failed_events
            ),
            (40, 35, 60, 5, 1)
        );
        assert_eq!(s.campaign_id.as_deref(), Some("shop.black-friday"));
        for kind in [
            READY,
            REDIS_READY,
            TOPIC_READY,
            ISSUERS_AVAILABLE,
            LIMIT_ACCEPTED,
        ] {
            assert_eq!(status_of(&s, kind), "True", "{kind}");
        }
        assert_eq!(status_of(&s, SOLD_OUT), "False");
    }

    #[test]
    fn sold_out_scheduled_and_closed_phases() {
        let obs = with_redis(healthy("2026-01-01T00:00:00Z"), counts(100, 100));
        let s = compute(None, &obs);
        assert_eq!((s.phase, s.remaining), (Phase::SoldOut, 0));
        assert_eq!(status_of(&s, SOLD_OUT), "True");

        let mut obs = healthy("2026-01-01T00:00:00Z");
        obs.config = Ok(CampaignConfig {
            opens_at: Some(at("2026-01-02T00:00:00Z")),
            closes_at: Some(at("2026-01-03T00:00:00Z")),
            ..CampaignConfig::new("c", 100)
        });
        assert_eq!(compute(None, &obs).phase, Phase::Scheduled);
        obs.now = at("2026-01-03T00:00:00Z");
        assert_eq!(compute(None, &obs).phase, Phase::Closed);
    }

    #[test]
    fn a_waiting_room_shows_its_line_and_rate_and_keeps_the_line_when_redis_is_away() {
        assert_eq!(
            compute(None, &healthy("2026-01-01T00:00:00Z")).waiting_room,
            None
        );
        let with_room = |redis| {
            let mut obs = with_redis(healthy("2026-01-01T00:00:00Z"), redis);
            if let Ok(config) = &mut obs.config {
                config.waiting_room = Some(firstcome_contract::WaitingRoom::new(250));
            }
            obs
        };
        let line = RedisCounts {
            waiting: Some(4200),
            ..counts(100, 40).unwrap()
        };
        let before = compute(None, &with_room(Ok(line)));
        let expected = WaitingRoomStatus {
            queue_length: 4200,
            admission_rate: 250,
        };
        assert_eq!(before.waiting_room, Some(expected));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let away = with_room(Err(BackendError::RedisUnreachable(refused.into())));
        assert_eq!(compute(Some(&before), &away).waiting_room, Some(expected));
    }

    #[test]
    fn unreachable_redis_keeps_counts_and_says_why() {
        let before = compute(None, &healthy("2026-01-01T00:00:00Z"));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let obs = with_redis(
            healthy("2026-01-01T00:01:00Z"),
            Err(BackendError::RedisUnreachable(refused.into())),
        );
        let s = compute(Some(&before), &obs);
        assert_eq!(s.phase, Phase::Provisioning);
        assert_eq!(s.admitted, 40, "last known count kept");
        let redis = condition(&s, REDIS_READY).unwrap();
        assert_eq!(
            (redis.status.as_str(), redis.reason.as_str()),
            ("False", "RedisUnavailable")
        );
        assert!(
            redis.message.starts_with("cannot reach Redis: "),
            "{}",
            redis.message
        );
        assert_eq!(
            reason_of(&s, READY),
            ("False".into(), "RedisUnavailable".into())
        );
        assert_eq!(reason_of(&s, LIMIT_ACCEPTED).1, Reason::Unknown);
    }

    /// Each way the backends can fail shows on RedisReady/TopicReady with its own reason.
    #[test]
    fn the_reason_follows_what_failed() {
        let missing = || BackendError::SecretMissing {
            namespace: "shop".into(),
            name: "firstcome-backends".into(),
        };
        let bad_url = || {
            BackendError::InvalidRedisUrl(
                "nope"
                    .parse::<firstcome_contract::RedisTarget>()
                    .unwrap_err(),
            )
        };
        let cases = [
            (Backends::NotTried, Reason::InvalidSpec, Reason::InvalidSpec),
            (
                Backends::NoSettings(missing()),
                Reason::BackendsSecretMissing,
                Reason::BackendsSecretMissing,
            ),
            (
                Backends::Asked(Answers {
                    redis: Err(bad_url()),
                    topic: Err(BackendError::KafkaNoAnswer("t".into())),
                    persistence: Ok(Persistence {
                        issued: 0,
                        failed_events: 0,
                    }),
                }),
                Reason::InvalidBackendSettings,
                Reason::KafkaUnavailable,
            ),
        ];
        for (backends, redis, topic) in cases {
            let obs = Observation {
                backends,
                ..healthy("2026-01-01T00:00:00Z")
            };
            let s = compute(None, &obs);
            assert_eq!(
                reason_of(&s, REDIS_READY),
                ("False".into(), redis.to_string())
            );
            assert_eq!(
                reason_of(&s, TOPIC_READY),
                ("False".into(), topic.to_string())
            );
            assert_eq!(s.phase, Phase::Provisioning);
        }
    }

    #[test]
    fn refused_limit_is_a_false_condition_not_a_failure() {
        let obs = with_redis(
            healthy("2026-01-01T00:00:00Z"),
            Ok(RedisCounts {
                limit: 100,
                admitted: 40,
                refused_limit: Some(30),
                waiting: None,
            }),
        );
        let s = compute(None, &obs);
        assert_eq!(s.phase, Phase::Open);
        let limit = condition(&s, LIMIT_ACCEPTED).unwrap();
        assert_eq!(
            (limit.status.as_str(), limit.reason.as_str()),
            ("False", "LimitBelowAdmitted")
        );
        assert_eq!(
            limit.message,
            "limit 30 is below the 40 coupons already admitted; keeping 100"
        );
        assert_eq!(status_of(&s, READY), "True");
    }

    #[test]
    fn invalid_spec_fails_and_paused_has_no_issuers() {
        let mut obs = healthy("2026-01-01T00:00:00Z");
        obs.config = Err(ConfigError::ZeroLimit("x".into()));
        obs.backends = Backends::NotTried;
        let s = compute(None, &obs);
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(reason_of(&s, READY).1, Reason::InvalidSpec);
        assert_eq!(
            condition(&s, READY).unwrap().message,
            "campaign x: limit must be at least 1"
        );

        let mut obs = healthy("2026-01-01T00:00:00Z");
        (obs.desired_issuers, obs.ready_issuers) = (0, 0);
        let s = compute(None, &obs);
        assert_eq!(reason_of(&s, ISSUERS_AVAILABLE).1, Reason::Paused);
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = compute(None, &healthy("2026-01-01T00:00:00Z"));
        let mut obs = with_redis(healthy("2026-01-01T00:05:00Z"), counts(100, 41));
        let same = compute(Some(&first), &obs);
        assert_eq!(
            condition(&same, READY).unwrap().last_transition_time,
            condition(&first, READY).unwrap().last_transition_time
        );
        assert_eq!(
            condition(&same, SOLD_OUT).unwrap().message,
            "59 coupons remaining"
        );
        obs.ready_issuers = 0;
        let flipped = compute(Some(&same), &obs);
        assert_ne!(
            condition(&flipped, READY).unwrap().last_transition_time,
            condition(&first, READY).unwrap().last_transition_time
        );
    }
}
