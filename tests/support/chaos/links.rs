//! The links a run's faults slow or partition, each a Toxiproxy proxy of its own: from
//! each API issuer to Redis and to Kafka, from each consumer to PostgreSQL. A run makes
//! the links of a service only when its schedule faults one of them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;
use tokio::sync::Mutex;

use super::bed::KAFKA_PROXIED;
use super::schedule::{API_ISSUERS, CONSUMERS, Linked};
use crate::Services;
use crate::toxiproxy::{Proxy, Stream, Toxic, Toxiproxy};

/// One link through its proxy.
pub struct Link {
    proxy: Proxy,
    /// Held through each fault of the link, healing included.
    faulted: Mutex<()>,
}

impl Link {
    async fn open(toxiproxy: &Toxiproxy, name: String, listen: &str, upstream: &str) -> Self {
        Self {
            proxy: toxiproxy.proxy(&name, listen, upstream).await,
            faulted: Mutex::new(()),
        }
    }

    fn address(&self) -> SocketAddr {
        self.proxy.listen()
    }

    /// `toxics` on the link for `lasts`, then removed (what they held passes on at once).
    pub async fn fault_for(&self, toxics: &[Toxic], lasts: Duration) {
        let _one_at_a_time = self.faulted.lock().await;
        for toxic in toxics {
            self.proxy.add(toxic).await;
        }
        tokio::time::sleep(lasts).await;
        for toxic in toxics {
            self.proxy.remove(toxic).await;
        }
    }

    /// Nothing passes either way for `lasts`, connections kept open; then everything
    /// held passes on, as after a network partition heals.
    pub async fn partition_for(&self, lasts: Duration) {
        let both = [Stream::Upstream, Stream::Downstream].map(Toxic::held);
        self.fault_for(&both, lasts).await;
    }
}

/// A run's links, by the index of the API issuer (Redis, Kafka) or consumer (PostgreSQL);
/// empty for a service the run does not fault.
#[derive(Default)]
pub struct Links {
    pub redis: Vec<Link>,
    pub kafka: Vec<Link>,
    pub postgres: Vec<Link>,
}

impl Links {
    /// The links of `linked` services, named after `run`. Kafka's are the chaos bed's
    /// proxied listeners: each proxy listens where its listener is advertised.
    pub async fn open(
        toxiproxy: &Toxiproxy,
        services: &Services,
        linked: &BTreeSet<Linked>,
        run: &str,
    ) -> Self {
        let mut links = Self::default();
        for &service in linked {
            let count = match service {
                Linked::Redis | Linked::Kafka => API_ISSUERS,
                Linked::Postgres => CONSUMERS,
            };
            for i in 0..count {
                let name = format!("{run}-{service:?}-{i}").to_lowercase();
                let (listen, upstream) = ends(services, service, i);
                let link = Link::open(toxiproxy, name, &listen, &upstream).await;
                links.of_mut(service).push(link);
            }
        }
        links
    }

    fn of_mut(&mut self, service: Linked) -> &mut Vec<Link> {
        match service {
            Linked::Redis => &mut self.redis,
            Linked::Kafka => &mut self.kafka,
            Linked::Postgres => &mut self.postgres,
        }
    }

    /// The Redis URL API issuer `i` uses.
    pub fn redis_url(&self, services: &Services, i: usize) -> String {
        match self.redis.get(i) {
            Some(link) => through(&services.redis_url, link.address()),
            None => services.redis_url.clone(),
        }
    }

    /// The brokers API issuer `i` bootstraps from.
    pub fn kafka_brokers(&self, services: &Services, i: usize) -> String {
        (self.kafka.get(i)).map_or(services.kafka_brokers.clone(), |link| {
            link.address().to_string()
        })
    }

    /// The database URL consumer `i` uses.
    pub fn database_url(&self, services: &Services, i: usize) -> String {
        match self.postgres.get(i) {
            Some(link) => through(&services.database_url, link.address()),
            None => services.database_url.clone(),
        }
    }

    pub async fn close(&self) {
        for link in self.redis.iter().chain(&self.kafka).chain(&self.postgres) {
            link.proxy.delete().await;
        }
    }
}

/// Where link `i` to `service` listens, and where it passes to.
fn ends(services: &Services, service: Linked, i: usize) -> (String, String) {
    let any_port = "127.0.0.1:0".to_string();
    match service {
        Linked::Redis => (any_port, url_address(&services.redis_url)),
        Linked::Postgres => (any_port, url_address(&services.database_url)),
        Linked::Kafka => {
            let host = (services.kafka_brokers.rsplit_once(':'))
                .map(|(host, _)| host)
                .expect("the chaos bed's broker as host:port");
            let (bound, advertised) = KAFKA_PROXIED[i];
            (format!("{host}:{advertised}"), format!("{host}:{bound}"))
        }
    }
}

/// `host:port` of a `redis://` or `postgres://` URL.
fn url_address(url: &str) -> String {
    let url = Url::parse(url).expect("a service URL");
    let host = url.host_str().expect("a service URL names a host");
    format!("{host}:{}", url.port().expect("a service URL names a port"))
}

/// `url` with its host and port those of `address`.
fn through(url: &str, address: SocketAddr) -> String {
    let mut url = Url::parse(url).expect("a service URL");
    url.set_ip_host(address.ip()).expect("a URL with a host");
    url.set_port(Some(address.port()))
        .expect("a URL with a host");
    url.to_string()
}
