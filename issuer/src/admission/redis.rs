//! Admission in Redis: one Lua script call per batch of concurrent applies of a campaign
//! ([`super::batch`]), on one multiplexed connection shared by every request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use firstcome_contract::{CampaignConfig, CampaignKeys, RedisTarget, decode_held, encode_held};
use redis::AsyncCommands;
use tracing::Instrument;

use super::batch::{BatchQueue, Job, WorkerGone};
use super::{Admission, Counts, Outcome};
use firstcome_contract::RedisConnection;

const ADMIT_SCRIPT: &str = include_str!("admit.lua");
const RESTORE_SCRIPT: &str = include_str!("restore.lua");
const FENCE_SCRIPT: &str = include_str!("fence.lua");
const LEASE_SCRIPT: &str = include_str!("lease.lua");
/// Holders written per command while restoring.
const RESTORE_CHUNK: usize = 1000;

#[derive(Clone, Debug, thiserror::Error)]
pub enum RedisAdmissionError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("campaign {0} has no admission state in Redis: it is not provisioned (yet)")]
    Unprovisioned(String),
    /// The command was sent and may have run, but no answer came back (a timeout, a
    /// dropped connection).
    #[error("redis did not answer (the command may have run): {0}")]
    Unanswered(#[source] redis::RedisError),
    #[error("unexpected reply from the admission script: {0:?}")]
    UnexpectedReply(String),
    #[error(transparent)]
    WorkerGone(#[from] WorkerGone),
}

impl RedisAdmissionError {
    /// Whether the admission script may have run although its answer is not known: it
    /// was sent and not answered, or it answered something not understood.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Unanswered(_) | Self::UnexpectedReply(_))
    }
}

/// One apply, as the admission script takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Apply {
    pub user: String,
    pub per_user_limit: u32,
    /// Unique per apply: a re-sent script answers what its first run did.
    pub attempt: String,
}

/// Sequences whose pending marks go, one `HDEL` per batch.
type ConfirmAnswer = Result<(), RedisAdmissionError>;
type ConfirmQueue = BatchQueue<u64, ConfirmAnswer>;

/// Least time between two `HDEL`s of one campaign's pending marks: the marks of the acks
/// that come meanwhile go in the next one (without it, about one `HDEL` per admission
/// batch, each a Redis round trip). A mark cleared this much later changes nothing: the
/// re-publisher takes only marks older than the longest ack wait, and an apply again by
/// its winner checks the topic first (an unread, still-marked sequence is published
/// again, a duplicate that persistence ignores).
const CLEAR_GATHER: Duration = Duration::from_millis(10);

/// A winner whose event is not yet confirmed by the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingWinner {
    pub user_id: String,
    pub admission: Admission,
}

/// What [`RedisAdmission::restore`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    Restored,
    /// Another issuer restored it first, or it was never lost.
    AlreadyProvisioned,
    /// The operator deleted the campaign: nothing was written.
    Deleted,
}

#[derive(Clone)]
pub struct RedisAdmission {
    conn: RedisConnection,
    script: redis::Script,
    /// One batching worker per campaign (by its pending marks' key) clearing the marks of
    /// published winners, started on its first confirmation.
    confirms: Arc<Mutex<HashMap<String, ConfirmQueue>>>,
}

impl RedisAdmission {
    pub async fn connect(
        target: &RedisTarget,
        timeout: Duration,
    ) -> Result<Self, RedisAdmissionError> {
        let conn = RedisConnection::connect(target, timeout).await?;
        Ok(Self {
            conn,
            script: redis::Script::new(ADMIT_SCRIPT),
            confirms: Arc::default(),
        })
    }

    /// The connection, shared (e.g. by the waiting rooms, whose keys live beside the
    /// campaign's).
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// The campaign's counter (the highest sequence handed out, not the number of
    /// admissions: see [`Self::counts`]), if Redis holds its admission state.
    pub async fn counter(&self, keys: &CampaignKeys) -> Result<Option<u64>, RedisAdmissionError> {
        Ok(self.conn.clone().get(&keys.admitted).await?)
    }

    /// Whether Redis holds the campaign's admission state (its counter exists).
    pub async fn is_provisioned(&self, keys: &CampaignKeys) -> Result<bool, RedisAdmissionError> {
        Ok(self.conn.clone().exists(&keys.admitted).await?)
    }

    /// Whether the operator deleted the campaign (its tombstone is there).
    pub async fn is_deleted(&self, keys: &CampaignKeys) -> Result<bool, RedisAdmissionError> {
        Ok(self.conn.clone().exists(&keys.deleted).await?)
    }

    /// Recreates the campaign's counter and holders from `holders` (what PostgreSQL
    /// holds), unless another issuer did it first or the campaign was deleted; writes the
    /// configured limit only if none is there (the limit of a running campaign belongs to
    /// its manager).
    pub async fn restore(
        &self,
        campaign: &CampaignConfig,
        keys: &CampaignKeys,
        holders: &[(String, Vec<u64>)],
    ) -> Result<Restore, RedisAdmissionError> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(&keys.restoring).await?;
        for chunk in holders.chunks(RESTORE_CHUNK) {
            let fields: Vec<(&str, String)> = chunk
                .iter()
                .map(|(user, held)| (user.as_str(), encode_held(held)))
                .collect();
            let _: () = conn.hset_multiple(&keys.restoring, &fields).await?;
        }
        let (highest, free) = free_sequences(holders);
        let restored: i64 = redis::Script::new(RESTORE_SCRIPT)
            .key(&keys.admitted)
            .key(&keys.holders)
            .key(&keys.restoring)
            .key(&keys.limit)
            .key(&keys.deleted)
            .key(&keys.free)
            .arg(highest)
            .arg(campaign.limit)
            .arg(free)
            .invoke_async(&mut conn)
            .await?;
        match restored {
            0 => Ok(Restore::AlreadyProvisioned),
            1 => Ok(Restore::Restored),
            2 => Ok(Restore::Deleted),
            other => Err(RedisAdmissionError::UnexpectedReply(format!(
                "restore script answered {other}"
            ))),
        }
    }

    /// Runs the admission script: the whole decision in one atomic step, as one new
    /// attempt.
    pub async fn run_admission_script(
        &self,
        campaign: &CampaignConfig,
        keys: &CampaignKeys,
        user: &str,
    ) -> Result<Outcome, RedisAdmissionError> {
        self.run_admission_attempt(campaign, keys, user, &new_attempt())
            .await
    }

    /// Runs the admission script for `attempt`: run again with the same attempt (as a
    /// connection that re-sends does), it answers what its first run did. One script call
    /// for this apply alone (the issuer batches a campaign's applies in
    /// `Distributed`'s admission worker).
    pub async fn run_admission_attempt(
        &self,
        campaign: &CampaignConfig,
        keys: &CampaignKeys,
        user: &str,
        attempt: &str,
    ) -> Result<Outcome, RedisAdmissionError> {
        let apply = Apply {
            user: user.to_string(),
            per_user_limit: campaign.per_user_limit,
            attempt: attempt.to_string(),
        };
        let mut outcomes = self
            .run_admission_batch(&campaign.name, keys, &[apply])
            .await;
        outcomes.pop().expect("one outcome per apply")
    }

    /// Runs the admission script once over `applies`, in order: each gets the answer it
    /// would get alone in that order.
    pub async fn run_admission_batch(
        &self,
        campaign: &str,
        keys: &CampaignKeys,
        applies: &[Apply],
    ) -> Vec<Result<Outcome, RedisAdmissionError>> {
        run_batch(
            &mut self.conn.clone(),
            &self.script,
            campaign,
            keys,
            applies,
        )
        .await
    }

    /// Deletes the campaign's counter if Redis is behind the durable record: its counter
    /// is below `highest` (the highest sequence on the topic), or it does not record that
    /// `holder` holds their sequence. Returns whether it fenced.
    pub async fn fence(
        &self,
        keys: &CampaignKeys,
        highest: u64,
        holder: Option<(&str, u64)>,
    ) -> Result<bool, RedisAdmissionError> {
        let script = redis::Script::new(FENCE_SCRIPT);
        let mut invocation = script.key(&keys.admitted);
        invocation.key(&keys.holders).arg(highest);
        if let Some((user, sequence)) = holder {
            invocation.arg(user).arg(sequence);
        }
        let fenced: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(fenced == 1)
    }

    /// Takes the campaign's re-publishing lease for `holder`, or extends it if `holder`
    /// holds it, for `length`; true when `holder` holds it now. The lease spares the
    /// broker one copy of a backlog per replica; it is not needed for correctness (should
    /// two issuers both re-publish, persistence ignores the duplicates).
    pub async fn hold_republish_lease(
        &self,
        keys: &CampaignKeys,
        holder: &str,
        length: Duration,
    ) -> Result<bool, RedisAdmissionError> {
        let length_ms = length.as_millis().max(1) as u64;
        self.lease(keys, holder, length_ms).await
    }

    /// Gives the campaign's re-publishing lease up if `holder` holds it: another issuer
    /// takes it on its next pass.
    pub async fn release_republish_lease(
        &self,
        keys: &CampaignKeys,
        holder: &str,
    ) -> Result<(), RedisAdmissionError> {
        self.lease(keys, holder, 0).await.map(|_| ())
    }

    async fn lease(
        &self,
        keys: &CampaignKeys,
        holder: &str,
        length_ms: u64,
    ) -> Result<bool, RedisAdmissionError> {
        let held: i64 = redis::Script::new(LEASE_SCRIPT)
            .key(&keys.republisher)
            .arg(holder)
            .arg(length_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(held == 1)
    }

    /// Waits (Redis `WAIT`) until `replicas` replicas acknowledged every write of this
    /// connection so far, at most `timeout`; returns how many did.
    pub async fn wait_for_replicas(
        &self,
        replicas: u32,
        timeout: Duration,
    ) -> Result<u32, RedisAdmissionError> {
        let acked: u32 = redis::cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis() as u64)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(acked)
    }

    /// The broker has the winner's event: it no longer needs re-publishing. Concurrent
    /// confirmations of one campaign share one `HDEL`.
    pub async fn confirm_published(
        &self,
        keys: &CampaignKeys,
        sequence: u64,
    ) -> Result<(), RedisAdmissionError> {
        self.confirm_queue(keys).submit(sequence).await?
    }

    /// As [`Self::confirm_published`], without waiting for it: the mark goes with the
    /// next `HDEL` of the campaign's marks. A failure is logged by the worker and only
    /// costs a duplicate publish later, which persistence ignores.
    pub fn clear_pending(&self, keys: &CampaignKeys, sequence: u64) {
        if self.confirm_queue(keys).send(sequence).is_err() {
            tracing::warn!(
                sequence,
                "cannot clear the pending mark: its worker stopped"
            );
        }
    }

    /// The worker clearing the pending marks of the campaign whose keys are `keys`: one
    /// `HDEL` for the marks waiting, its answers, then [`CLEAR_GATHER`] before the next.
    fn confirm_queue(&self, keys: &CampaignKeys) -> ConfirmQueue {
        BatchQueue::keyed(&self.confirms, &keys.pending, || {
            let (conn, pending) = (self.conn.clone(), keys.pending.clone());
            BatchQueue::spawn_replying(move |jobs: Vec<Job<u64, ConfirmAnswer>>| {
                let (mut conn, pending) = (conn.clone(), pending.clone());
                async move {
                    let (sequences, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
                    let cleared: Result<i64, _> = conn.hdel(&pending, &sequences).await;
                    if let Err(error) = &cleared {
                        tracing::warn!(
                            %error,
                            winners = sequences.len(),
                            "cannot clear the pending marks of published winners"
                        );
                    }
                    let answer = cleared.map(|_| ()).map_err(RedisAdmissionError::from);
                    for reply in replies {
                        reply.send(answer.clone());
                    }
                    tokio::time::sleep(CLEAR_GATHER).await;
                }
            })
        })
    }

    /// The admissions among `sequences` whose events are not confirmed yet.
    pub async fn pending_of(
        &self,
        keys: &CampaignKeys,
        sequences: &[u64],
    ) -> Result<Vec<PendingWinner>, RedisAdmissionError> {
        let entries: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&keys.pending)
            .arg(sequences)
            .query_async(&mut self.conn.clone())
            .await?;
        (sequences.iter().zip(entries))
            .filter_map(|(sequence, entry)| entry.map(|entry| (*sequence, entry)))
            .map(|(sequence, entry)| {
                parse_pending(sequence, &entry).ok_or(RedisAdmissionError::UnexpectedReply(entry))
            })
            .collect()
    }

    /// How many admissions' events are not confirmed yet.
    pub async fn pending_count(&self, keys: &CampaignKeys) -> Result<usize, RedisAdmissionError> {
        Ok(self.conn.clone().hlen(&keys.pending).await?)
    }

    /// Admissions whose events were not confirmed yet, read in chunks (`HSCAN`): while
    /// the broker is down mid-spike the backlog can hold a whole campaign, and one
    /// `HGETALL` of it would block every admission behind it.
    pub async fn pending(
        &self,
        keys: &CampaignKeys,
    ) -> Result<Vec<PendingWinner>, RedisAdmissionError> {
        use futures::StreamExt;
        let mut conn = self.conn.clone();
        let mut iter = conn.hscan::<_, (u64, String)>(&keys.pending).await?;
        // HSCAN may return an entry twice; one per sequence.
        let mut entries = HashMap::new();
        while let Some(item) = iter.next().await {
            let (sequence, entry) = item?;
            entries.insert(sequence, entry);
        }
        entries
            .into_iter()
            .map(|(sequence, entry)| {
                parse_pending(sequence, &entry).ok_or(RedisAdmissionError::UnexpectedReply(entry))
            })
            .collect()
    }

    pub async fn held_by(
        &self,
        keys: &CampaignKeys,
        user: &str,
    ) -> Result<Vec<u64>, RedisAdmissionError> {
        let held: Option<String> = self.conn.clone().hget(&keys.holders, user).await?;
        Ok(held.as_deref().map(decode_held).unwrap_or_default())
    }

    /// Every holder of the campaign, read in chunks so a big campaign never blocks Redis.
    pub async fn holders(
        &self,
        keys: &CampaignKeys,
    ) -> Result<HashMap<String, Vec<u64>>, RedisAdmissionError> {
        use futures::StreamExt;
        let mut conn = self.conn.clone();
        let mut iter = conn.hscan::<_, (String, String)>(&keys.holders).await?;
        let mut holders = HashMap::new();
        while let Some(item) = iter.next().await {
            let (user, held) = item?;
            holders.insert(user, decode_held(&held));
        }
        Ok(holders)
    }

    /// The limit and the admissions: the counter less the sequences free below it.
    pub async fn counts(&self, keys: &CampaignKeys) -> Result<Counts, RedisAdmissionError> {
        let (limit, counter, free): (Option<u64>, Option<u64>, u64) = redis::pipe()
            .get(&keys.limit)
            .get(&keys.admitted)
            .zcard(&keys.free)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(Counts {
            limit: limit.unwrap_or(0),
            admitted: counter.unwrap_or(0).saturating_sub(free),
        })
    }

    pub async fn ping(&self) -> Result<(), RedisAdmissionError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// The counter a restore of `holders` sets (the highest sequence held) and the sequences
/// below it that nobody holds: Redis lost their admissions before any reached the topic,
/// so nobody was told `admitted` for them, and they are given again.
fn free_sequences(holders: &[(String, Vec<u64>)]) -> (u64, Vec<u64>) {
    let held: std::collections::HashSet<u64> =
        holders.iter().flat_map(|(_, held)| held).copied().collect();
    let highest = held.iter().max().copied().unwrap_or(0);
    let free = (1..highest).filter(|s| !held.contains(s)).collect();
    (highest, free)
}

/// A new attempt id, unique across every issuer and restart: this process's random
/// prefix (a v4 UUID, drawn once) and a counter, so an apply costs no random draw (a
/// `getrandom` system call each) and the ids of one process never repeat.
pub(crate) fn new_attempt() -> String {
    static PREFIX: LazyLock<String> =
        LazyLock::new(|| uuid::Uuid::new_v4().as_simple().to_string());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The prefix has a fixed length, so prefix and counter never run into each other.
    format!("{}{:x}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One call of the admission script over `applies`; a failed call fails every apply.
async fn run_batch(
    conn: &mut RedisConnection,
    script: &redis::Script,
    campaign: &str,
    keys: &CampaignKeys,
    applies: &[Apply],
) -> Vec<Result<Outcome, RedisAdmissionError>> {
    let mut invocation = script.key(&keys.limit);
    invocation
        .key(&keys.admitted)
        .key(&keys.holders)
        .key(&keys.pending)
        .key(&keys.attempts)
        .key(&keys.free);
    for apply in applies {
        invocation
            .arg(&apply.user)
            .arg(apply.per_user_limit)
            .arg(&apply.attempt);
    }
    let replies: Result<Vec<String>, _> = invocation
        .invoke_async(conn)
        .instrument(tracing::info_span!(
            "admission_batch",
            applies = applies.len()
        ))
        .await;
    match replies {
        Ok(replies) if replies.len() == applies.len() => replies
            .iter()
            .map(|reply| parse_reply(reply, campaign))
            .collect(),
        Ok(replies) => {
            let error = RedisAdmissionError::UnexpectedReply(format!(
                "{} replies to {} applies",
                replies.len(),
                applies.len()
            ));
            vec![Err(error); applies.len()]
        }
        Err(error) if conn.may_have_run(&error) => {
            vec![Err(RedisAdmissionError::Unanswered(error)); applies.len()]
        }
        Err(error) => vec![Err(error.into()); applies.len()],
    }
}

fn parse_reply(reply: &str, campaign: &str) -> Result<Outcome, RedisAdmissionError> {
    let unexpected = || RedisAdmissionError::UnexpectedReply(reply.to_string());
    let mut words = reply.split(' ');
    match words.next() {
        Some("admitted") => {
            let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
            let (Some(sequence), Some(ordinal), Some(ms)) = (number(), number(), number()) else {
                return Err(unexpected());
            };
            Ok(Outcome::Admitted(Admission {
                sequence,
                ordinal: u32::try_from(ordinal).map_err(|_| unexpected())?,
                admitted_at: from_millis(ms).ok_or_else(unexpected)?,
            }))
        }
        Some("already") => Ok(Outcome::AlreadyApplied(decode_held(
            words.next().unwrap_or_default(),
        ))),
        Some("sold_out") => Ok(Outcome::SoldOut),
        Some("unprovisioned") => Err(RedisAdmissionError::Unprovisioned(campaign.to_string())),
        _ => Err(unexpected()),
    }
}

fn parse_pending(sequence: u64, entry: &str) -> Option<PendingWinner> {
    let mut parts = entry.splitn(3, ' ');
    let ms = parts.next()?.parse().ok()?;
    let ordinal = parts.next()?.parse().ok()?;
    let user_id = parts.next()?.to_string();
    Some(PendingWinner {
        user_id,
        admission: Admission {
            sequence,
            ordinal,
            admitted_at: from_millis(ms)?,
        },
    })
}

fn from_millis(ms: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_frees_the_sequences_nobody_holds_below_the_highest() {
        let holders = [
            ("a".to_string(), vec![1, 5]),
            ("b".to_string(), vec![2]),
            ("c".to_string(), vec![8]),
        ];
        assert_eq!(free_sequences(&holders), (8, vec![3, 4, 6, 7]));
        assert_eq!(free_sequences(&[]), (0, vec![]));
    }

    #[test]
    fn parses_each_script_reply() {
        let admitted = parse_reply("admitted 7 2 1764150000123", "c").unwrap();
        assert_eq!(
            admitted,
            Outcome::Admitted(Admission {
                sequence: 7,
                ordinal: 2,
                admitted_at: from_millis(1_764_150_000_123).unwrap(),
            })
        );
        assert_eq!(
            parse_reply("already 3,9", "c").unwrap(),
            Outcome::AlreadyApplied(vec![3, 9])
        );
        assert_eq!(parse_reply("sold_out", "c").unwrap(), Outcome::SoldOut);
        assert!(matches!(
            parse_reply("unprovisioned", "c"),
            Err(RedisAdmissionError::Unprovisioned(_))
        ));
        for bad in ["", "admitted", "admitted x 1 2", "what"] {
            assert!(
                matches!(
                    parse_reply(bad, "c"),
                    Err(RedisAdmissionError::UnexpectedReply(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn attempt_ids_never_repeat_and_share_the_process_prefix() {
        let ids: Vec<String> = (0..1000).map(|_| new_attempt()).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| id[..32] == ids[0][..32]), "{ids:?}");
    }

    #[test]
    fn pending_entries_keep_user_ids_with_any_character() {
        let pending = parse_pending(5, "1764150000123 1 user@x:y/é").unwrap();
        assert_eq!(pending.user_id, "user@x:y/é");
        assert_eq!(pending.admission.sequence, 5);
        assert_eq!(pending.admission.ordinal, 1);
        assert_eq!(parse_pending(5, "garbage"), None);
    }
}
