//! The connection to Redis that admission (issuer) and provisioning (operator) use, for
//! each way Redis is deployed: one primary, the primary that Sentinel names (followed
//! across failovers), or a Redis Cluster (which follows `MOVED`/`ASK` itself).
//! A cluster must run with `cluster-require-full-coverage no`: otherwise every node refuses
//! every key (`CLUSTERDOWN`) while any one primary is failed, whatever the client does.
//!
//! [`RedisConnection`] is cheap to clone and implements [`ConnectionLike`], so scripts,
//! pipelines and [`redis::AsyncCommands`] run on it whatever the deployment.
//!
//! Single and Sentinel never re-send a command whose connection failed: the admission
//! script may have run, and running it twice could admit twice. The request fails (the
//! API answers 503) and the next one reconnects. The cluster client does re-send after a
//! dropped connection: with a per-user limit of one the second run answers "already",
//! with a higher one it may admit that user once more (see docs/configuration.md).
//! [`RedisConnection::may_have_run`] tells a failure after which the command may have run
//! (a timeout, a dropped connection: the outcome is unknown) from one where it surely did
//! not (the connection was refused, Redis refused the command).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::{NodeAddress, RedisAuth, RedisTarget};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};

/// A connection to wherever [`RedisTarget`] says Redis is.
#[derive(Clone)]
pub enum RedisConnection {
    /// Reconnects to the same address after a failure.
    Single(ConnectionManager),
    /// Asks the Sentinels for the primary after a failure.
    Sentinel(SentinelConnection),
    /// Routes each command to the node that owns its slot.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects, waiting at most `timeout` for a connection or a reply.
    pub async fn connect(target: &RedisTarget, timeout: Duration) -> RedisResult<Self> {
        match target {
            RedisTarget::Single { url } => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2);
                let client = redis::Client::open(url.as_str())?;
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            RedisTarget::Sentinel {
                master,
                sentinels,
                auth,
                db,
            } => Ok(Self::Sentinel(
                SentinelConnection::connect(master, sentinels, auth, *db, timeout).await?,
            )),
            RedisTarget::Cluster { nodes, auth } => {
                let mut builder =
                    ClusterClientBuilder::new(nodes.iter().map(|node| format!("redis://{node}")))
                        .connection_timeout(timeout)
                        .response_timeout(timeout);
                if let Some(username) = &auth.username {
                    builder = builder.username(username);
                }
                if let Some(password) = &auth.password {
                    builder = builder.password(password);
                }
                Ok(Self::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
        }
    }
}

impl RedisConnection {
    /// Whether a command that failed with `error` may have run on Redis all the same. The
    /// cluster client re-sends after a dropped connection, so its last error says nothing
    /// of an earlier send: any failure may have run there.
    pub fn may_have_run(&self, error: &RedisError) -> bool {
        match self {
            Self::Single(_) | Self::Sentinel(_) => !surely_not_run(error),
            Self::Cluster(_) => true,
        }
    }
}

/// A failure that proves the command never ran: no connection was made, no primary was
/// found, or Redis answered with an error that refuses a command before it runs. Anything
/// else (a timeout, a connection lost while waiting, a reply not understood, an error
/// raised inside a script) leaves its outcome unknown.
fn surely_not_run(error: &RedisError) -> bool {
    if error.is_connection_refusal() {
        return true;
    }
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::NoScript
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::CrossSlot
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::NoPerm
        ) | ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::NoValidReplicasFoundBySentinel
            | ErrorKind::EmptySentinelList
    )
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Sentinel(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A multiplexed connection to the primary the Sentinels name. A command that fails in a
/// way that says "this is no longer the primary" (the connection broke or timed out, or
/// the node answers READONLY because it was demoted) drops the connection, and the next
/// command asks the Sentinels again, so commands follow a failover once the Sentinels
/// have promoted a replica.
#[derive(Clone)]
pub struct SentinelConnection(Arc<SentinelShared>);

struct SentinelShared {
    /// Asks the Sentinels; locked for one lookup at a time, so a failover is discovered
    /// once rather than by every waiting request.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    config: AsyncConnectionConfig,
    timeout: Duration,
    db: i64,
    primary: Mutex<Option<Primary>>,
    connections_made: AtomicU64,
}

#[derive(Clone)]
struct Primary {
    /// Which connection this is, so a late failure on an old one keeps a newer one.
    generation: u64,
    conn: MultiplexedConnection,
}

impl SentinelConnection {
    async fn connect(
        master: &str,
        sentinels: &[NodeAddress],
        auth: &RedisAuth,
        db: i64,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let addresses = sentinels
            .iter()
            .map(|node| ConnectionAddr::Tcp(node.host.clone(), node.port));
        let mut builder =
            SentinelClientBuilder::new(addresses, master, SentinelServerType::Master)?
                .set_client_to_redis_db(db);
        if let Some(username) = &auth.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &auth.password {
            builder = builder.set_client_to_redis_password(password);
        }
        let connection = Self(Arc::new(SentinelShared {
            sentinel: tokio::sync::Mutex::new(builder.build()?),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            timeout,
            db,
            primary: Mutex::new(None),
            connections_made: AtomicU64::new(0),
        }));
        connection.primary().await?;
        Ok(connection)
    }

    fn current(&self) -> Option<Primary> {
        self.0
            .primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection to the primary, asking the Sentinels if there is none.
    async fn primary(&self) -> RedisResult<Primary> {
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        // Bound the wait behind other lookups as well as the lookup itself: the Sentinels
        // and the primary they name may hang (a stopped process).
        tokio::time::timeout(self.0.timeout, self.discover())
            .await
            .map_err(|_| {
                RedisError::from((ErrorKind::Io, "no primary from the Sentinels in time"))
            })?
    }

    /// Asks the Sentinels for the primary, unless the request that held the lock before
    /// this one found it. (Their lookups are cancellation-safe, so the timeout may drop it.)
    async fn discover(&self) -> RedisResult<Primary> {
        let mut sentinel = self.0.sentinel.lock().await;
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        let conn = sentinel
            .get_async_connection_with_config(&self.0.config)
            .await?;
        let primary = Primary {
            generation: self.0.connections_made.fetch_add(1, Ordering::Relaxed),
            conn,
        };
        *self
            .0
            .primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(primary.clone());
        Ok(primary)
    }

    /// Drops the connection `generation` if `result` says its node is no longer a usable
    /// primary.
    fn forget_on_failure<T>(&self, generation: u64, result: &RedisResult<T>) {
        let Err(err) = result else { return };
        if !primary_lost(err) {
            return;
        }
        let mut primary = self
            .0
            .primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if primary.as_ref().is_some_and(|p| p.generation == generation) {
            tracing::warn!(error = %err, "lost the Redis primary; asking the Sentinels again");
            *primary = None;
        }
    }
}

fn primary_lost(err: &RedisError) -> bool {
    err.is_unrecoverable_error()
        || err.is_io_error()
        || err.is_timeout()
        || err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let Primary {
                generation,
                mut conn,
            } = self.primary().await?;
            let result = conn.req_packed_command(cmd).await;
            self.forget_on_failure(generation, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let Primary {
                generation,
                mut conn,
            } = self.primary().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            self.forget_on_failure(generation, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn only_refusals_before_running_prove_a_command_did_not_run() {
        let never_ran = [
            RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused)),
            RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "demoted")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "down")),
            RedisError::from((ErrorKind::MasterNameNotFoundBySentinel, "no master")),
        ];
        for error in &never_ran {
            assert!(surely_not_run(error), "{error}");
        }
        let may_have_run = [
            RedisError::from(io::Error::from(io::ErrorKind::TimedOut)),
            RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset)),
            RedisError::from(io::Error::from(io::ErrorKind::UnexpectedEof)),
            RedisError::from(io::Error::from(io::ErrorKind::BrokenPipe)),
            RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "script")),
            RedisError::from((ErrorKind::Parse, "garbled")),
        ];
        for error in &may_have_run {
            assert!(!surely_not_run(error), "{error}");
        }
    }
}
