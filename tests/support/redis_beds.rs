//! The replicated Redis beds of `scripts/testbed` (Sentinel and Cluster): where they are,
//! starting them when the environment does not say, and faults on one of their nodes.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use firstcome_contract::RedisTarget;

const TESTBED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/testbed");

/// The URL of the Sentinel bed (`scripts/testbed up-sentinel` when
/// `FIRSTCOME_TEST_SENTINELS` is unset).
pub fn sentinel_url() -> String {
    let env = bed_env(
        "up-sentinel",
        &["FIRSTCOME_TEST_SENTINELS", "FIRSTCOME_TEST_SENTINEL_MASTER"],
    );
    format!(
        "redis+sentinel://{}/{}",
        env["FIRSTCOME_TEST_SENTINELS"], env["FIRSTCOME_TEST_SENTINEL_MASTER"]
    )
}

pub fn sentinel_target() -> RedisTarget {
    sentinel_url().parse().expect("the test bed's Sentinel URL")
}

/// The URL of the Cluster bed (`scripts/testbed up-cluster` when
/// `FIRSTCOME_TEST_REDIS_CLUSTER` is unset).
pub fn cluster_url() -> String {
    let env = bed_env("up-cluster", &["FIRSTCOME_TEST_REDIS_CLUSTER"]);
    format!("redis+cluster://{}", env["FIRSTCOME_TEST_REDIS_CLUSTER"])
}

pub fn cluster_target() -> RedisTarget {
    cluster_url().parse().expect("the test bed's Cluster URL")
}

/// The port of the primary that the first answering Sentinel of `target` (a Sentinel
/// target) names; `None` when none answers within its 2 s timeouts.
pub async fn sentinel_primary_port(target: &RedisTarget) -> Option<u16> {
    let RedisTarget::Sentinel {
        master, sentinels, ..
    } = target
    else {
        panic!("not a Sentinel target: {target}");
    };
    for sentinel in sentinels {
        let Ok(mut conn) = connection(&format!("redis://{sentinel}")).await else {
            continue;
        };
        let named: redis::RedisResult<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master)
            .query_async(&mut conn)
            .await;
        if let Ok((_, port)) = named {
            return Some(port);
        }
    }
    None
}

/// A connection to one node, with 2 s timeouts: a node being failed over must not hang
/// the test.
pub async fn connection(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Brings the Sentinel bed back to a primary, a replica in sync and three Sentinels that
/// agree, restarting a node a test killed (it rejoins as a replica). Reports a failure
/// instead of panicking: it runs from `Drop`, maybe while a failed test unwinds, and the
/// next `up-sentinel` heals the bed anyway.
pub fn heal_sentinel_bed() {
    heal("up-sentinel");
}

/// Brings the Cluster bed back to six nodes in a healthy cluster (see
/// [`heal_sentinel_bed`]).
pub fn heal_cluster_bed() {
    heal("up-cluster");
}

/// Runs `scripts/testbed <up_command>`, reporting a failure instead of panicking.
fn heal(up_command: &str) {
    match Command::new(TESTBED)
        .arg(up_command)
        .stdout(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        other => eprintln!("scripts/testbed {up_command} could not heal the bed: {other:?}"),
    }
}

/// `scripts/testbed redis-node kill|stop|cont PORT`: SIGKILL, SIGSTOP or SIGCONT one node.
pub fn redis_node(action: &str, port: u16) {
    testbed(&["redis-node", action, &port.to_string()]);
}

/// The variables `names` from the environment, or else from the export lines of
/// `scripts/testbed <up_command>`.
fn bed_env(up_command: &str, names: &[&str]) -> HashMap<String, String> {
    let from_env: HashMap<_, _> = names
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect();
    if from_env.len() == names.len() {
        return from_env;
    }
    let exports = testbed(&[up_command]);
    let parsed: HashMap<String, String> = exports
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    for name in names {
        assert!(
            parsed.contains_key(*name),
            "scripts/testbed {up_command} printed no {name}"
        );
    }
    parsed
}

/// Runs `scripts/testbed ARGS` (its log goes to the test's stderr); returns its stdout.
fn testbed(args: &[&str]) -> String {
    let output = Command::new(TESTBED)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/testbed");
    assert!(output.status.success(), "scripts/testbed {args:?} failed");
    String::from_utf8(output.stdout).expect("scripts/testbed prints UTF-8")
}
