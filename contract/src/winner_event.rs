//! The message an issuer publishes on the campaign topic for every admitted winner.
//!
//! Keyed by user id. Consumers persist it idempotently on (campaign, user id, ordinal), so
//! publishing the same event twice never creates a second coupon.

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

impl WinnerEvent {
    /// The Kafka message key: all events of one user land on one partition, in order.
    pub fn key(&self) -> &str {
        &self.user_id
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
    fn garbage_is_an_error_not_a_panic() {
        assert!(WinnerEvent::from_payload(b"\xff not json").is_err());
        assert!(WinnerEvent::from_payload(br#"{"campaign":"x"}"#).is_err());
    }
}
