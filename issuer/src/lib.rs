//! firstcome issuer: first-come-first-served coupon admission.
//!
//! The path of one apply, module by module:
//! - [`http`] parses the request (`http::apply`), learns who sends it (`http::caller`,
//!   as the campaign's [`identity`] mode says) and answers with a status and a reason;
//!   before any admission work, the apply passes its campaign's [`limits`]: a token
//!   bucket per client address ([`client_addr`]) and one per user;
//! - [`issuer`] checks the campaign's time window and its sold-out board, then asks the
//!   [`backend`]: the standalone ledger ([`admission::embedded`], coupons in
//!   [`store::sqlite`]) or the [`distributed`] one — the admission script in Redis
//!   ([`admission::redis`]), then the winner event handed off to Kafka
//!   ([`kafka::producer`]);
//! - [`kafka::consumer`] persists winner events into PostgreSQL ([`store::postgres`]).
//!
//! A campaign with a [`waiting_room`] lets users in at a set rate first: they join a
//! queue, poll their place, and apply with the signed pass they are given.
//!
//! [`wiring`] builds a process from its command line ([`cli`]) and runs it; [`campaign`]
//! is a campaign as a process serves it; [`error`] the errors of the apply flow;
//! [`traces`] exports the spans of all this over OTLP when asked to.

pub mod admission;
pub mod backend;
pub mod campaign;
pub mod cli;
pub mod client_addr;
pub mod distributed;
pub mod error;
pub mod http;
pub mod identity;
pub mod issuer;
pub mod kafka;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod readiness;
pub mod store;
pub mod traces;
pub mod user_id;
pub mod waiting_room;
pub mod wiring;
