//! Kafka: winners are published to their campaign's topic and consumed into PostgreSQL.

pub mod claims;
pub mod consumer;
pub mod lag;
pub mod producer;
pub mod topics;
pub mod turns;
