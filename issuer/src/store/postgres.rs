//! Coupons in PostgreSQL: idempotent batch inserts from the consumer, look-ups and counts
//! for the API. The schema comes from the migrations embedded in the binary.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use firstcome_contract::WinnerEvent;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::IssuedCoupon;
use super::failed_event::{ConsumedWinner, FailedEvent};

#[derive(Debug, thiserror::Error)]
pub enum PostgresStoreError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("postgres migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "no free ordinal of {user:?} in campaign {campaign:?} held for {tries} tries: \
         concurrent transactions kept taking them"
    )]
    OrdinalContended {
        campaign: String,
        user: String,
        tries: u32,
    },
}

/// How many times a winner is placed under its user's lowest free ordinal while
/// concurrent transactions take that ordinal first (each try sees their commits).
const FREE_ORDINAL_TRIES: u32 = 8;

/// What one retry batch of failed events did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryReport {
    pub resolved: u64,
    pub still_failing: u64,
}

/// What persisting one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistReport {
    /// Coupons newly written.
    pub inserted: u64,
    /// Winners whose sequence another user holds, stored as failed events.
    pub conflicts: u64,
}

/// Inserts winners, ignoring those already stored (the same user's coupon: redelivered,
/// or re-published). The sequence decides: a winner whose sequence nobody holds is stored
/// even when its (user, ordinal) holds another sequence, under the user's lowest free
/// ordinal ([`insert_under_free_ordinal`]). Returns how many were new, and the position
/// of every winner whose sequence another user holds, with that holder.
async fn insert_winners<'w>(
    tx: &mut sqlx::PgTransaction<'_>,
    winners: impl Iterator<Item = &'w WinnerEvent> + Clone,
) -> Result<(u64, Vec<(usize, String)>), PostgresStoreError> {
    let campaigns: Vec<&str> = winners.clone().map(|w| w.campaign.as_str()).collect();
    if campaigns.is_empty() {
        return Ok((0, Vec::new()));
    }
    let users: Vec<&str> = winners.clone().map(|w| w.user_id.as_str()).collect();
    let ordinals: Vec<i32> = winners.clone().map(|w| w.ordinal as i32).collect();
    let sequences: Vec<i64> = winners.clone().map(|w| w.sequence as i64).collect();
    let admitted: Vec<DateTime<Utc>> = winners.clone().map(|w| w.admitted_at).collect();
    let inserted = sqlx::query(
        "INSERT INTO coupons (campaign, user_id, ordinal, sequence, admitted_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::int8[], $5::timestamptz[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&campaigns)
    .bind(&users)
    .bind(&ordinals)
    .bind(&sequences)
    .bind(&admitted)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == campaigns.len() as u64 {
        return Ok((inserted, Vec::new()));
    }
    let holders: HashMap<(String, i64), String> = sqlx::query_as::<_, (String, i64, String)>(
        "SELECT c.campaign, c.sequence, c.user_id FROM coupons c \
         JOIN UNNEST($1::text[], $2::int8[]) AS w(campaign, sequence) USING (campaign, sequence)",
    )
    .bind(&campaigns)
    .bind(&sequences)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(campaign, sequence, user)| ((campaign, sequence), user))
    .collect();
    let (mut renumbered, mut conflicts) = (0, Vec::new());
    for (i, winner) in winners.enumerate() {
        let holder = match holders.get(&(winner.campaign.clone(), winner.sequence as i64)) {
            Some(holder) => Some(holder.clone()),
            None => store_under_free_ordinal(tx, winner).await?,
        };
        match holder {
            None => renumbered += 1,
            Some(holder) if holder != winner.user_id => conflicts.push((i, holder)),
            Some(_) => {} // stored already
        }
    }
    Ok((inserted + renumbered, conflicts))
}

/// Stores `winner`, whose sequence nobody held while its (campaign, user, ordinal) held
/// another sequence, under the user's lowest free ordinal. Redis numbers a user's
/// admissions by the sequences it records for them, and after Redis lost one that never
/// reached PostgreSQL (and was restored from it) it numbers the next one again (chaos
/// seed 4103). A concurrent transaction (the other lane, a failed event's retry) may take
/// the ordinal or the sequence first: then it looks again. Returns `None` once it wrote
/// the winner, or the holder of its sequence when another transaction stored it.
async fn store_under_free_ordinal(
    tx: &mut sqlx::PgTransaction<'_>,
    winner: &WinnerEvent,
) -> Result<Option<String>, PostgresStoreError> {
    for _ in 0..FREE_ORDINAL_TRIES {
        if insert_under_free_ordinal(tx, winner).await? > 0 {
            return Ok(None);
        }
        if let Some(holder) = holder_of(tx, winner).await? {
            return Ok(Some(holder));
        }
    }
    Err(PostgresStoreError::OrdinalContended {
        campaign: winner.campaign.clone(),
        user: winner.user_id.clone(),
        tries: FREE_ORDINAL_TRIES,
    })
}

/// The user holding `winner`'s sequence, as committed now.
async fn holder_of(
    tx: &mut sqlx::PgTransaction<'_>,
    winner: &WinnerEvent,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM coupons WHERE campaign = $1 AND sequence = $2")
        .bind(&winner.campaign)
        .bind(winner.sequence as i64)
        .fetch_optional(&mut **tx)
        .await
}

/// One try of [`store_under_free_ordinal`]: how many rows it wrote (0 when a concurrent
/// transaction took the ordinal or the sequence; the insert waits for it to commit).
async fn insert_under_free_ordinal(
    tx: &mut sqlx::PgTransaction<'_>,
    winner: &WinnerEvent,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO coupons (campaign, user_id, ordinal, sequence, admitted_at) \
         SELECT $1, $2, min(o), $3, $4 \
         FROM generate_series(1, (SELECT count(*) + 1 FROM coupons \
                                  WHERE campaign = $1 AND user_id = $2)) AS o \
         WHERE NOT EXISTS (SELECT 1 FROM coupons \
                           WHERE campaign = $1 AND user_id = $2 AND ordinal = o) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&winner.campaign)
    .bind(&winner.user_id)
    .bind(winner.sequence as i64)
    .bind(winner.admitted_at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if written > 0 {
        tracing::warn!(
            user = %winner.user_id,
            ordinal = winner.ordinal,
            sequence = winner.sequence,
            "winner stored under another ordinal: the user's ordinal held another sequence"
        );
    }
    Ok(written)
}

async fn insert_failed(
    tx: &mut sqlx::PgTransaction<'_>,
    event: &FailedEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO failed_events (topic, partition, \"offset\", campaign, payload, reason, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
    )
    .bind(&event.source.topic)
    .bind(event.source.partition)
    .bind(event.source.offset)
    .bind(&event.campaign)
    .bind(&event.source.payload)
    .bind(event.reason.as_str())
    .bind(&event.error)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// The winner a failed event's payload now decodes into, if it belongs to `campaign`
/// (the campaign whose stream carried it, when known).
fn decode_failed(campaign: Option<&str>, payload: Option<&[u8]>) -> Result<WinnerEvent, String> {
    let payload = payload.ok_or("no payload")?;
    let event = WinnerEvent::from_payload(payload).map_err(|e| e.to_string())?;
    let campaign = campaign.unwrap_or(&event.campaign);
    event
        .check_belongs_to(campaign)
        .map_err(|e| e.to_string())?;
    Ok(event)
}

#[derive(Clone)]
pub struct CouponStore {
    pool: PgPool,
}

impl CouponStore {
    /// Connects and applies the embedded migrations (serialized across processes by
    /// sqlx's advisory lock).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, PostgresStoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Persists a batch in one transaction: winners already stored are ignored, failed
    /// events already stored too; a winner whose sequence another user holds becomes a
    /// failed event (`sequence_conflict`) and the rest of the batch is persisted.
    pub async fn persist(
        &self,
        winners: &[ConsumedWinner],
        failed: &[FailedEvent],
    ) -> Result<PersistReport, PostgresStoreError> {
        let mut tx = self.pool.begin().await?;
        let (inserted, conflicts) =
            insert_winners(&mut tx, winners.iter().map(|w| &w.event)).await?;
        let conflicts: Vec<FailedEvent> = conflicts
            .iter()
            .map(|(i, holder)| FailedEvent::sequence_conflict(&winners[*i], holder))
            .collect();
        for event in failed.iter().chain(&conflicts) {
            insert_failed(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(PersistReport {
            inserted,
            conflicts: conflicts.len() as u64,
        })
    }

    /// Retries every unresolved failed event whose last attempt is older than its backoff
    /// (doubling per attempt, at most an hour): a payload that now decodes into a winner
    /// of its campaign becomes a coupon (idempotently) and the event is marked resolved;
    /// the others stay visible with their error and one more attempt counted.
    pub async fn retry_failed_events(&self) -> Result<RetryReport, PostgresStoreError> {
        let due: Vec<(i64, Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, campaign, payload FROM failed_events WHERE resolved_at IS NULL \
             AND last_attempt_at + least(interval '1 second' * power(2, attempts), interval '1 hour') <= now() \
             ORDER BY id LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut report = RetryReport::default();
        for (id, campaign, payload) in due {
            match self
                .retry_failed_event(id, campaign.as_deref(), payload.as_deref())
                .await?
            {
                true => report.resolved += 1,
                false => report.still_failing += 1,
            }
        }
        Ok(report)
    }

    /// One retry of one failed event, in its own transaction; whether it became a coupon.
    async fn retry_failed_event(
        &self,
        id: i64,
        campaign: Option<&str>,
        payload: Option<&[u8]>,
    ) -> Result<bool, PostgresStoreError> {
        let event = match decode_failed(campaign, payload) {
            Ok(event) => event,
            Err(error) => return self.record_attempt(id, &error).await.map(|()| false),
        };
        let mut tx = self.pool.begin().await?;
        let error = match insert_winners(&mut tx, std::iter::once(&event)).await {
            Ok((_, conflicts)) => conflicts
                .first()
                .map(|(_, holder)| format!("sequence {} is held by {holder:?}", event.sequence)),
            Err(error) => Some(error.to_string()),
        };
        if let Some(error) = error {
            drop(tx);
            return self.record_attempt(id, &error).await.map(|()| false);
        }
        sqlx::query("UPDATE failed_events SET resolved_at = now(), attempts = attempts + 1, last_attempt_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Counts one more failed attempt of a failed event, with its latest error.
    async fn record_attempt(&self, id: i64, error: &str) -> Result<(), PostgresStoreError> {
        sqlx::query("UPDATE failed_events SET attempts = attempts + 1, last_attempt_at = now(), error = $2 WHERE id = $1")
            .bind(id)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn coupons_of(
        &self,
        campaign: &str,
        user: &str,
    ) -> Result<Vec<IssuedCoupon>, PostgresStoreError> {
        let rows = sqlx::query(
            "SELECT sequence, ordinal, coupon_id, admitted_at, issued_at FROM coupons \
             WHERE campaign = $1 AND user_id = $2 ORDER BY ordinal",
        )
        .bind(campaign)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(IssuedCoupon {
                    sequence: row.try_get::<i64, _>("sequence")? as u64,
                    ordinal: row.try_get::<i32, _>("ordinal")? as u32,
                    coupon_id: row.try_get("coupon_id")?,
                    admitted_at: row.try_get("admitted_at")?,
                    issued_at: row.try_get("issued_at")?,
                })
            })
            .collect()
    }

    /// Every holder of the campaign with their sequences, by ordinal.
    pub async fn holders_of(
        &self,
        campaign: &str,
    ) -> Result<Vec<(String, Vec<u64>)>, PostgresStoreError> {
        let rows: Vec<(String, Vec<i64>)> = sqlx::query_as(
            "SELECT user_id, array_agg(sequence ORDER BY ordinal) FROM coupons WHERE campaign = $1 GROUP BY user_id",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(user, held)| (user, held.into_iter().map(|s| s as u64).collect()))
            .collect())
    }

    /// The highest sequence persisted for the campaign (0 when none is).
    pub async fn highest_sequence(&self, campaign: &str) -> Result<u64, PostgresStoreError> {
        let highest: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM coupons WHERE campaign = $1")
                .bind(campaign)
                .fetch_one(&self.pool)
                .await?;
        Ok(highest.unwrap_or(0) as u64)
    }

    pub async fn issued_count(&self, campaign: &str) -> Result<u64, PostgresStoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM coupons WHERE campaign = $1")
            .bind(campaign)
            .fetch_one(&self.pool)
            .await?;
        Ok(count as u64)
    }

    pub async fn ping(&self) -> Result<(), PostgresStoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
