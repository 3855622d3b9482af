//! Consumed messages, and the ones that could not become coupons (failed events): kept
//! with where they came from, a reason and an error, so nothing consumed is dropped.

use firstcome_contract::WinnerEvent;

/// Where a consumed message sits on its topic, and its payload as consumed.
#[derive(Clone, Debug)]
pub struct EventSource {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
}

/// A decoded winner event of the consumer's campaign, with its source.
#[derive(Clone, Debug)]
pub struct ConsumedWinner {
    pub event: WinnerEvent,
    pub source: EventSource,
}

/// Why a message is a failed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Undecodable, or not a winner of the campaign whose stream carried it.
    InvalidEvent,
    /// Its sequence is another user's coupon: the admission state it came from had lost
    /// admissions and handed the sequence out twice. The first holder keeps the coupon.
    SequenceConflict,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidEvent => "invalid_event",
            Self::SequenceConflict => "sequence_conflict",
        }
    }
}

/// A message that could not become a coupon.
#[derive(Clone, Debug)]
pub struct FailedEvent {
    pub source: EventSource,
    pub campaign: Option<String>,
    pub reason: FailureReason,
    pub error: String,
}

impl FailedEvent {
    /// A winner whose sequence `holder` already holds.
    pub fn sequence_conflict(winner: &ConsumedWinner, holder: &str) -> Self {
        let event = &winner.event;
        Self {
            source: winner.source.clone(),
            campaign: Some(event.campaign.clone()),
            reason: FailureReason::SequenceConflict,
            error: format!(
                "sequence {} of campaign {:?} is held by another user ({holder:?}); {:?} gets no coupon from it",
                event.sequence, event.campaign, event.user_id
            ),
        }
    }
}
