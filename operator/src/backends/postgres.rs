//! A campaign's counts in PostgreSQL: coupons persisted and failed events unresolved.

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{BackendError, Connections, TIMEOUT, cached};

/// What PostgreSQL says about the campaign's coupons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub issued: u64,
    pub failed_events: u64,
}

/// PostgreSQL's code for "undefined table".
const UNDEFINED_TABLE: &str = "42P01";

impl Connections {
    async fn postgres(&self, url: &str) -> Result<PgPool, BackendError> {
        cached(&self.postgres, url, async |url| {
            PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(TIMEOUT)
                .connect_lazy(url)
                .map_err(BackendError::InvalidPostgresUrl)
        })
        .await
    }

    /// Coupons persisted and unresolved failed events of the campaign. Before the first
    /// issuer created the tables there are none of either.
    pub async fn persistence(
        &self,
        url: &str,
        campaign: &str,
    ) -> Result<Persistence, BackendError> {
        let pool = self.postgres(url).await?;
        let counts: Result<(i64, i64), sqlx::Error> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM coupons WHERE campaign = $1), \
                    (SELECT count(*) FROM failed_events WHERE campaign = $1 AND resolved_at IS NULL)",
        )
        .bind(campaign)
        .fetch_one(&pool)
        .await;
        match counts {
            Ok((issued, failed)) => Ok(Persistence {
                issued: issued as u64,
                failed_events: failed as u64,
            }),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_TABLE) => {
                Ok(Persistence {
                    issued: 0,
                    failed_events: 0,
                })
            }
            Err(e) => Err(BackendError::Postgres(e)),
        }
    }
}
