//! Where Redis is: one primary, a primary found through Sentinel, or a Redis Cluster.
//!
//! The operator and the issuers take the same setting, a URL, in one of three forms:
//!
//! - `redis://[user:password@]host:port[/db]` (or `rediss://`, `unix://`): a single
//!   primary; the URL goes to the Redis client as it is.
//! - `redis+sentinel://[user:password@]host:port,host:port,.../<master>[/db]`: the
//!   Sentinels to ask for the primary named `<master>`; the credentials and database are
//!   those of the primary (the Sentinels are asked without credentials).
//! - `redis+cluster://[user:password@]host:port,host:port,...`: some nodes of a Redis
//!   Cluster, enough to discover the others.
//!
//! Credentials may be percent-encoded. Neither `Display` nor `Debug` shows a password.

use std::fmt;
use std::str::FromStr;

const SENTINEL_SCHEME: &str = "redis+sentinel";
const CLUSTER_SCHEME: &str = "redis+cluster";
const SINGLE_SCHEMES: [&str; 4] = ["redis", "rediss", "unix", "redis+unix"];
const REDACTED: &str = "***";

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One primary, by the URL its client opens.
    Single { url: String },
    /// The primary that the Sentinels call `master`; it moves on a failover.
    Sentinel {
        master: String,
        sentinels: Vec<NodeAddress>,
        auth: RedisAuth,
        db: i64,
    },
    /// A Redis Cluster, by some of its nodes.
    Cluster {
        nodes: Vec<NodeAddress>,
        auth: RedisAuth,
    },
}

/// A node's `host:port` (IPv6 hosts are written in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    pub host: String,
    pub port: u16,
}

/// Credentials for the Redis nodes that hold the data.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAuth {
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisTargetError {
    #[error(
        "unknown Redis URL scheme {0:?} (expected redis, rediss, unix, redis+sentinel or redis+cluster)"
    )]
    UnknownScheme(String),
    #[error("a Redis URL starts with <scheme>://")]
    NoScheme,
    #[error("a {0} URL names at least one host:port")]
    NoNodes(&'static str),
    #[error("{0:?} is not host:port")]
    BadNode(String),
    #[error(
        "a redis+sentinel URL names the primary after the hosts: redis+sentinel://host:port,.../<master>"
    )]
    NoMaster,
    #[error("{0:?} is not a database number")]
    BadDatabase(String),
    #[error("a redis+cluster URL has no path (a cluster has only database 0)")]
    ClusterPath,
    #[error("query parameters are not supported in a {0} URL")]
    Query(&'static str),
    #[error("the credentials are not valid percent-encoded UTF-8")]
    BadCredentials,
    #[error("not a valid Redis URL")]
    InvalidUrl(#[source] redis::RedisError),
}

impl FromStr for RedisTarget {
    type Err = RedisTargetError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = url.split_once("://").ok_or(RedisTargetError::NoScheme)?;
        match scheme {
            SENTINEL_SCHEME => parse_sentinel(rest),
            CLUSTER_SCHEME => parse_cluster(rest),
            s if SINGLE_SCHEMES.contains(&s) => {
                redis::IntoConnectionInfo::into_connection_info(url)
                    .map_err(RedisTargetError::InvalidUrl)?;
                Ok(Self::Single {
                    url: url.to_string(),
                })
            }
            other => Err(RedisTargetError::UnknownScheme(other.to_string())),
        }
    }
}

fn parse_sentinel(rest: &str) -> Result<RedisTarget, RedisTargetError> {
    if rest.contains('?') {
        return Err(RedisTargetError::Query(SENTINEL_SCHEME));
    }
    let (auth, rest) = split_auth(rest)?;
    let (hosts, path) = rest.split_once('/').ok_or(RedisTargetError::NoMaster)?;
    let (master, db) = match path.split_once('/') {
        Some((master, db)) => (
            master,
            db.parse()
                .map_err(|_| RedisTargetError::BadDatabase(db.to_string()))?,
        ),
        None => (path, 0),
    };
    if master.is_empty() {
        return Err(RedisTargetError::NoMaster);
    }
    Ok(RedisTarget::Sentinel {
        master: master.to_string(),
        sentinels: parse_nodes(hosts, SENTINEL_SCHEME)?,
        auth,
        db,
    })
}

fn parse_cluster(rest: &str) -> Result<RedisTarget, RedisTargetError> {
    if rest.contains('?') {
        return Err(RedisTargetError::Query(CLUSTER_SCHEME));
    }
    let (auth, rest) = split_auth(rest)?;
    let hosts = match rest.split_once('/') {
        Some((hosts, "")) => hosts,
        Some(_) => return Err(RedisTargetError::ClusterPath),
        None => rest,
    };
    Ok(RedisTarget::Cluster {
        nodes: parse_nodes(hosts, CLUSTER_SCHEME)?,
        auth,
    })
}

/// Splits `user:password@` off the front (the last `@` ends it: a password may hold one).
fn split_auth(rest: &str) -> Result<(RedisAuth, &str), RedisTargetError> {
    let Some((userinfo, rest)) = rest.rsplit_once('@') else {
        return Ok((RedisAuth::default(), rest));
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(percent_decode(password)?)),
        None => (userinfo, None),
    };
    let username = Some(percent_decode(user)?).filter(|u| !u.is_empty());
    Ok((RedisAuth { username, password }, rest))
}

fn parse_nodes(hosts: &str, scheme: &'static str) -> Result<Vec<NodeAddress>, RedisTargetError> {
    if hosts.is_empty() {
        return Err(RedisTargetError::NoNodes(scheme));
    }
    hosts.split(',').map(NodeAddress::from_str).collect()
}

fn percent_decode(s: &str) -> Result<String, RedisTargetError> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2).ok_or(RedisTargetError::BadCredentials)?;
            let hex = std::str::from_utf8(hex).map_err(|_| RedisTargetError::BadCredentials)?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| RedisTargetError::BadCredentials)?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| RedisTargetError::BadCredentials)
}

impl FromStr for NodeAddress {
    type Err = RedisTargetError;

    fn from_str(node: &str) -> Result<Self, Self::Err> {
        let bad = || RedisTargetError::BadNode(node.to_string());
        let (host, port) = node.rsplit_once(':').ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The URL with its password replaced by `***`.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single { url } => f.write_str(&redact_url(url)),
            Self::Sentinel {
                master,
                sentinels,
                auth,
                db,
            } => {
                write!(f, "{SENTINEL_SCHEME}://{auth}{}/{master}", join(sentinels))?;
                if *db != 0 {
                    write!(f, "/{db}")?;
                }
                Ok(())
            }
            Self::Cluster { nodes, auth } => {
                write!(f, "{CLUSTER_SCHEME}://{auth}{}", join(nodes))
            }
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

/// `user:***@`, `user@`, `:***@` or nothing: the userinfo part of a redacted URL.
impl fmt::Display for RedisAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.username.as_deref().unwrap_or_default();
        match &self.password {
            Some(_) => write!(f, "{user}:{REDACTED}@"),
            None if !user.is_empty() => write!(f, "{user}@"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .finish()
    }
}

fn join(nodes: &[NodeAddress]) -> String {
    nodes
        .iter()
        .map(NodeAddress::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A single-node URL with the password (what follows `:` in the userinfo) replaced.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}{tail}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> NodeAddress {
        NodeAddress {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn single_urls_pass_through() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:pw@redis:6379/2",
            "unix:///run/redis.sock",
        ] {
            assert_eq!(
                url.parse::<RedisTarget>().unwrap(),
                RedisTarget::Single {
                    url: url.to_string()
                }
            );
        }
        // This build has no TLS: say so when the URL is read, not at the first connect.
        let tls = "rediss://user:pw@redis.example:6380".parse::<RedisTarget>();
        assert!(
            matches!(tls, Err(RedisTargetError::InvalidUrl(_))),
            "{tls:?}"
        );
    }

    #[test]
    fn sentinel_urls_name_sentinels_master_auth_and_db() {
        let target: RedisTarget = "redis+sentinel://app:p%40ss@s1:26379,[::1]:26380/shop/3"
            .parse()
            .unwrap();
        assert_eq!(
            target,
            RedisTarget::Sentinel {
                master: "shop".to_string(),
                sentinels: vec![node("s1", 26379), node("::1", 26380)],
                auth: RedisAuth {
                    username: Some("app".to_string()),
                    password: Some("p@ss".to_string()),
                },
                db: 3,
            }
        );
        let plain: RedisTarget = "redis+sentinel://127.0.0.1:26390/firstcome"
            .parse()
            .unwrap();
        assert!(
            matches!(plain, RedisTarget::Sentinel { db: 0, ref auth, .. } if *auth == RedisAuth::default())
        );
    }

    #[test]
    fn cluster_urls_name_nodes() {
        let target: RedisTarget = "redis+cluster://:secret@n1:7000,n2:7001/".parse().unwrap();
        assert_eq!(
            target,
            RedisTarget::Cluster {
                nodes: vec![node("n1", 7000), node("n2", 7001)],
                auth: RedisAuth {
                    username: None,
                    password: Some("secret".to_string()),
                },
            }
        );
    }

    #[test]
    fn invalid_urls_say_what_is_wrong() {
        use RedisTargetError::*;
        let cases = [
            ("127.0.0.1:6379", NoScheme),
            ("http://x:1", UnknownScheme("http".to_string())),
            ("redis+sentinel://s1:26379", NoMaster),
            ("redis+sentinel://s1:26379/", NoMaster),
            ("redis+sentinel:///m", NoNodes(SENTINEL_SCHEME)),
            (
                "redis+sentinel://s1:26379/m/x",
                BadDatabase("x".to_string()),
            ),
            ("redis+sentinel://s1/m", BadNode("s1".to_string())),
            ("redis+sentinel://s1:0/m", BadNode("s1:0".to_string())),
            ("redis+sentinel://s1:26379,/m", BadNode(String::new())),
            ("redis+cluster://", NoNodes(CLUSTER_SCHEME)),
            ("redis+cluster://n1:99999", BadNode("n1:99999".to_string())),
            ("redis+cluster://::1:7000", BadNode("::1:7000".to_string())),
            ("redis+cluster://n1:7000/1", ClusterPath),
            ("redis+cluster://n1:7000?tls=1", Query(CLUSTER_SCHEME)),
            ("redis+cluster://:%zz@n1:7000", BadCredentials),
            ("redis+cluster://:%4@n1:7000", BadCredentials),
        ];
        for (url, expected) in cases {
            let error = url.parse::<RedisTarget>().unwrap_err();
            assert_eq!(error.to_string(), expected.to_string(), "{url}");
        }
        let port = "redis://r:notaport".parse::<RedisTarget>().unwrap_err();
        assert!(matches!(port, InvalidUrl(_)), "{port:?}");
    }

    #[test]
    fn display_and_debug_never_show_a_password() {
        let cases = [
            ("redis://:hunter2@r:6379/1", "redis://:***@r:6379/1"),
            ("redis://u:hunter2@r:6379", "redis://u:***@r:6379"),
            ("redis://u@r:6379", "redis://u@r:6379"),
            ("redis://r:6379", "redis://r:6379"),
            (
                "redis+sentinel://u:hunter2@s1:1,s2:2/m/4",
                "redis+sentinel://u:***@s1:1,s2:2/m/4",
            ),
            ("redis+sentinel://s1:1/m", "redis+sentinel://s1:1/m"),
            (
                "redis+cluster://:hunter2@n1:7000,[::1]:7001",
                "redis+cluster://:***@n1:7000,[::1]:7001",
            ),
        ];
        for (url, shown) in cases {
            let target: RedisTarget = url.parse().unwrap();
            assert_eq!(target.to_string(), shown);
            let debug = format!("{target:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            if let RedisTarget::Sentinel { auth, .. } | RedisTarget::Cluster { auth, .. } = &target
            {
                assert!(!format!("{auth:?}").contains("hunter2"));
            }
        }
    }

    #[test]
    fn shown_urls_parse_back_to_the_same_nodes() {
        let url = "redis+cluster://n1:7000,[::1]:7001";
        let target: RedisTarget = url.parse().unwrap();
        assert_eq!(target.to_string().parse::<RedisTarget>().unwrap(), target);
    }
}
