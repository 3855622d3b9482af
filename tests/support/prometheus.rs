//! The real Prometheus of `scripts/prometheus`, started on demand (once per test binary)
//! with a configuration that scrapes every second the targets tests register (file
//! discovery) and evaluates the chart's alerts every second; queried over its HTTP API.
//! Also `promtool`, built by the same script.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/prometheus");

/// The chart's rule file, the one the PrometheusRule template wraps.
pub const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/firstcome/rules/firstcome.rules.yaml"
);

/// The scrape and rule-evaluation interval of the test Prometheus.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The directory holding `prometheus` and `promtool` (`scripts/prometheus build`).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        script(&["build"]);
        PathBuf::from(exported(&script(&["env"]), "FIRSTCOME_PROMETHEUS_BIN"))
    })
    .clone()
}

/// Runs `promtool ARGS` in the repository's root; returns (success, stdout + stderr).
pub fn promtool(args: &[&str]) -> (bool, String) {
    let output = Command::new(bin_dir().join("promtool"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs `scripts/prometheus ARGS` (its log goes to the test's stderr); returns its stdout.
fn script(args: &[&str]) -> String {
    let output = Command::new(SCRIPT)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/prometheus");
    assert!(
        output.status.success(),
        "scripts/prometheus {args:?} failed"
    );
    String::from_utf8(output.stdout).expect("scripts/prometheus prints UTF-8")
}

fn exported(exports: &str, name: &str) -> String {
    exports
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .unwrap_or_else(|| panic!("scripts/prometheus printed no {name}"))
}

/// Where tests put their target files (file discovery reads `*.json` here).
fn targets_dir() -> PathBuf {
    std::env::temp_dir().join("firstcome-prometheus-targets")
}

/// The test configuration: the same text on every run, so a Prometheus already up with
/// it is reused as it is.
fn config() -> String {
    let targets = targets_dir();
    format!(
        "global:\n  scrape_interval: {s}s\n  scrape_timeout: {s}s\n  evaluation_interval: {s}s\n\
         rule_files:\n  - {RULES}\n\
         scrape_configs:\n  - job_name: firstcome-e2e\n    file_sd_configs:\n      \
         - files: ['{}/*.json']\n        refresh_interval: 1s\n",
        targets.display(),
        s = INTERVAL.as_secs(),
    )
}

/// The test Prometheus, scraping the targets registered with [`Prometheus::scrape`].
pub struct Prometheus {
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts (or reuses, or reconfigures) the test Prometheus: `scripts/prometheus up`.
    pub fn shared() -> &'static Prometheus {
        static SHARED: OnceLock<Prometheus> = OnceLock::new();
        SHARED.get_or_init(|| {
            std::fs::create_dir_all(targets_dir()).unwrap();
            let file = std::env::temp_dir().join("firstcome-prometheus-e2e.yml");
            std::fs::write(&file, config()).unwrap();
            let exports = script(&["up", &file.display().to_string()]);
            Prometheus {
                url: exported(&exports, "FIRSTCOME_PROMETHEUS_URL"),
                http: reqwest::Client::new(),
            }
        })
    }

    /// Scrapes `addresses` (host:port, `/metrics`) every second, with the label
    /// `test=<name>`, until the returned guard is dropped.
    pub fn scrape(&self, name: &str, addresses: &[&str]) -> Targets {
        let path = targets_dir().join(format!("{name}.json"));
        let body = json!([{ "targets": addresses, "labels": { "test": name } }]);
        // Written aside and renamed, so discovery never reads half a file.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, body.to_string()).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        Targets { path }
    }

    async fn api(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}/api/v1/{path}", self.url))
            .form(form)
            .send()
            .await
            .map_err(|e| format!("Prometheus unreachable: {e}"))?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("not JSON: {e}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// An instant query: each series' labels and value.
    pub async fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self
            .api("query", &[("query", promql)])
            .await
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        data["result"]
            .as_array()
            .expect("an instant vector")
            .iter()
            .map(|series| (labels(&series["metric"]), number(&series["value"][1])))
            .collect()
    }

    /// The value of a query that yields one series, `None` while it yields none.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        assert!(result.len() <= 1, "{promql} yields one series: {result:?}");
        result.first().map(|(_, value)| *value)
    }

    /// A range query: each series' labels and (Unix seconds, value) points.
    pub async fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Vec<(BTreeMap<String, String>, Vec<(f64, f64)>)> {
        let (start, end, step) = (
            start.to_string(),
            end.to_string(),
            step.as_secs_f64().to_string(),
        );
        let form = [
            ("query", promql),
            ("start", &start),
            ("end", &end),
            ("step", &step),
        ];
        let data = self
            .api("query_range", &form)
            .await
            .unwrap_or_else(|e| panic!("range query {promql}: {e}"));
        data["result"]
            .as_array()
            .expect("a range vector")
            .iter()
            .map(|series| {
                let points = series["values"].as_array().unwrap().iter();
                let points = points.map(|p| (p[0].as_f64().unwrap(), number(&p[1])));
                (labels(&series["metric"]), points.collect())
            })
            .collect()
    }

    /// The alerts Prometheus holds now (pending or firing), as its API returns them.
    pub async fn alerts(&self) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/alerts", self.url))
            .send()
            .await
            .expect("Prometheus reachable");
        let body: Value = response.json().await.expect("JSON");
        body["data"]["alerts"].as_array().unwrap().clone()
    }

    /// Prometheus's own parse of a PromQL expression (`/api/v1/parse_query`): its syntax
    /// tree as JSON, or the parser's error.
    pub async fn parse(&self, promql: &str) -> Result<Value, String> {
        self.api("parse_query", &[("query", promql)]).await
    }
}

fn labels(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// A sample value as the API writes it: a string ("100", "NaN", "+Inf").
fn number(value: &Value) -> f64 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a sample value: {value}"))
}

/// A registered scrape target file; dropping it stops the scraping.
pub struct Targets {
    path: PathBuf,
}

impl Drop for Targets {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
