//! The waiting room of a campaign: users join a queue (a pre-queue before the campaign
//! opens, shuffled at the opening) and are let in at a set rate, each with a signed pass
//! the apply then requires. Off unless a campaign configures it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::room_page::{RoomPage, RoomPageProblem};

/// Most users per second a room may admit: far above what a backend behind a waiting
/// room is meant to take, and small enough for the admission script's arithmetic.
pub const MAX_ADMISSION_RATE: u32 = 100_000;
/// How long before `opensAt` the pre-queue opens when `prequeueOpensAt` is not given.
pub const DEFAULT_PREQUEUE_LEAD_SECONDS: i64 = 15 * 60;
/// How long a pass lets its user apply, when not given.
pub const DEFAULT_PASS_TTL_SECONDS: u32 = 10 * 60;
/// How long a waiting ticket lives without being polled, when not given.
pub const DEFAULT_TICKET_TIMEOUT_SECONDS: u32 = 60;
/// Bounds of `passTtlSeconds`: long enough to apply, short enough to expire in a sale.
pub const PASS_TTL_SECONDS: std::ops::RangeInclusive<u32> = 10..=86_400;
/// Bounds of `ticketTimeoutSeconds`: several polls long, at most an hour.
pub const TICKET_TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 5..=3_600;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaitingRoom {
    /// Users let in per second, across every issuer of the campaign.
    pub admission_rate: u32,
    /// Most unexpired passes at once; absent: only the rate limits admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active: Option<u32>,
    /// When users may start joining the pre-queue; absent: 15 minutes before `opensAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prequeue_opens_at: Option<DateTime<Utc>>,
    /// How long a pass lets its user apply.
    #[serde(default = "default_pass_ttl")]
    pub pass_ttl_seconds: u32,
    /// A waiting ticket not polled for this long loses its place.
    #[serde(default = "default_ticket_timeout")]
    pub ticket_timeout_seconds: u32,
    /// The customers' page: its text and colours.
    #[serde(default)]
    pub page: RoomPage,
}

/// What is wrong with a waiting room's settings.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WaitingRoomProblem {
    #[error("admissionRate must be in 1..={MAX_ADMISSION_RATE}")]
    Rate,
    #[error("maxActive must be at least 1")]
    MaxActive,
    #[error("passTtlSeconds must be in {PASS_TTL_SECONDS:?}")]
    PassTtl,
    #[error("ticketTimeoutSeconds must be in {TICKET_TIMEOUT_SECONDS:?}")]
    TicketTimeout,
    #[error("prequeueOpensAt needs opensAt, and must be earlier than it")]
    Prequeue,
    #[error(transparent)]
    Page(#[from] RoomPageProblem),
}

fn default_pass_ttl() -> u32 {
    DEFAULT_PASS_TTL_SECONDS
}

fn default_ticket_timeout() -> u32 {
    DEFAULT_TICKET_TIMEOUT_SECONDS
}

impl WaitingRoom {
    /// A room admitting `admission_rate` users per second, other settings default.
    pub fn new(admission_rate: u32) -> Self {
        Self {
            admission_rate,
            max_active: None,
            prequeue_opens_at: None,
            pass_ttl_seconds: DEFAULT_PASS_TTL_SECONDS,
            ticket_timeout_seconds: DEFAULT_TICKET_TIMEOUT_SECONDS,
            page: RoomPage::default(),
        }
    }

    /// Checks the settings against the campaign's `opens_at`.
    pub fn validate(&self, opens_at: Option<DateTime<Utc>>) -> Result<(), WaitingRoomProblem> {
        if !(1..=MAX_ADMISSION_RATE).contains(&self.admission_rate) {
            return Err(WaitingRoomProblem::Rate);
        }
        if self.max_active == Some(0) {
            return Err(WaitingRoomProblem::MaxActive);
        }
        if !PASS_TTL_SECONDS.contains(&self.pass_ttl_seconds) {
            return Err(WaitingRoomProblem::PassTtl);
        }
        if !TICKET_TIMEOUT_SECONDS.contains(&self.ticket_timeout_seconds) {
            return Err(WaitingRoomProblem::TicketTimeout);
        }
        self.page.validate()?;
        match (self.prequeue_opens_at, opens_at) {
            (Some(prequeue), Some(opens)) if prequeue < opens => Ok(()),
            (Some(_), _) => Err(WaitingRoomProblem::Prequeue),
            (None, _) => Ok(()),
        }
    }

    /// From when users may join, given the campaign's `opens_at`: the pre-queue's opening,
    /// or always when the campaign has no opening time.
    pub fn joinable_from(&self, opens_at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let lead = Duration::seconds(DEFAULT_PREQUEUE_LEAD_SECONDS);
        self.prequeue_opens_at
            .or(opens_at.map(|opens| opens - lead))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_fill_what_a_file_leaves_out() {
        let room: WaitingRoom = serde_json::from_str(r#"{"admissionRate":50}"#).unwrap();
        assert_eq!(room, WaitingRoom::new(50));
        assert_eq!(room.validate(None), Ok(()));
        let written = serde_json::to_string(&room).unwrap();
        assert!(!written.contains("maxActive"), "{written}");
    }

    #[test]
    fn each_bad_setting_is_named() {
        let ok = WaitingRoom::new(10);
        let opens = Some(at("2026-01-01T10:00:00Z"));
        let cases = [
            (WaitingRoom::new(0), WaitingRoomProblem::Rate),
            (
                WaitingRoom::new(MAX_ADMISSION_RATE + 1),
                WaitingRoomProblem::Rate,
            ),
            (
                WaitingRoom {
                    max_active: Some(0),
                    ..ok.clone()
                },
                WaitingRoomProblem::MaxActive,
            ),
            (
                WaitingRoom {
                    pass_ttl_seconds: 9,
                    ..ok.clone()
                },
                WaitingRoomProblem::PassTtl,
            ),
            (
                WaitingRoom {
                    ticket_timeout_seconds: 3_601,
                    ..ok.clone()
                },
                WaitingRoomProblem::TicketTimeout,
            ),
            (
                WaitingRoom {
                    prequeue_opens_at: opens,
                    ..ok.clone()
                },
                WaitingRoomProblem::Prequeue,
            ),
        ];
        for (room, problem) in cases {
            assert_eq!(room.validate(opens), Err(problem.clone()), "{room:?}");
        }
        let early = WaitingRoom {
            prequeue_opens_at: Some(at("2026-01-01T09:00:00Z")),
            ..ok.clone()
        };
        assert_eq!(early.validate(opens), Ok(()));
        assert_eq!(early.validate(None), Err(WaitingRoomProblem::Prequeue));
    }

    #[test]
    fn the_prequeue_opens_a_lead_time_before_the_campaign() {
        let room = WaitingRoom::new(10);
        let opens = at("2026-01-01T10:00:00Z");
        assert_eq!(
            room.joinable_from(Some(opens)),
            Some(at("2026-01-01T09:45:00Z"))
        );
        assert_eq!(room.joinable_from(None), None);
        let explicit = WaitingRoom {
            prequeue_opens_at: Some(at("2026-01-01T08:00:00Z")),
            ..room
        };
        assert_eq!(
            explicit.joinable_from(Some(opens)),
            Some(at("2026-01-01T08:00:00Z"))
        );
    }
}
