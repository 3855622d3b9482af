//! firstcome issuer: first-come-first-served coupon admission.
//!
//! A request applies a user to a campaign ([`http`]); [`issuer::Issuer`] checks the time
//! window and the sold-out board, then asks an admission backend ([`admission`]) to decide
//! atomically. In distributed mode winners are published to Kafka ([`kafka`]) and a
//! consumer persists them into PostgreSQL ([`store`]); standalone, they are written to
//! SQLite before the answer.

pub mod admission;
pub mod app;
pub mod cli;
pub mod http;
pub mod issuer;
pub mod kafka;
pub mod metrics;
pub mod readiness;
pub mod reconcile;
pub mod store;
pub mod user_id;
