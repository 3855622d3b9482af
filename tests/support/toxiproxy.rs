//! Toxiproxy (`scripts/toxiproxy`), the fault proxy tests put between a process and a
//! real service: the server started on demand, then driven over its HTTP API — a proxy
//! per link, a toxic added to slow or partition the link and removed to heal it.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/toxiproxy");

/// Runs `scripts/toxiproxy ARGS` (its log goes to the test's stderr): its success and
/// stdout.
fn script(args: &[&str]) -> (bool, String) {
    let output = Command::new(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/toxiproxy");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout)
}

/// The Toxiproxy server; stopped, its state deleted, when dropped if this value started it.
pub struct Toxiproxy {
    url: String,
    http: reqwest::Client,
    started_here: bool,
}

impl Toxiproxy {
    /// Starts the server unless it runs (`scripts/toxiproxy up`, which builds it when
    /// missing). Blocks: call it off the async threads.
    pub fn up() -> Self {
        let (running, _) = script(&["status"]);
        let (started, exports) = script(&["up"]);
        assert!(started, "scripts/toxiproxy up failed");
        let url = (exports.lines())
            .find_map(|line| line.strip_prefix("export FIRSTCOME_TOXIPROXY_URL="))
            .unwrap_or_else(|| panic!("scripts/toxiproxy printed no URL: {exports}"))
            .to_string();
        Self {
            url,
            http: reqwest::Client::new(),
            started_here: !running,
        }
    }

    /// A proxy named `name` listening on `listen` (port 0: any free port) and passing
    /// everything to `upstream` as it comes; one of that name, or on that fixed address,
    /// that an earlier run left behind (it panicked before deleting its proxies) is
    /// replaced.
    pub async fn proxy(&self, name: &str, listen: &str, upstream: &str) -> Proxy {
        let url = format!("{}/proxies/{name}", self.url);
        call(self.http.delete(&url), Effect::DeleteIfThere).await;
        if !listen.ends_with(":0") {
            self.delete_listening_on(listen).await;
        }
        let body = json!({ "name": name, "listen": listen, "upstream": upstream, "enabled": true });
        let create = self.http.post(format!("{}/proxies", self.url)).json(&body);
        call(create, Effect::Create).await;
        // Read back: a creation sent again after a timeout answers only that it exists.
        let created = call(self.http.get(&url), Effect::Read).await;
        let listen = (created["listen"].as_str())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("Toxiproxy created {created} without an address"));
        Proxy {
            url,
            listen,
            http: self.http.clone(),
        }
    }
}

impl Toxiproxy {
    /// Deletes every proxy listening on `listen`.
    async fn delete_listening_on(&self, listen: &str) {
        let proxies = call(self.http.get(format!("{}/proxies", self.url)), Effect::Read).await;
        let stale = (proxies.as_object().into_iter().flatten())
            .filter(|(_, proxy)| proxy["listen"].as_str() == Some(listen));
        for (name, _) in stale {
            let url = format!("{}/proxies/{name}", self.url);
            call(self.http.delete(&url), Effect::DeleteIfThere).await;
        }
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        if self.started_here && !script(&["clean"]).0 {
            eprintln!("scripts/toxiproxy clean failed");
        }
    }
}

/// Toxiproxy's API answers `503` ("Timeout") to a call that took over 25 s, its handler's
/// timeout, while the call goes on in the background (chaos seeds 4191 and 5047: removing a
/// toxic passes on, connection by connection, the chunks it held, each waiting up to 5 s
/// for a reader that does not read). Such a call is sent again, at most this many times,
/// a second apart.
const TRIES_AFTER_TIMEOUT: u32 = 4;

/// What a call to the API does, so that one sent again knows the answer saying that an
/// earlier try did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Read,
    /// Creates something: after a timeout, `409 Conflict` means the earlier try did.
    Create,
    /// Deletes something that is there: after a timeout, `404` means the earlier try did.
    Delete,
    /// Deletes something if it is there.
    DeleteIfThere,
}

/// What an answer means for a call.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Done,
    TimedOut,
    Failed,
}

impl Effect {
    fn verdict(self, status: u16, timed_out_before: bool) -> Verdict {
        match (self, status) {
            (_, 200..=299) | (Effect::DeleteIfThere, 404) => Verdict::Done,
            (Effect::Create, 409) | (Effect::Delete, 404) if timed_out_before => Verdict::Done,
            (_, 503) => Verdict::TimedOut,
            _ => Verdict::Failed,
        }
    }
}

/// Sends `request`, again after a timeout ([`TRIES_AFTER_TIMEOUT`]); its JSON body (`null`
/// when it has none, or when an earlier try did it). Panics on any other answer.
async fn call(request: reqwest::RequestBuilder, effect: Effect) -> Value {
    let mut timed_out_before = false;
    for _ in 0..=TRIES_AFTER_TIMEOUT {
        let sent = request
            .try_clone()
            .expect("a request to Toxiproxy has its body in memory");
        let response = sent.send().await.expect("Toxiproxy's API answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match effect.verdict(status.as_u16(), timed_out_before) {
            Verdict::Done => return serde_json::from_str(&text).unwrap_or(Value::Null),
            Verdict::TimedOut => timed_out_before = true,
            Verdict::Failed => panic!("Toxiproxy answered {status}: {text}"),
        }
        eprintln!("Toxiproxy answered {status} ({effect:?}): sending it again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!(
        "Toxiproxy timed out {} times in a row",
        TRIES_AFTER_TIMEOUT + 1
    )
}

/// One proxy of the server; [`Proxy::delete`] takes it (and its connections) away.
pub struct Proxy {
    url: String,
    listen: SocketAddr,
    http: reqwest::Client,
}

impl Proxy {
    /// Where clients connect to go through the proxy.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Adds `toxic` to every connection, open or to come.
    pub async fn add(&self, toxic: &Toxic) {
        let body = json!({
            "name": toxic.name(),
            "type": toxic.kind,
            "stream": toxic.stream.name(),
            "toxicity": 1.0,
            "attributes": toxic.attributes,
        });
        let add = self.http.post(format!("{}/toxics", self.url)).json(&body);
        call(add, Effect::Create).await;
    }

    /// Removes `toxic`: data it held passes on at once, in order.
    pub async fn remove(&self, toxic: &Toxic) {
        let url = format!("{}/toxics/{}", self.url, toxic.name());
        call(self.http.delete(url), Effect::Delete).await;
    }

    pub async fn delete(&self) {
        call(self.http.delete(&self.url), Effect::DeleteIfThere).await;
    }
}

/// A direction of a proxy's connections.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// From the client to the service: requests.
    Upstream,
    /// From the service to the client: replies.
    Downstream,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Downstream => "downstream",
        }
    }
}

/// What a proxy does to one direction of its connections.
#[derive(Clone, Debug)]
pub struct Toxic {
    kind: &'static str,
    stream: Stream,
    attributes: Value,
}

/// Longer than any fault: a toxic that holds data this long holds it until removed.
const UNTIL_REMOVED: Duration = Duration::from_secs(3_600);

impl Toxic {
    /// Holds each chunk on `stream` for `delay` before passing it on.
    pub fn latency(stream: Stream, delay: Duration) -> Self {
        let latency = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        Self {
            kind: "latency",
            stream,
            attributes: json!({ "latency": latency, "jitter": 0 }),
        }
    }

    /// Holds everything on `stream` until removed, connections kept open: what a network
    /// partition does to TCP, whose retransmissions deliver the data once it heals.
    pub fn held(stream: Stream) -> Self {
        Self::latency(stream, UNTIL_REMOVED)
    }

    /// One toxic of a kind per direction: the name tells both.
    fn name(&self) -> String {
        format!("{}_{}", self.kind, self.stream.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_sent_again_after_a_timeout_is_done_when_the_earlier_try_did_it() {
        for effect in [
            Effect::Read,
            Effect::Create,
            Effect::Delete,
            Effect::DeleteIfThere,
        ] {
            assert_eq!(effect.verdict(200, false), Verdict::Done, "{effect:?}");
            assert_eq!(effect.verdict(503, false), Verdict::TimedOut, "{effect:?}");
            assert_eq!(effect.verdict(503, true), Verdict::TimedOut, "{effect:?}");
            assert_eq!(effect.verdict(400, true), Verdict::Failed, "{effect:?}");
        }
        assert_eq!(
            Effect::Create.verdict(409, false),
            Verdict::Failed,
            "a name in use"
        );
        assert_eq!(Effect::Create.verdict(409, true), Verdict::Done);
        assert_eq!(
            Effect::Delete.verdict(404, false),
            Verdict::Failed,
            "never there"
        );
        assert_eq!(Effect::Delete.verdict(404, true), Verdict::Done);
        assert_eq!(Effect::DeleteIfThere.verdict(404, false), Verdict::Done);
        assert_eq!(Effect::Read.verdict(404, true), Verdict::Failed);
    }
}
