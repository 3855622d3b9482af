//! The configuration of one campaign as an issuer serves it.
//!
//! The operator renders it from the `CouponCampaign` resource into the issuer's
//! configuration file; the issuer reads the same type back. Validation lives here so both
//! sides refuse the same bad values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::{IdentityConfig, IdentityConfigError};
use crate::waiting_room::{WaitingRoom, WaitingRoomProblem};

/// Longest campaign name: a Kubernetes object name (DNS subdomain).
const MAX_NAME_LEN: usize = 253;
/// Kafka refuses topic names longer than this.
const MAX_TOPIC_LEN: usize = 249;

/// Coupons one user may win in a campaign that does not say.
pub const DEFAULT_PER_USER_LIMIT: u32 = 1;

/// Highest rate or burst a token bucket may be given: far above any one client's honest
/// need, low enough that the arithmetic of a bucket never comes near overflowing.
pub const MAX_BUCKET_RATE: u32 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignConfig {
    /// Identifies the campaign in URLs, Redis keys and events.
    pub name: String,
    /// Most coupons the campaign ever issues.
    pub limit: u64,
    /// Most coupons one user may win in this campaign.
    #[serde(default = "default_per_user_limit")]
    pub per_user_limit: u32,
    /// Before this instant applies are answered "not open yet".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<DateTime<Utc>>,
    /// From this instant on applies are answered "closed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<DateTime<Utc>>,
    /// Kafka topic the winners of this campaign are published to.
    pub topic: String,
    /// Who an apply comes from; absent means `none` (the body's `userId`).
    #[serde(default, skip_serializing_if = "IdentityConfig::is_none")]
    pub identity: IdentityConfig,
    /// Abuse limits on applies, checked before any admission work. Left out when they
    /// are the defaults, so a campaigns file (and the operator's config hash) without
    /// them stays as it was.
    #[serde(default, skip_serializing_if = "RateLimits::is_default")]
    pub rate_limits: RateLimits,
    /// Users queue and are let in at a rate, each with a pass the apply requires; absent
    /// means no waiting room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<WaitingRoom>,
}

/// Token buckets an apply must pass: one per user, and, when configured, one per client
/// address.
///
/// The per-user bucket is on by default and sized for a flash sale: a person applies a
/// handful of times (a retry, a double click), so 5/s with a burst of 10 per user never
/// gets in an honest user's way, while a script hammering one user id is cut off before
/// it reaches Redis. It needs no assumption about addresses.
///
/// The per-client-address bucket is off unless configured: one address may hide a whole
/// crowd — a carrier NAT puts thousands of phones behind one address, and an issuer
/// behind a proxy without trusted proxies sees every user as the proxy — so no default
/// size is safe, and a default would throttle a legitimate spike (1,000 users from one
/// address on a campaign of 100 got 49 coupons under the former 20/s). Turn it on, sized
/// for the addresses in front of the issuers, where clients have addresses of their own.
/// What is refused is cheaper than even the sold-out answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimits {
    /// Per client address (an IPv6 client by its /64); `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<Bucket>,
    #[serde(default = "RateLimits::default_per_user")]
    pub per_user: Bucket,
}

/// A token bucket: `burst` applies at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bucket {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimits {
    pub const fn default_per_user() -> Bucket {
        Bucket {
            per_second: 5,
            burst: 10,
        }
    }

    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_client: None,
            per_user: Self::default_per_user(),
        }
    }
}

impl std::fmt::Display for RateLimits {
    /// The limits as a start-up log says them: `per user 5/s burst 10, per client
    /// address off`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "per user {}, per client address ", self.per_user)?;
        match self.per_client {
            Some(bucket) => write!(f, "{bucket}"),
            None => f.write_str("off"),
        }
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s burst {}", self.per_second, self.burst)
    }
}

impl Bucket {
    /// Whether rate and burst are both within 1..=[`MAX_BUCKET_RATE`].
    pub fn is_valid(&self) -> bool {
        let bounds = 1..=MAX_BUCKET_RATE;
        bounds.contains(&self.per_second) && bounds.contains(&self.burst)
    }
}

/// The file an issuer reads its campaigns from (`--campaigns-file`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignsFile {
    pub campaigns: Vec<CampaignConfig>,
}

/// A stream of a campaign's winner events and the consumer group that persists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerLane {
    pub group: String,
    pub topic: String,
}

/// Where a campaign stands in its time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Scheduled,
    Open,
    Closed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "campaign name {0:?} is invalid: use 1-253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
    )]
    InvalidName(String),
    #[error("campaign {0}: limit must be at least 1")]
    ZeroLimit(String),
    #[error("campaign {0}: perUserLimit must be at least 1")]
    ZeroPerUserLimit(String),
    #[error("campaign {0}: closesAt must be later than opensAt")]
    ClosesBeforeOpens(String),
    #[error(
        "campaign {campaign}: topic {topic:?} is invalid: use 1-249 characters of a-z, A-Z, 0-9, '.', '_' or '-'"
    )]
    InvalidTopic { campaign: String, topic: String },
    #[error("campaign {campaign}: {source}")]
    Identity {
        campaign: String,
        source: IdentityConfigError,
    },
    #[error(
        "campaign {campaign}: rateLimits.{scope} must have perSecond and burst in 1..={MAX_BUCKET_RATE}"
    )]
    InvalidBucket {
        campaign: String,
        scope: &'static str,
    },
    #[error("campaign {campaign}: waitingRoom: {problem}")]
    WaitingRoom {
        campaign: String,
        problem: WaitingRoomProblem,
    },
    #[error("campaign {0} is defined twice")]
    Duplicate(String),
    #[error(
        "topic {topic:?} is used by campaigns {first} and {second}: each campaign needs its own"
    )]
    SharedTopic {
        topic: String,
        first: String,
        second: String,
    },
}

fn default_per_user_limit() -> u32 {
    DEFAULT_PER_USER_LIMIT
}

impl CampaignConfig {
    /// A campaign open from now on, one coupon per user, publishing to the default topic,
    /// believing the body's `userId` (identity `none`).
    pub fn new(name: impl Into<String>, limit: u64) -> Self {
        let name = name.into();
        Self {
            topic: Self::default_topic(&name),
            name,
            limit,
            per_user_limit: default_per_user_limit(),
            opens_at: None,
            closes_at: None,
            identity: IdentityConfig::None,
            rate_limits: RateLimits::default(),
            waiting_room: None,
        }
    }

    /// The topic a campaign publishes to when none is given.
    pub fn default_topic(name: &str) -> String {
        format!("firstcome.{name}.winners")
    }

    /// Where consumers park winner events while PostgreSQL is unavailable; deleted
    /// together with `topic`.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    /// The campaign topic and its consumer group.
    pub fn primary_lane(&self) -> ConsumerLane {
        ConsumerLane {
            group: format!("firstcome-{}", self.name),
            topic: self.topic.clone(),
        }
    }

    /// The dead-letter topic and its consumer group.
    pub fn dead_letter_lane(&self) -> ConsumerLane {
        ConsumerLane {
            group: format!("firstcome-{}-dlq", self.name),
            topic: self.dead_letter_topic(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_valid_name(&self.name) {
            return Err(ConfigError::InvalidName(self.name.clone()));
        }
        if self.limit == 0 {
            return Err(ConfigError::ZeroLimit(self.name.clone()));
        }
        if self.per_user_limit == 0 {
            return Err(ConfigError::ZeroPerUserLimit(self.name.clone()));
        }
        if let (Some(opens), Some(closes)) = (self.opens_at, self.closes_at)
            && closes <= opens
        {
            return Err(ConfigError::ClosesBeforeOpens(self.name.clone()));
        }
        if !is_valid_topic(&self.topic) {
            return Err(ConfigError::InvalidTopic {
                campaign: self.name.clone(),
                topic: self.topic.clone(),
            });
        }
        self.identity
            .validate()
            .map_err(|source| ConfigError::Identity {
                campaign: self.name.clone(),
                source,
            })?;
        let limits = &self.rate_limits;
        for (scope, bucket) in [
            ("perClient", limits.per_client),
            ("perUser", Some(limits.per_user)),
        ] {
            let Some(bucket) = bucket else { continue };
            if !bucket.is_valid() {
                return Err(ConfigError::InvalidBucket {
                    campaign: self.name.clone(),
                    scope,
                });
            }
        }
        if let Some(room) = &self.waiting_room {
            room.validate(self.opens_at)
                .map_err(|problem| ConfigError::WaitingRoom {
                    campaign: self.name.clone(),
                    problem,
                })?;
        }
        Ok(())
    }

    pub fn window(&self, now: DateTime<Utc>) -> Window {
        match (self.opens_at, self.closes_at) {
            (Some(opens), _) if now < opens => Window::Scheduled,
            (_, Some(closes)) if now >= closes => Window::Closed,
            _ => Window::Open,
        }
    }
}

impl CampaignsFile {
    /// Validates every campaign, and that no name or topic is used twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut topics = std::collections::HashMap::new();
        for campaign in &self.campaigns {
            campaign.validate()?;
            if !names.insert(campaign.name.as_str()) {
                return Err(ConfigError::Duplicate(campaign.name.clone()));
            }
            if let Some(first) = topics.insert(campaign.topic.as_str(), campaign.name.as_str()) {
                return Err(ConfigError::SharedTopic {
                    topic: campaign.topic.clone(),
                    first: first.to_string(),
                    second: campaign.name.clone(),
                });
            }
        }
        Ok(())
    }
}

fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    name.len() <= MAX_NAME_LEN
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
}

fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_fill_per_user_limit_and_window() {
        let c: CampaignConfig =
            serde_json::from_str(r#"{"name":"launch","limit":100,"topic":"t"}"#).unwrap();
        assert_eq!(c.per_user_limit, 1);
        assert_eq!(c.opens_at, None);
        assert_eq!(
            c.identity,
            IdentityConfig::None,
            "files without identity mean none"
        );
        assert_eq!(c.validate(), Ok(()));
        let written = serde_json::to_value(&c).unwrap();
        assert!(
            written.get("identity").is_none(),
            "none is not written: {written}"
        );
    }

    #[test]
    fn rate_limits_default_and_stay_out_of_the_file_when_default() {
        let c: CampaignConfig =
            serde_json::from_str(r#"{"name":"launch","limit":100,"topic":"t"}"#).unwrap();
        assert_eq!(c.rate_limits.per_client, None, "off unless configured");
        assert_eq!(
            c.rate_limits.per_user,
            Bucket {
                per_second: 5,
                burst: 10
            }
        );
        assert_eq!(
            c.rate_limits.to_string(),
            "per user 5/s burst 10, per client address off"
        );
        assert!(!serde_json::to_string(&c).unwrap().contains("rateLimits"));
        let partial: CampaignConfig = serde_json::from_str(
            r#"{"name":"l","limit":1,"topic":"t","rateLimits":{"perUser":{"perSecond":1,"burst":2}}}"#,
        )
        .unwrap();
        assert_eq!(partial.rate_limits.per_client, None);
        assert_eq!(
            partial.rate_limits.per_user,
            Bucket {
                per_second: 1,
                burst: 2
            }
        );
        assert!(
            serde_json::to_string(&partial)
                .unwrap()
                .contains("rateLimits")
        );
        let client: CampaignConfig = serde_json::from_str(
            r#"{"name":"l","limit":1,"topic":"t","rateLimits":{"perClient":{"perSecond":20,"burst":40}}}"#,
        )
        .unwrap();
        assert_eq!(
            client.rate_limits.per_client,
            Some(Bucket {
                per_second: 20,
                burst: 40
            })
        );
        assert_eq!(client.rate_limits.per_user, RateLimits::default_per_user());
        assert_eq!(
            client.rate_limits.to_string(),
            "per user 5/s burst 10, per client address 20/s burst 40"
        );
        let written = serde_json::to_value(&client).unwrap();
        assert_eq!(
            written["rateLimits"]["perClient"],
            serde_json::json!({"perSecond": 20, "burst": 40})
        );
    }

    #[test]
    fn buckets_must_be_within_bounds() {
        for (per_second, burst, ok) in [
            (1, 1, true),
            (MAX_BUCKET_RATE, MAX_BUCKET_RATE, true),
            (0, 1, false),
            (1, 0, false),
            (MAX_BUCKET_RATE + 1, 1, false),
        ] {
            let c = CampaignConfig {
                rate_limits: RateLimits {
                    per_client: Some(Bucket { per_second, burst }),
                    ..RateLimits::default()
                },
                ..CampaignConfig::new("c", 1)
            };
            let want = match ok {
                true => Ok(()),
                false => Err(ConfigError::InvalidBucket {
                    campaign: "c".into(),
                    scope: "perClient",
                }),
            };
            assert_eq!(c.validate(), want, "{per_second}/{burst}");
        }
    }

    #[test]
    fn a_waiting_room_is_validated_with_the_campaign() {
        let plain: CampaignConfig =
            serde_json::from_str(r#"{"name":"l","limit":1,"topic":"t"}"#).unwrap();
        assert_eq!(plain.waiting_room, None);
        assert!(
            !serde_json::to_string(&plain)
                .unwrap()
                .contains("waitingRoom")
        );
        let bad: CampaignConfig = serde_json::from_str(
            r#"{"name":"l","limit":1,"topic":"t","waitingRoom":{"admissionRate":0}}"#,
        )
        .unwrap();
        assert_eq!(
            bad.validate(),
            Err(ConfigError::WaitingRoom {
                campaign: "l".into(),
                problem: WaitingRoomProblem::Rate
            })
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<CampaignConfig>(
            r#"{"name":"launch","limit":100,"topic":"t","limt":3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("limt"), "{err}");
    }

    #[test]
    fn names_follow_kubernetes_object_names() {
        for good in ["a", "launch-2026", "shop.black-friday", "0"] {
            assert!(is_valid_name(good), "{good}");
        }
        let long = "a".repeat(254);
        for bad in ["", "Launch", "-a", "a-", "a_b", "a b", "ü", long.as_str()] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn validate_refuses_each_bad_field() {
        let ok = CampaignConfig::new("c", 1);
        assert_eq!(ok.validate(), Ok(()));
        let zero = CampaignConfig::new("c", 0);
        assert_eq!(zero.validate(), Err(ConfigError::ZeroLimit("c".into())));
        let per_user = CampaignConfig {
            per_user_limit: 0,
            ..ok.clone()
        };
        assert_eq!(
            per_user.validate(),
            Err(ConfigError::ZeroPerUserLimit("c".into()))
        );
        let backwards = CampaignConfig {
            opens_at: Some(at("2026-01-02T00:00:00Z")),
            closes_at: Some(at("2026-01-01T00:00:00Z")),
            ..ok.clone()
        };
        assert_eq!(
            backwards.validate(),
            Err(ConfigError::ClosesBeforeOpens("c".into()))
        );
        let topic = CampaignConfig {
            topic: "has space".into(),
            ..ok.clone()
        };
        assert!(matches!(
            topic.validate(),
            Err(ConfigError::InvalidTopic { .. })
        ));
        let identity = CampaignConfig {
            identity: IdentityConfig::Header {
                header: crate::HeaderConfig {
                    user_header: "x-user".into(),
                    secret_header: "x-user".into(),
                    secret_file: "/s".into(),
                },
            },
            ..ok
        };
        assert_eq!(
            identity.validate(),
            Err(ConfigError::Identity {
                campaign: "c".into(),
                source: IdentityConfigError::SameHeader
            })
        );
    }

    #[test]
    fn lanes_pair_each_topic_with_its_group() {
        let c = CampaignConfig::new("launch", 1);
        assert_eq!(
            c.primary_lane(),
            ConsumerLane {
                group: "firstcome-launch".into(),
                topic: "firstcome.launch.winners".into()
            }
        );
        assert_eq!(
            c.dead_letter_lane(),
            ConsumerLane {
                group: "firstcome-launch-dlq".into(),
                topic: "firstcome.launch.winners.dlq".into()
            }
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let file = CampaignsFile {
            campaigns: vec![CampaignConfig::new("a", 1), CampaignConfig::new("a", 2)],
        };
        assert_eq!(file.validate(), Err(ConfigError::Duplicate("a".into())));
    }

    #[test]
    fn shared_topics_are_refused() {
        let file = CampaignsFile {
            campaigns: vec![
                CampaignConfig::new("a", 1),
                CampaignConfig {
                    topic: CampaignConfig::default_topic("a"),
                    ..CampaignConfig::new("b", 1)
                },
            ],
        };
        assert!(matches!(
            file.validate(),
            Err(ConfigError::SharedTopic { .. })
        ));
    }

    #[test]
    fn window_follows_opens_and_closes() {
        let c = CampaignConfig {
            opens_at: Some(at("2026-01-01T10:00:00Z")),
            closes_at: Some(at("2026-01-01T12:00:00Z")),
            ..CampaignConfig::new("c", 1)
        };
        assert_eq!(c.window(at("2026-01-01T09:59:59Z")), Window::Scheduled);
        assert_eq!(c.window(at("2026-01-01T10:00:00Z")), Window::Open);
        assert_eq!(c.window(at("2026-01-01T11:59:59Z")), Window::Open);
        assert_eq!(c.window(at("2026-01-01T12:00:00Z")), Window::Closed);
        assert_eq!(
            CampaignConfig::new("c", 1).window(at("2000-01-01T00:00:00Z")),
            Window::Open
        );
    }
}
