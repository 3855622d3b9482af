//! The standalone issuer's durable ledger: coupons in an embedded SQLite file.
//!
//! Writes go through one writer task that commits whatever has queued up in a single
//! transaction (group commit): one fsync per batch, not per winner, and every winner in
//! the batch is answered only after that fsync.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::IssuedCoupon;

/// Most winners committed in one transaction.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum SqliteStoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("sqlite migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("the ledger writer stopped")]
    WriterGone,
    /// The batch holding this winner failed; every winner of the batch shares its error.
    #[error("writing the batch failed: {0}")]
    BatchFailed(#[source] Arc<sqlx::Error>),
}

/// A winner to be written.
#[derive(Clone, Debug)]
pub struct NewCoupon {
    pub campaign: String,
    pub user_id: String,
    pub ordinal: u32,
    pub sequence: u64,
    pub coupon_id: Uuid,
    pub admitted_at: DateTime<Utc>,
}

/// A coupon row as loaded on start-up to rebuild the admission ledger.
#[derive(Clone, Debug)]
pub struct HeldCoupon {
    pub campaign: String,
    pub user_id: String,
    pub sequence: u64,
}

struct WriteRequest {
    coupon: NewCoupon,
    done: oneshot::Sender<Result<(), Arc<sqlx::Error>>>,
}

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::Sender<WriteRequest>,
}

impl SqliteStore {
    /// Opens (or creates) `dir/firstcome.db`, migrates it and starts the writer task.
    pub async fn open(dir: &Path) -> Result<Self, SqliteStoreError> {
        std::fs::create_dir_all(dir).map_err(|source| SqliteStoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(dir.join("firstcome.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let conn = SqliteConnection::connect_with(&options).await?;
        let (writer, requests) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(conn, requests));
        Ok(Self { pool, writer })
    }

    /// Writes one winner durably; returns once the batch holding it is committed.
    pub async fn record(&self, coupon: NewCoupon) -> Result<(), SqliteStoreError> {
        let (done, committed) = oneshot::channel();
        self.writer
            .send(WriteRequest { coupon, done })
            .await
            .map_err(|_| SqliteStoreError::WriterGone)?;
        committed
            .await
            .map_err(|_| SqliteStoreError::WriterGone)?
            .map_err(SqliteStoreError::BatchFailed)
    }

    pub async fn all_held(&self) -> Result<Vec<HeldCoupon>, SqliteStoreError> {
        let rows = sqlx::query("SELECT campaign, user_id, sequence FROM coupons")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(HeldCoupon {
                    campaign: row.try_get("campaign")?,
                    user_id: row.try_get("user_id")?,
                    sequence: row.try_get::<i64, _>("sequence")? as u64,
                })
            })
            .collect()
    }

    pub async fn coupons_of(
        &self,
        campaign: &str,
        user: &str,
    ) -> Result<Vec<IssuedCoupon>, SqliteStoreError> {
        let rows = sqlx::query(
            "SELECT sequence, ordinal, coupon_id, admitted_at, issued_at FROM coupons \
             WHERE campaign = ? AND user_id = ? ORDER BY ordinal",
        )
        .bind(campaign)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let coupon_id: String = row.try_get("coupon_id")?;
                Ok(IssuedCoupon {
                    sequence: row.try_get::<i64, _>("sequence")? as u64,
                    ordinal: row.try_get::<i64, _>("ordinal")? as u32,
                    coupon_id: Uuid::parse_str(&coupon_id)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    admitted_at: row.try_get("admitted_at")?,
                    issued_at: row.try_get("issued_at")?,
                })
            })
            .collect()
    }
}

async fn write_batches(mut conn: SqliteConnection, mut requests: mpsc::Receiver<WriteRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = write_batch(&mut conn, &batch).await.map_err(Arc::new);
        if let Err(error) = &result {
            tracing::error!(%error, winners = batch.len(), "standalone ledger write failed");
        }
        for request in batch.drain(..) {
            // The requester may have given up; the outcome stands either way.
            let _ = request.done.send(result.clone());
        }
    }
}

async fn write_batch(
    conn: &mut SqliteConnection,
    batch: &[WriteRequest],
) -> Result<(), sqlx::Error> {
    let issued_at = Utc::now();
    let mut tx = conn.begin().await?;
    for WriteRequest { coupon, .. } in batch {
        sqlx::query(
            "INSERT INTO coupons (campaign, user_id, ordinal, sequence, coupon_id, admitted_at, issued_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&coupon.campaign)
        .bind(&coupon.user_id)
        .bind(i64::from(coupon.ordinal))
        .bind(coupon.sequence as i64)
        .bind(coupon.coupon_id.to_string())
        .bind(coupon.admitted_at)
        .bind(issued_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
