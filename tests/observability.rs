//! A real Prometheus (`scripts/prometheus`) scraping a real issuer and operator every
//! second, with the chart's alerts loaded: the counters read exactly in PromQL, an injected
//! drift raises its alert, and every query of the chart's dashboard parses and names only
//! metrics the two processes expose. `spike_over_time` (run by `scripts/plot-spike`)
//! records a spike as Prometheus saw it, for the plot in docs/operations.md.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firstcome_contract::CampaignConfig;
use firstcome_e2e::cluster::{
    apply_campaign, apply_raw_campaign, client, install_crd, namespace, report_ready_issuers,
    start_operator, wait_leader, wait_status,
};
use firstcome_e2e::issuer::{postgres, start_distributed, temp_dir, wait_for_coupons};
use firstcome_e2e::process::Process;
use firstcome_e2e::prometheus::Prometheus;
use firstcome_e2e::spike::{Outcome, Spike, tally, users};
use firstcome_e2e::{Services, unique_name, wait_until};
use firstcome_operator::resource::Phase;
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/firstcome/dashboards/firstcome.json"
);
const WAIT: Duration = Duration::from_secs(60);

/// Waits until `promql` reads `expected` in Prometheus.
async fn wait_reading(prometheus: &Prometheus, promql: &str, expected: f64) {
    wait_until(&format!("{promql} == {expected}"), WAIT, || async {
        match prometheus.value(promql).await {
            Some(value) if value == expected => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await
}

/// Waits until the alert `name` whose label `key` is `value` is `pending` or `firing`
/// (`present`), or until it is gone (`!present`).
async fn wait_alert(
    prometheus: &Prometheus,
    name: &str,
    (key, value): (&str, &str),
    present: bool,
) {
    let what = format!(
        "alert {name} of {key}={value} {}",
        if present { "raised" } else { "gone" }
    );
    wait_until(&what, WAIT, || async {
        let alerts = prometheus.alerts().await;
        let state = alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == name && a["labels"][key] == value)
            .map(|a| a["state"].as_str().unwrap_or_default().to_string());
        match (&state, present) {
            (Some(s), true) if s == "pending" || s == "firing" => Ok(()),
            (None, false) => Ok(()),
            _ => Err(format!("{state:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_exact_counts_raises_drift_and_parses_the_dashboard() {
    let services = Services::from_env();
    let prometheus = Prometheus::shared();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "obs", &services, &services.redis_url).await;
    let operator = start_operator(&ns, "obs", &[]).await;
    wait_leader(&operator, "the operator to lead").await;
    // Opened a minute ago, and not Ready until an issuer pod is.
    let opened = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let spec = format!("limit: 100\nopensAt: {opened}\n");
    apply_campaign(&client, &ns, "sale", &spec).await.unwrap();
    // A stored object the operator cannot read: a failed reconcile, counted by kind (so
    // the failures' family has a series for the dashboard check below).
    let too_many = u64::from(u32::MAX) + 1;
    let malformed = serde_json::json!({ "limit": 10, "perUserLimit": too_many });
    apply_raw_campaign(&client, &ns, "malformed", malformed)
        .await
        .unwrap();
    let status = wait_status(&client, &ns, "sale", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let id = status.campaign_id.unwrap();
    // The audit every 3 s: drift shows for one interval or two, then is re-published.
    let limit = format!("{id}:100");
    let issuer = start_distributed(
        &services,
        &["--campaign", &limit, "--audit-interval-ms", "3000"],
    )
    .await;
    let _targets = prometheus.scrape(&ns, &[address(&issuer), address(&operator)]);

    // The operator's view: open and not Ready without a ready issuer pod (alerted), then
    // Ready (the alert goes).
    let ready = format!("firstcome_operator_campaign_ready{{campaign=\"{id}\"}}");
    wait_reading(prometheus, &ready, 0.0).await;
    let not_ready = "FirstcomeCampaignNotReadyBeforeOpening";
    wait_alert(prometheus, not_ready, ("campaign", &id), true).await;
    report_ready_issuers(&client, &ns, "sale", 1).await;
    wait_reading(prometheus, &ready, 1.0).await;
    wait_alert(prometheus, not_ready, ("campaign", &id), false).await;
    let leader = format!("sum(firstcome_operator_leader{{test=\"{ns}\"}})");
    wait_reading(prometheus, &leader, 1.0).await;

    // 1000 applies on limit 100: Prometheus reads exactly what the users were told.
    let answers = Spike::new(&[&issuer.base], &id).run(users("u", 1000)).await;
    let outcomes = tally(&answers);
    assert_eq!(outcomes.get(&Outcome::Admitted), Some(&100), "{outcomes:?}");
    assert_eq!(outcomes.get(&Outcome::SoldOut), Some(&900), "{outcomes:?}");
    let applies = |outcome: &str| {
        format!("sum(firstcome_applies_total{{campaign=\"{id}\", outcome=~\"{outcome}\"}})")
    };
    wait_reading(prometheus, &applies(".*"), 1000.0).await;
    assert_eq!(prometheus.value(&applies("admitted")).await, Some(100.0));
    assert_eq!(prometheus.value(&applies("sold_out")).await, Some(900.0));
    let pool = postgres(&services).await;
    wait_for_coupons(&pool, &id, 100).await;
    let persisted = format!("sum(firstcome_coupons_persisted_total{{campaign=\"{id}\"}})");
    wait_reading(prometheus, &persisted, 100.0).await;
    let pending = format!("firstcome_pending_persistence{{campaign=\"{id}\"}}");
    wait_reading(prometheus, &pending, 0.0).await;
    let provisioned = format!("firstcome_campaign_provisioned{{campaign=\"{id}\"}}");
    assert_eq!(prometheus.value(&provisioned).await, Some(1.0));
    let unconfirmed = format!("firstcome_unconfirmed_winners{{campaign=\"{id}\"}}");
    wait_reading(prometheus, &unconfirmed, 0.0).await;

    // Drift: three winners' coupons vanish from PostgreSQL.
    let deleted = sqlx::query("DELETE FROM coupons WHERE campaign = $1 AND sequence > 97")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 3);
    let drift = format!("firstcome_reconcile_missing_coupons{{campaign=\"{id}\"}}");
    wait_reading(prometheus, &drift, 3.0).await;
    wait_alert(prometheus, "FirstcomeDrift", ("campaign", &id), true).await;
    // The audit re-publishes them: the coupons come back, the drift and its alert go.
    wait_for_coupons(&pool, &id, 100).await;
    wait_reading(prometheus, &drift, 0.0).await;
    wait_alert(prometheus, "FirstcomeDrift", ("campaign", &id), false).await;
    let republished = format!("sum(firstcome_winners_republished_total{{campaign=\"{id}\"}})");
    wait_reading(prometheus, &republished, 3.0).await;

    let room = start_with_waiting_room(&services).await;
    let exposed = exposed_names(&[&issuer, &operator, &room]).await;
    dashboard_queries_parse_and_name_exposed_metrics(prometheus, &exposed).await;
}

/// An issuer serving a campaign with a waiting room, so the room's metrics are exposed
/// for the dashboard check.
async fn start_with_waiting_room(services: &Services) -> Process {
    let campaign = unique_name("room");
    let dir = temp_dir("observability-room");
    let config = serde_json::json!({"campaigns": [{
        "name": campaign, "limit": 10,
        "topic": CampaignConfig::default_topic(&campaign),
        "waitingRoom": { "admissionRate": 10 },
    }]});
    let (file, secret) = (dir.join("campaigns.json"), dir.join("room-secret"));
    std::fs::write(&file, config.to_string()).unwrap();
    std::fs::write(&secret, unique_name("secret").repeat(3)).unwrap();
    let flags = [
        "--campaigns-file",
        file.to_str().unwrap(),
        "--waiting-room-secret-file",
        secret.to_str().unwrap(),
    ];
    start_distributed(services, &flags).await
}

/// host:port of a process's metrics.
fn address(process: &Process) -> &str {
    process.ops_base.trim_start_matches("http://")
}

/// The metric names a process's `/metrics` exposes: every sample's name, and for a
/// family declared without samples yet (a counter nothing has counted), the names its
/// `# TYPE` makes it expose.
async fn exposed_names(processes: &[&Process]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for process in processes {
        for line in process.metrics().await.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (family, kind) = declared.split_once(' ').unwrap();
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                names.insert(line[..end].to_string());
            }
        }
    }
    names
}

/// Every `expr` of the dashboard's panels, with Grafana's variables as Grafana would
/// substitute them (`$campaign` = All, `$__rate_interval` = one minute).
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let queries: Vec<String> = panels
        .iter()
        .filter_map(|panel| panel["targets"].as_array())
        .flatten()
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .map(|expr| {
            expr.replace("$campaign", ".*")
                .replace("$__rate_interval", "1m")
        })
        .collect();
    let charts = panels.iter().filter(|p| p["type"] == "timeseries").count();
    assert!(queries.len() >= charts, "every chart has its query");
    queries
}

async fn dashboard_queries_parse_and_name_exposed_metrics(
    prometheus: &Prometheus,
    exposed: &BTreeSet<String>,
) {
    let mut named = BTreeSet::new();
    for query in dashboard_queries() {
        let tree = prometheus
            .parse(&query)
            .await
            .unwrap_or_else(|e| panic!("the dashboard query {query} does not parse: {e}"));
        selectors(&tree, &mut named);
        prometheus.query(&query).await; // and Prometheus runs it
    }
    let unknown: Vec<_> = named.difference(exposed).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics nobody exposes: {unknown:?}"
    );
    for family in [
        "firstcome_applies_total",
        "firstcome_operator_reconciles_total",
    ] {
        assert!(named.contains(family), "the dashboard shows {family}");
    }
}

/// The metric names of every selector in a syntax tree from `/api/v1/parse_query`.
fn selectors(node: &Value, names: &mut BTreeSet<String>) {
    match node {
        Value::Object(fields) => {
            let kind = fields.get("type").and_then(Value::as_str);
            if let (Some("vectorSelector" | "matrixSelector"), Some(Value::String(name))) =
                (kind, fields.get("name"))
            {
                names.insert(name.clone());
            }
            fields.values().for_each(|child| selectors(child, names));
        }
        Value::Array(items) => items.iter().for_each(|child| selectors(child, names)),
        _ => {}
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A spike as Prometheus saw it, scraping every second: admitted/s, sold-out answers/s
/// and the p99 admission latency, one point a second, written as CSV to
/// `FIRSTCOME_SPIKE_CSV` for `scripts/plot-spike`. 40,000 users on limit 5,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a recording for docs/operations.md: scripts/plot-spike runs it"]
async fn spike_over_time() {
    let csv = std::env::var("FIRSTCOME_SPIKE_CSV").expect("FIRSTCOME_SPIKE_CSV: where to write");
    let services = Services::from_env();
    let prometheus = Prometheus::shared();
    let campaign = unique_name("plot");
    let file = temp_dir("plot").join("campaigns.json");
    let config = serde_json::json!({"campaigns": [{
        "name": campaign, "limit": 5000,
        "topic": CampaignConfig::default_topic(&campaign),
    }]});
    std::fs::write(&file, config.to_string()).unwrap();
    let issuer = start_distributed(&services, &["--campaigns-file", file.to_str().unwrap()]).await;
    let _targets = prometheus.scrape(&campaign, &[address(&issuer)]);
    let c = format!("campaign=\"{campaign}\"");
    let applies = format!("sum(firstcome_applies_total{{{c}}})");
    wait_reading(prometheus, &applies, 0.0).await;
    // A few quiet scrapes first, so the plot starts from zero.
    let scrapes =
        format!("count_over_time(firstcome_applies_total{{{c}, outcome=\"admitted\"}}[4s])");
    wait_reading(prometheus, &scrapes, 4.0).await;

    let start = (now() - 2.0).floor();
    let answers = Spike::new(&[&issuer.base], &campaign)
        .run(users("p", 40_000))
        .await;
    let outcomes = tally(&answers);
    assert_eq!(
        outcomes.get(&Outcome::Admitted),
        Some(&5000),
        "{outcomes:?}"
    );
    wait_reading(prometheus, &applies, 40_000.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = now();

    let series = [
        format!("sum(irate(firstcome_applies_total{{{c}, outcome=\"admitted\"}}[3s]))"),
        format!("sum(irate(firstcome_applies_total{{{c}, outcome=\"sold_out\"}}[3s]))"),
        format!(
            "histogram_quantile(0.99, sum by (le) (rate(firstcome_admission_duration_seconds_bucket{{{c}}}[3s])))"
        ),
    ];
    let mut columns = Vec::new();
    for query in &series {
        let result = prometheus
            .query_range(query, start, end, Duration::from_secs(1))
            .await;
        let points = result.into_iter().next().map(|(_, points)| points);
        columns.push(points.unwrap_or_default());
    }
    std::fs::write(&csv, spike_csv(start, &columns)).unwrap();
    eprintln!("spike of 40000 users, limit 5000: {outcomes:?}; written to {csv}");
}

/// One line a second: seconds since `start`, then each column's value at that second
/// (empty where Prometheus has none, e.g. no latency while nothing is admitted).
fn spike_csv(start: f64, columns: &[Vec<(f64, f64)>]) -> String {
    let mut out = String::from("seconds,admitted_per_second,sold_out_per_second,p99_seconds\n");
    for (at, _) in &columns[0] {
        let values: Vec<String> = columns
            .iter()
            .map(|column| {
                let value = column.iter().find(|(t, _)| t == at).map(|(_, v)| *v);
                value
                    .filter(|v| v.is_finite())
                    .map_or(String::new(), |v| format!("{v:.3}"))
            })
            .collect();
        out.push_str(&format!("{:.0},{}\n", at - start, values.join(",")));
    }
    out
}
