//! The contract between the firstcome operator and its issuers.
//!
//! Everything both sides must agree on lives here and only here: the configuration of a
//! campaign the operator hands to issuers ([`CampaignConfig`]) with who may apply
//! ([`IdentityConfig`]), the Redis key layout of a
//! campaign ([`CampaignKeys`]), the winner event published on Kafka ([`WinnerEvent`]) and
//! the consumer lanes that persist it ([`ConsumerLane`]), and where Redis is
//! ([`RedisTarget`]: one primary, Sentinel or Cluster) and how both connect to it
//! ([`RedisConnection`]), and a campaign's optional [`WaitingRoom`] with its customers' [`RoomPage`].

mod campaign;
mod identity;
mod redis_connection;
mod redis_keys;
mod redis_target;
mod room_page;
mod waiting_room;
mod winner_event;

pub use campaign::{
    Bucket, CampaignConfig, CampaignsFile, ConfigError, ConsumerLane, DEFAULT_PER_USER_LIMIT,
    MAX_BUCKET_RATE, RateLimits, Window,
};
pub use identity::{
    DEFAULT_LEEWAY_SECONDS, DEFAULT_USER_CLAIM, HEADER_NAME_PATTERN, HeaderConfig, IdentityConfig,
    IdentityConfigError, JwtConfig, JwtKeys, MAX_LEEWAY_SECONDS,
};
pub use redis_connection::{RedisConnection, SentinelConnection};
pub use redis_keys::{CampaignKeys, decode_held, encode_held};
pub use redis_target::{NodeAddress, RedisAuth, RedisTarget, RedisTargetError};
pub use room_page::{
    MAX_PAGE_MESSAGE_CHARS, MAX_PAGE_TITLE_CHARS, PAGE_COLOR_PATTERN, RoomPage, RoomPageProblem,
    default_page_accent, default_page_background, default_page_title,
};
pub use waiting_room::{
    DEFAULT_PASS_TTL_SECONDS, DEFAULT_PREQUEUE_LEAD_SECONDS, DEFAULT_TICKET_TIMEOUT_SECONDS,
    MAX_ADMISSION_RATE, PASS_TTL_SECONDS, TICKET_TIMEOUT_SECONDS, WaitingRoom, WaitingRoomProblem,
};
pub use winner_event::{ForeignEvent, WinnerEvent, WinnerEventError};
