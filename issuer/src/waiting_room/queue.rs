//! The waiting rooms in Redis: joining, polling and admitting, each one Lua script over
//! the keys of one campaign (one hash tag, so one slot on Redis Cluster), on the shared
//! multiplexed connection. Redis time decides every "now", never an issuer's clock.

use firstcome_contract::{CampaignKeys, RedisConnection, WaitingRoom};
use redis::AsyncCommands;

use super::place::Held;

const JOIN_SCRIPT: &str = include_str!("join.lua");
const POLL_SCRIPT: &str = include_str!("poll.lua");
const ADMIT_SCRIPT: &str = include_str!("admit.lua");
/// Most tickets one admission run drops for not being polled; the rest go in later runs
/// (and are never admitted meanwhile: each admitted ticket is checked too).
const STALE_PER_RUN: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from a waiting-room script: {0}")]
    UnexpectedReply(String),
}

/// What a join found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// A new place in the queue.
    New,
    /// The ticket already waits or holds an unexpired pass.
    Again,
}

/// What Redis holds of one ticket, read in one step with the campaign's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Polled {
    pub held: Held,
    pub user: String,
    /// When the ticket joined (Redis time, ms).
    pub joined_ms: u64,
    /// The n-th admission of the room, once admitted.
    pub admission: Option<u64>,
    /// Redis time when read (ms).
    pub now_ms: u64,
    pub sold_out: bool,
}

/// One admission run: tickets still waiting, and how long each user let in waited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionRun {
    pub waiting: u64,
    pub waits_ms: Vec<u64>,
}

#[derive(Clone)]
pub struct RoomQueue {
    conn: RedisConnection,
    join: redis::Script,
    poll: redis::Script,
    admit: redis::Script,
}

impl RoomQueue {
    pub fn new(conn: RedisConnection) -> Self {
        Self {
            conn,
            join: redis::Script::new(JOIN_SCRIPT),
            poll: redis::Script::new(POLL_SCRIPT),
            admit: redis::Script::new(ADMIT_SCRIPT),
        }
    }

    /// Queues `ticket` of `user`: at `prequeue_score` before `opens_ms`, FIFO from then.
    pub async fn join(
        &self,
        keys: &CampaignKeys,
        (ticket, user): (&str, &str),
        prequeue_score: u64,
        opens_ms: u64,
    ) -> Result<Joined, QueueError> {
        let reply: String = self
            .join
            .key(&keys.room_queue)
            .key(&keys.room_seen)
            .key(&keys.room_passes)
            .key(&keys.room_tickets)
            .key(&keys.room_pace)
            .arg(ticket)
            .arg(user)
            .arg(prequeue_score)
            .arg(opens_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply.as_str() {
            "joined" => Ok(Joined::New),
            "waiting" | "admitted" => Ok(Joined::Again),
            _ => Err(QueueError::UnexpectedReply(reply)),
        }
    }

    /// The ticket's state; `None` for a ticket this room never handed out.
    pub async fn poll(
        &self,
        keys: &CampaignKeys,
        ticket: &str,
    ) -> Result<Option<Polled>, QueueError> {
        let reply: Vec<String> = self
            .poll
            .key(&keys.room_queue)
            .key(&keys.room_seen)
            .key(&keys.room_passes)
            .key(&keys.room_tickets)
            .key(&keys.limit)
            .key(&keys.admitted)
            .key(&keys.free)
            .arg(ticket)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if reply.is_empty() {
            return Ok(None);
        }
        parse_poll(&reply)
            .map(Some)
            .ok_or_else(|| QueueError::UnexpectedReply(reply.join(" ")))
    }

    /// Lets in as many users as the room's pace allows now, opening at `opens_ms`.
    pub async fn admit(
        &self,
        keys: &CampaignKeys,
        room: &WaitingRoom,
        opens_ms: u64,
    ) -> Result<AdmissionRun, QueueError> {
        let reply: Vec<u64> = self
            .admit
            .key(&keys.room_queue)
            .key(&keys.room_seen)
            .key(&keys.room_passes)
            .key(&keys.room_tickets)
            .key(&keys.room_pace)
            .key(&keys.limit)
            .key(&keys.admitted)
            .key(&keys.free)
            .arg(room.admission_rate)
            .arg(room.max_active.unwrap_or(0))
            .arg(u64::from(room.pass_ttl_seconds) * 1000)
            .arg(u64::from(room.ticket_timeout_seconds) * 1000)
            .arg(opens_ms)
            .arg(STALE_PER_RUN)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let (waiting, waits) = reply
            .split_first()
            .ok_or_else(|| QueueError::UnexpectedReply("an empty reply".into()))?;
        Ok(AdmissionRun {
            waiting: *waiting,
            waits_ms: waits.to_vec(),
        })
    }

    /// Tickets waiting in the room.
    pub async fn length(&self, keys: &CampaignKeys) -> Result<u64, QueueError> {
        Ok(self.conn.clone().zcard(&keys.room_queue).await?)
    }
}

/// The poll script's reply `{held, entry, now, rank, limit, admitted}`, the entry being
/// `<joined ms> <admission> <pass expiry ms> <user>`.
fn parse_poll(reply: &[String]) -> Option<Polled> {
    let [held, entry, now, rank, limit, admitted] = reply else {
        return None;
    };
    let mut fields = entry.splitn(4, ' ');
    let mut number = || fields.next()?.parse::<u64>().ok();
    let (joined_ms, admission, expires_ms) = (number()?, number()?, number()?);
    let user = fields.next()?.to_string();
    let held = match held.as_str() {
        "waiting" => Held::Waiting {
            rank: rank.parse().ok()?,
        },
        "admitted" => Held::Admitted { expires_ms },
        "lapsed" => Held::Lapsed,
        _ => return None,
    };
    let (limit, admitted): (u64, u64) = (limit.parse().ok()?, admitted.parse().ok()?);
    Some(Polled {
        held,
        user,
        joined_ms,
        admission: (admission > 0).then_some(admission),
        now_ms: now.parse().ok()?,
        sold_out: limit > 0 && admitted >= limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn poll_replies_parse_into_what_redis_holds() {
        let waiting = parse_poll(&reply(&[
            "waiting",
            "1000 0 0 user@x:y",
            "2000",
            "41",
            "100",
            "7",
        ]))
        .unwrap();
        assert_eq!(
            waiting,
            Polled {
                held: Held::Waiting { rank: 41 },
                user: "user@x:y".into(),
                joined_ms: 1000,
                admission: None,
                now_ms: 2000,
                sold_out: false,
            }
        );
        let admitted = parse_poll(&reply(&[
            "admitted",
            "1000 3 9000 bob",
            "2000",
            "0",
            "5",
            "5",
        ]))
        .unwrap();
        assert_eq!(admitted.held, Held::Admitted { expires_ms: 9000 });
        assert_eq!((admitted.admission, admitted.sold_out), (Some(3), true));
        let unprovisioned =
            parse_poll(&reply(&["lapsed", "1000 0 0 bob", "2000", "0", "0", "0"])).unwrap();
        assert_eq!(
            (unprovisioned.held, unprovisioned.sold_out),
            (Held::Lapsed, false)
        );
    }

    #[test]
    fn garbled_poll_replies_are_none() {
        for bad in [
            &["waiting"][..],
            &["what", "1 0 0 u", "2", "0", "0", "0"],
            &["waiting", "1 0 u", "2", "0", "0", "0"],
            &["waiting", "1 0 0 u", "2", "x", "0", "0"],
        ] {
            assert_eq!(parse_poll(&reply(bad)), None, "{bad:?}");
        }
    }
}
