//! The contract between the firstcome operator and its issuers.
//!
//! Everything both sides must agree on lives here and only here: the configuration of a
//! campaign the operator hands to issuers ([`CampaignConfig`]), the Redis key layout of a
//! campaign ([`CampaignKeys`]), the winner event published on Kafka ([`WinnerEvent`]) and
//! the consumer lanes that persist it ([`ConsumerLane`]).

mod campaign;
mod redis_keys;
mod winner_event;

pub use campaign::{
    Bucket, CampaignConfig, CampaignsFile, ConfigError, ConsumerLane, DEFAULT_PER_USER_LIMIT,
    MAX_BUCKET_RATE, RateLimits, Window,
};
pub use redis_keys::{CampaignKeys, decode_held, encode_held};
pub use winner_event::{ForeignEvent, WinnerEvent, WinnerEventError};
