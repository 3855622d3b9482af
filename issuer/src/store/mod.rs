//! Where coupons are kept: PostgreSQL for the distributed issuer (fed by the Kafka
//! consumer), SQLite for the standalone one (written before the winner is answered).

pub mod failed_event;
pub mod postgres;
pub mod sqlite;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A coupon as a look-up shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCoupon {
    pub sequence: u64,
    pub ordinal: u32,
    pub coupon_id: Uuid,
    pub admitted_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}
