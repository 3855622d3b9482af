//! Coupons in PostgreSQL: idempotent batch inserts from the consumer, look-ups and counts
//! for the API. The schema comes from the migrations embedded in the binary.

use std::time::Duration;

use chrono::{DateTime, Utc};
use firstcome_contract::WinnerEvent;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::IssuedCoupon;

#[derive(Debug, thiserror::Error)]
pub enum PostgresStoreError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("postgres migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A message that could not become a coupon, kept with its error.
#[derive(Clone, Debug)]
pub struct FailedEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub campaign: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub error: String,
}

/// What one retry batch of failed events did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryReport {
    pub resolved: u64,
    pub still_failing: u64,
}

/// Inserts winners, ignoring those already stored; returns how many were new.
async fn insert_winners(
    tx: &mut sqlx::PgTransaction<'_>,
    winners: &[WinnerEvent],
) -> Result<u64, sqlx::Error> {
    if winners.is_empty() {
        return Ok(0);
    }
    let campaigns: Vec<&str> = winners.iter().map(|w| w.campaign.as_str()).collect();
    let users: Vec<&str> = winners.iter().map(|w| w.user_id.as_str()).collect();
    let ordinals: Vec<i32> = winners.iter().map(|w| w.ordinal as i32).collect();
    let sequences: Vec<i64> = winners.iter().map(|w| w.sequence as i64).collect();
    let admitted: Vec<DateTime<Utc>> = winners.iter().map(|w| w.admitted_at).collect();
    Ok(sqlx::query(
        "INSERT INTO coupons (campaign, user_id, ordinal, sequence, admitted_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::int8[], $5::timestamptz[]) \
         ON CONFLICT (campaign, user_id, ordinal) DO NOTHING",
    )
    .bind(&campaigns)
    .bind(&users)
    .bind(&ordinals)
    .bind(&sequences)
    .bind(&admitted)
    .execute(&mut **tx)
    .await?
    .rows_affected())
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
    /// events already stored too. Returns how many coupons were new.
    pub async fn persist(
        &self,
        winners: &[WinnerEvent],
        failed: &[FailedEvent],
    ) -> Result<u64, PostgresStoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_winners(&mut tx, winners).await?;
        for event in failed {
            sqlx::query(
                "INSERT INTO failed_events (topic, partition, \"offset\", campaign, payload, error) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
            )
            .bind(&event.topic)
            .bind(event.partition)
            .bind(event.offset)
            .bind(&event.campaign)
            .bind(&event.payload)
            .bind(&event.error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
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
        if let Err(error) = insert_winners(&mut tx, std::slice::from_ref(&event)).await {
            drop(tx);
            return self
                .record_attempt(id, &error.to_string())
                .await
                .map(|()| false);
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
