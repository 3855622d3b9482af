//! The history of a chaos run as its clients saw it: every apply attempt, with the times
//! it was sent and answered and what came back. The checker reads it (and only it, the
//! database and the topic).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one attempt got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer: its status, the body's `reason`, and the sequences it names
    /// (`sequence` of a 201, `sequences` of a 409).
    Http {
        status: u16,
        reason: String,
        sequences: Vec<i64>,
    },
    /// No answer: the connection broke or the attempt timed out after the request went
    /// out, so it may have been admitted.
    NoAnswer { error: String },
    /// No issuer took the connection: the request never went out.
    Unreached { error: String },
    /// A campaign's waiting room told the user it is sold out (their ticket read
    /// `sold_out`): the promise a `410 sold_out` makes, given before any apply.
    RoomSoldOut,
}

impl Answer {
    /// The answer to an HTTP status and JSON body.
    pub fn http(status: u16, body: &serde_json::Value) -> Self {
        let sequences = match (&body["sequence"], &body["sequences"]) {
            (serde_json::Value::Number(n), _) => n.as_i64().into_iter().collect(),
            (_, serde_json::Value::Array(all)) => all.iter().filter_map(|s| s.as_i64()).collect(),
            _ => Vec::new(),
        };
        Self::Http {
            status,
            reason: body["reason"].as_str().unwrap_or_default().to_string(),
            sequences,
        }
    }

    /// `201 admitted` with its sequence.
    pub fn admitted(sequence: i64) -> Self {
        Self::Http {
            status: 201,
            reason: "admitted".into(),
            sequences: vec![sequence],
        }
    }

    /// An answer that is not a 201, with its reason.
    pub fn refused(status: u16, reason: &str) -> Self {
        Self::Http {
            status,
            reason: reason.into(),
            sequences: Vec::new(),
        }
    }
}

/// One apply attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Index of the campaign in the run's plan.
    pub campaign: usize,
    pub user: String,
    /// Index of the API issuer it was sent to.
    pub issuer: usize,
    /// From the run's start.
    pub sent: Duration,
    pub answered: Duration,
    pub answer: Answer,
}

/// Attempts recorded by concurrent clients, timed from the run's start.
pub struct History {
    started: Instant,
    attempts: Mutex<Vec<Attempt>>,
}

impl History {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            attempts: Mutex::new(Vec::new()),
        }
    }

    /// Time since the run's start.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records an attempt sent at `sent` and answered now.
    pub fn record(
        &self,
        campaign: usize,
        user: &str,
        issuer: usize,
        sent: Duration,
        answer: Answer,
    ) {
        let attempt = Attempt {
            campaign,
            user: user.to_string(),
            issuer,
            sent,
            answered: self.now(),
            answer,
        };
        self.attempts
            .lock()
            .expect("no client panics holding the history")
            .push(attempt);
    }

    /// Every attempt, by the time it was answered.
    pub fn attempts(&self) -> Vec<Attempt> {
        let mut all = self
            .attempts
            .lock()
            .expect("no client panics holding the history")
            .clone();
        all.sort_by_key(|a| a.answered);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_keep_the_sequences_they_name() {
        assert_eq!(
            Answer::http(
                201,
                &json!({"reason": "admitted", "sequence": 7, "ordinal": 1})
            ),
            Answer::admitted(7)
        );
        assert_eq!(
            Answer::http(
                409,
                &json!({"reason": "already_applied", "sequences": [3, 9]})
            ),
            Answer::Http {
                status: 409,
                reason: "already_applied".into(),
                sequences: vec![3, 9]
            }
        );
        assert_eq!(
            Answer::http(503, &serde_json::Value::Null),
            Answer::refused(503, "")
        );
    }
}
