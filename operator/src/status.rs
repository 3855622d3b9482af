//! The status of a campaign, computed from what the reconcile observed. Pure: the one
//! place phases and conditions are decided, unit-tested without a cluster.

use chrono::{DateTime, Utc};
use firstcome_contract::{CampaignConfig, Window};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::resource::{CouponCampaignStatus, Phase};

/// What Redis says about a provisioned campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisCounts {
    /// The limit in force (the spec's, unless it was refused).
    pub limit: u64,
    pub admitted: u64,
    /// Set when the spec's limit was refused: why.
    pub limit_refused: Option<String>,
}

/// What PostgreSQL says about the campaign's coupons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub issued: u64,
    pub failed_events: u64,
}

/// Everything one reconcile observed; `Err` carries the reason a step failed.
#[derive(Clone, Debug)]
pub struct Observation {
    pub now: DateTime<Utc>,
    pub generation: Option<i64>,
    pub config: Result<CampaignConfig, String>,
    pub redis: Result<RedisCounts, String>,
    pub topic: Result<(), String>,
    pub persistence: Result<Persistence, String>,
    pub desired_issuers: i32,
    pub ready_issuers: i32,
}

pub const READY: &str = "Ready";
pub const REDIS_READY: &str = "RedisReady";
pub const TOPIC_READY: &str = "TopicReady";
pub const ISSUERS_AVAILABLE: &str = "IssuersAvailable";
pub const SOLD_OUT: &str = "SoldOut";
pub const LIMIT_ACCEPTED: &str = "LimitAccepted";

struct Verdict {
    ok: bool,
    reason: &'static str,
    message: String,
}

fn verdict(ok: bool, reason: &'static str, message: impl Into<String>) -> Verdict {
    Verdict {
        ok,
        reason,
        message: message.into(),
    }
}

pub fn compute(old: Option<&CouponCampaignStatus>, obs: &Observation) -> CouponCampaignStatus {
    let old_status = old.cloned().unwrap_or_default();
    let (limit, admitted) = match &obs.redis {
        Ok(counts) => (Some(counts.limit), counts.admitted),
        Err(_) => (None, old_status.admitted),
    };
    let (issued, failed_events) = match &obs.persistence {
        Ok(p) => (p.issued, p.failed_events),
        Err(_) => (old_status.issued, old_status.failed_events),
    };
    let remaining = limit.map_or(old_status.remaining, |l| l.saturating_sub(admitted));

    let redis = match &obs.redis {
        Ok(_) => verdict(true, "Provisioned", "campaign keys are in Redis"),
        Err(e) => verdict(false, "RedisUnavailable", e.as_str()),
    };
    let topic = match &obs.topic {
        Ok(()) => verdict(true, "TopicReady", "the winners topic exists"),
        Err(e) => verdict(false, "KafkaUnavailable", e.as_str()),
    };
    let issuers = if obs.desired_issuers == 0 {
        verdict(false, "Paused", "no issuer is meant to run")
    } else if obs.ready_issuers > 0 {
        verdict(
            true,
            "IssuersReady",
            format!(
                "{}/{} issuers ready",
                obs.ready_issuers, obs.desired_issuers
            ),
        )
    } else {
        verdict(
            false,
            "NoReadyIssuer",
            format!("0/{} issuers ready", obs.desired_issuers),
        )
    };
    let limit_accepted = match &obs.redis {
        Ok(RedisCounts {
            limit_refused: Some(why),
            ..
        }) => verdict(false, "LimitBelowAdmitted", why.as_str()),
        Ok(_) => verdict(true, "LimitApplied", "the spec's limit is in force"),
        Err(_) => verdict(false, "Unknown", "Redis is unavailable"),
    };
    let sold_out = match limit {
        Some(limit) if admitted >= limit => {
            verdict(true, "SoldOut", format!("all {limit} coupons admitted"))
        }
        _ => verdict(
            false,
            "CouponsRemaining",
            format!("{remaining} coupons remaining"),
        ),
    };
    let config = match &obs.config {
        Ok(_) => verdict(true, "Valid", "the spec is valid"),
        Err(e) => verdict(false, "InvalidSpec", e.as_str()),
    };
    let ready = [&config, &redis, &topic, &issuers]
        .into_iter()
        .find(|v| !v.ok)
        .map_or_else(
            || verdict(true, "CampaignReady", "provisioned and serving"),
            |v| verdict(false, v.reason, v.message.clone()),
        );

    let phase = if !config.ok {
        Phase::Failed
    } else if !redis.ok || !topic.ok {
        Phase::Provisioning
    } else {
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
    };

    let mut conditions = old_status.conditions.clone();
    for (kind, v) in [
        (READY, &ready),
        (REDIS_READY, &redis),
        (TOPIC_READY, &topic),
        (ISSUERS_AVAILABLE, &issuers),
        (LIMIT_ACCEPTED, &limit_accepted),
        (SOLD_OUT, &sold_out),
    ] {
        set_condition(&mut conditions, kind, v, obs);
    }

    CouponCampaignStatus {
        observed_generation: obs.generation,
        phase,
        admitted,
        issued,
        remaining,
        pending_persistence: admitted.saturating_sub(issued),
        failed_events,
        ready_issuers: obs.ready_issuers,
        campaign_id: obs
            .config
            .as_ref()
            .ok()
            .map(|c| c.name.clone())
            .or(old_status.campaign_id),
        conditions,
    }
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

    fn healthy(now: &str) -> Observation {
        Observation {
            now: at(now),
            generation: Some(1),
            config: Ok(CampaignConfig::new("shop.black-friday", 100)),
            redis: Ok(RedisCounts {
                limit: 100,
                admitted: 40,
                limit_refused: None,
            }),
            topic: Ok(()),
            persistence: Ok(Persistence {
                issued: 35,
                failed_events: 1,
            }),
            desired_issuers: 2,
            ready_issuers: 2,
        }
    }

    fn status_of(s: &CouponCampaignStatus, kind: &str) -> String {
        condition(s, kind).unwrap().status.clone()
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
        let mut obs = healthy("2026-01-01T00:00:00Z");
        obs.redis = Ok(RedisCounts {
            limit: 100,
            admitted: 100,
            limit_refused: None,
        });
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
    fn unreachable_redis_keeps_counts_and_says_why() {
        let before = compute(None, &healthy("2026-01-01T00:00:00Z"));
        let mut obs = healthy("2026-01-01T00:01:00Z");
        obs.redis = Err("connection refused".into());
        let s = compute(Some(&before), &obs);
        assert_eq!(s.phase, Phase::Provisioning);
        assert_eq!(s.admitted, 40, "last known count kept");
        let redis = condition(&s, REDIS_READY).unwrap();
        assert_eq!(
            (redis.status.as_str(), redis.reason.as_str()),
            ("False", "RedisUnavailable")
        );
        assert_eq!(redis.message, "connection refused");
        let ready = condition(&s, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RedisUnavailable")
        );
    }

    #[test]
    fn refused_limit_is_a_false_condition_not_a_failure() {
        let mut obs = healthy("2026-01-01T00:00:00Z");
        obs.redis = Ok(RedisCounts {
            limit: 100,
            admitted: 40,
            limit_refused: Some("limit 30 is below the 40 already admitted".into()),
        });
        let s = compute(None, &obs);
        assert_eq!(s.phase, Phase::Open);
        assert_eq!(status_of(&s, LIMIT_ACCEPTED), "False");
        assert_eq!(
            condition(&s, LIMIT_ACCEPTED).unwrap().reason,
            "LimitBelowAdmitted"
        );
        assert_eq!(status_of(&s, READY), "True");
    }

    #[test]
    fn invalid_spec_fails_and_paused_has_no_issuers() {
        let mut obs = healthy("2026-01-01T00:00:00Z");
        obs.config = Err("campaign x: limit must be at least 1".into());
        let s = compute(None, &obs);
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(condition(&s, READY).unwrap().reason, "InvalidSpec");

        let mut obs = healthy("2026-01-01T00:00:00Z");
        (obs.desired_issuers, obs.ready_issuers) = (0, 0);
        let s = compute(None, &obs);
        assert_eq!(condition(&s, ISSUERS_AVAILABLE).unwrap().reason, "Paused");
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = compute(None, &healthy("2026-01-01T00:00:00Z"));
        let mut obs = healthy("2026-01-01T00:05:00Z");
        obs.redis = Ok(RedisCounts {
            limit: 100,
            admitted: 41,
            limit_refused: None,
        });
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
