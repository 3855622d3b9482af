//! The message an issuer publishes on the campaign topic for every admitted winner.
//!
//! Keyed by sequence ([`WinnerEvent::key`]). Consumers persist it idempotently on
//! (campaign, user id, ordinal), so publishing the same event twice never creates a
//! second coupon.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WinnerEvent {
    pub campaign: String,
    pub user_id: String,
    /// Which of the user's coupons in this campaign this is: 1..=perUserLimit.
    pub ordinal: u32,
    /// Admission order within the campaign: 1..=limit.
    pub sequence: u64,
    pub admitted_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable winner event: {0}")]
pub struct WinnerEventError(#[from] serde_json::Error);

/// A decodable event that cannot be a coupon of the campaign whose stream carried it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "winner event of campaign {event_campaign:?} (ordinal {ordinal}, sequence {sequence}) does not belong to campaign {campaign:?}"
)]
pub struct ForeignEvent {
    pub campaign: String,
    pub event_campaign: String,
    pub ordinal: u32,
    pub sequence: u64,
}

impl WinnerEvent {
    /// Whether this event can become a coupon of `campaign`: it names that campaign and
    /// its ordinal and sequence start at 1.
    pub fn check_belongs_to(&self, campaign: &str) -> Result<(), ForeignEvent> {
        if self.campaign == campaign && self.ordinal >= 1 && self.sequence >= 1 {
            return Ok(());
        }
        Err(ForeignEvent {
            campaign: campaign.to_string(),
            event_campaign: self.campaign.clone(),
            ordinal: self.ordinal,
            sequence: self.sequence,
        })
    }

    /// The Kafka message key: the sequence. Every event that claims one sequence — its
    /// re-publishes, and any event of a Redis that handed the sequence out again — lands
    /// on one partition, in order, so the first of them there is its holder.
    pub fn key(&self) -> String {
        self.sequence.to_string()
    }

    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a winner event always serializes")
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, WinnerEventError> {
        Ok(serde_json::from_slice(payload)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_in_camel_case() {
        let event = WinnerEvent {
            campaign: "launch".into(),
            user_id: "u-1".into(),
            ordinal: 1,
            sequence: 42,
            admitted_at: "2026-11-26T10:00:00.123Z".parse().unwrap(),
        };
        let payload = event.to_payload();
        let text = std::str::from_utf8(&payload).unwrap();
        assert!(text.contains(r#""userId":"u-1""#), "{text}");
        assert!(
            text.contains(r#""admittedAt":"2026-11-26T10:00:00.123Z""#),
            "{text}"
        );
        assert_eq!(WinnerEvent::from_payload(&payload).unwrap(), event);
    }

    #[test]
    fn events_belong_only_to_their_campaign_from_one() {
        let event = WinnerEvent {
            campaign: "a".into(),
            user_id: "u".into(),
            ordinal: 1,
            sequence: 1,
            admitted_at: "2026-11-26T10:00:00Z".parse().unwrap(),
        };
        assert_eq!(event.check_belongs_to("a"), Ok(()));
        assert!(event.check_belongs_to("b").is_err());
        let zero_ordinal = WinnerEvent {
            ordinal: 0,
            ..event.clone()
        };
        assert!(zero_ordinal.check_belongs_to("a").is_err());
        let zero_sequence = WinnerEvent {
            sequence: 0,
            ..event
        };
        assert!(zero_sequence.check_belongs_to("a").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(WinnerEvent::from_payload(b"\xff not json").is_err());
        assert!(WinnerEvent::from_payload(br#"{"campaign":"x"}"#).is_err());
    }
}
