//! The Redis key layout of a campaign.
//!
//! All keys of one campaign share the hash tag `{fc:<name>}`, so they live in one slot and
//! the admission script stays valid on Redis Cluster.

/// The keys of one campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignKeys {
    /// The limit (an integer). Written by the operator; a raised limit is seen by running
    /// issuers without a restart.
    pub limit: String,
    /// The admission counter: the highest sequence handed out. The n-th admission gets
    /// sequence number n (unless a sequence [`Self::free`] holds is given first), so it
    /// counts the admissions while nothing is free. Its existence means "provisioned":
    /// only an issuer creates it, from what PostgreSQL holds, so a Redis that lost its
    /// data never admits from zero.
    pub admitted: String,
    /// Hash user id -> the sequence numbers that user holds ([`encode_held`]).
    pub holders: String,
    /// Hash sequence -> `<admitted-at-ms> <ordinal> <user id>`: admissions whose winner
    /// event is not yet confirmed by the broker.
    pub pending: String,
    /// Sorted set of sequences below the counter that nobody holds (score = sequence): a
    /// restore after Redis lost admissions that never reached the topic finds them, and
    /// the admission script gives the lowest of them before counting on. The number of
    /// admissions is the counter minus their number.
    pub free: String,
    /// Staging hash of holders rebuilt from PostgreSQL after Redis lost the campaign;
    /// renamed onto `holders` in the same step that recreates `admitted`.
    pub restoring: String,
    /// Hash attempt id -> the admission script's "admitted" reply, kept a few minutes: a
    /// script re-sent after a dropped connection (the cluster client does) answers what
    /// its first run did instead of admitting twice.
    pub attempts: String,
    /// The issuer re-publishing the campaign's unconfirmed winners (its instance id),
    /// with an expiry: a lease, so that one issuer sends a backlog left by a broker
    /// outage instead of every replica sending it again.
    pub republisher: String,
    /// Waiting room: sorted set ticket -> place (lowest first) of the tickets waiting.
    pub room_queue: String,
    /// Waiting room: sorted set ticket -> when it was last polled (ms), waiting tickets
    /// only; those not polled within the timeout are dropped.
    pub room_seen: String,
    /// Waiting room: sorted set ticket -> when its pass expires (ms), admitted tickets.
    pub room_passes: String,
    /// Waiting room: hash ticket -> `<joined ms> <admission number> <pass expiry ms>
    /// <user id>` (0 for what has not happened), every ticket ever handed out.
    pub room_tickets: String,
    /// Waiting room: hash of the admission pace: `second` (Redis time) and `used` (users
    /// admitted in it), `admitted` (admissions so far), `fifo` (arrivals after opening),
    /// `ran` and `resumed` (the last admission run, the end of the last gap in them; ms).
    pub room_pace: String,
    /// Tombstone the operator leaves when it deletes the campaign (with an expiry): an
    /// issuer still running then never restores the keys it removed. Not one of
    /// [`Self::all`]; the campaign's first provisioning removes it.
    pub deleted: String,
}

impl CampaignKeys {
    pub fn new(campaign: &str) -> Self {
        let tag = format!("{{fc:{campaign}}}");
        Self {
            limit: format!("{tag}:limit"),
            admitted: format!("{tag}:admitted"),
            holders: format!("{tag}:holders"),
            pending: format!("{tag}:pending"),
            free: format!("{tag}:free"),
            restoring: format!("{tag}:restoring"),
            attempts: format!("{tag}:attempts"),
            republisher: format!("{tag}:republisher"),
            room_queue: format!("{tag}:room:queue"),
            room_seen: format!("{tag}:room:seen"),
            room_passes: format!("{tag}:room:passes"),
            room_tickets: format!("{tag}:room:tickets"),
            room_pace: format!("{tag}:room:pace"),
            deleted: format!("{tag}:deleted"),
        }
    }

    /// Every key of the campaign's state, e.g. to delete a campaign (all but the
    /// tombstone, [`Self::deleted`]).
    pub fn all(&self) -> [&str; 13] {
        [
            &self.limit,
            &self.admitted,
            &self.holders,
            &self.pending,
            &self.free,
            &self.restoring,
            &self.attempts,
            &self.republisher,
            &self.room_queue,
            &self.room_seen,
            &self.room_passes,
            &self.room_tickets,
            &self.room_pace,
        ]
    }
}

/// A holder entry's value: the user's sequences, comma separated, by ordinal.
pub fn encode_held(sequences: &[u64]) -> String {
    let mut joined = String::new();
    for (i, sequence) in sequences.iter().enumerate() {
        if i > 0 {
            joined.push(',');
        }
        joined.push_str(&sequence.to_string());
    }
    joined
}

/// The sequences of a holder entry written by [`encode_held`] (or by the admission
/// script, which appends `,<sequence>`); parts that are not numbers are skipped.
pub fn decode_held(held: &str) -> Vec<u64> {
    held.split(',').filter_map(|s| s.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_sequences_round_trip() {
        assert_eq!(encode_held(&[3, 17, 250]), "3,17,250");
        assert_eq!(decode_held(&encode_held(&[3, 17, 250])), vec![3, 17, 250]);
        assert_eq!(encode_held(&[]), "");
        assert_eq!(decode_held(""), Vec::<u64>::new());
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = CampaignKeys::new("launch");
        for key in keys.all().into_iter().chain([keys.deleted.as_str()]) {
            assert!(key.starts_with("{fc:launch}:"), "{key}");
        }
        assert_eq!(keys.limit, "{fc:launch}:limit");
    }
}
