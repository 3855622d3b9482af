//! Abuse limits on applies, checked before any admission work: a token bucket per user
//! and, when the campaign's `rateLimits` configure it, one per client address. What they
//! refuse is answered 429 `rate_limited` and counted by scope.

pub mod buckets;
pub mod counters;

use std::net::IpAddr;
use std::time::Duration;

use firstcome_contract::RateLimits;

use crate::client_addr::bucket_key;
use crate::user_id::UserId;
use buckets::Buckets;
use counters::RateLimitedCounters;

/// Whose bucket refused an apply.
#[derive(
    Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum Scope {
    client,
    user,
}

/// An apply refused by a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after: Duration,
}

/// The buckets of one campaign.
pub struct ApplyLimits {
    /// `None`: no per-client-address limit (the default).
    clients: Option<Buckets<IpAddr>>,
    users: Buckets<UserId>,
    counters: RateLimitedCounters,
}

impl ApplyLimits {
    pub fn new(limits: &RateLimits, counters: RateLimitedCounters) -> Self {
        Self {
            clients: limits.per_client.map(Buckets::new),
            users: Buckets::new(limits.per_user),
            counters,
        }
    }

    /// One apply from `client` (IPv6 clients by their /64); always served when the
    /// campaign has no per-client limit.
    pub fn check_client(&self, client: IpAddr) -> Result<(), Limited> {
        let Some(clients) = &self.clients else {
            return Ok(());
        };
        self.refused(Scope::client, clients.check(&bucket_key(client)))
    }

    /// One apply by `user`.
    pub fn check_user(&self, user: &UserId) -> Result<(), Limited> {
        self.refused(Scope::user, self.users.check(user))
    }

    fn refused(&self, scope: Scope, checked: Result<(), buckets::Refusal>) -> Result<(), Limited> {
        checked.map_err(|refusal| {
            self.counters.count(scope);
            Limited {
                scope,
                retry_after: refusal.retry_after(),
            }
        })
    }
}
