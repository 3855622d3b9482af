//! The Helm chart: it lints and renders for default values and for every option set, its
//! values schema rejects wrong values, and the rendered chart is accepted by a real
//! kube-apiserver — with RBAC sufficient for the operator, proven by running the operator
//! with the chart's ServiceAccount token until a campaign is Open.

use std::path::PathBuf;
use std::process::{Command, Output};

use firstcome_e2e::cluster::{apply_campaign, client, namespace, wait_status};
use firstcome_e2e::process::{Ports, Process, free_port};
use firstcome_e2e::{Services, required_env, unique_name};
use firstcome_operator::resource::Phase;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn tool(name: &str, args: &[&str]) -> Output {
    let bin = required_env("FIRSTCOME_CONTROLPLANE_BIN");
    Command::new(format!("{bin}/{name}"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"))
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn kinds(rendered: &str) -> Vec<String> {
    rendered
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_chart_lints_and_renders_with_default_and_with_every_value_set() {
    let full = "charts/firstcome/ci/full-values.yaml";
    succeeded(&tool("helm", &["lint", "--strict", "charts/firstcome"]));
    succeeded(&tool(
        "helm",
        &["lint", "--strict", "charts/firstcome", "-f", full],
    ));

    let default = succeeded(&tool(
        "helm",
        &["template", "fc", "charts/firstcome", "-n", "ops"],
    ));
    let mut default_kinds = kinds(&default);
    default_kinds.sort();
    assert_eq!(
        default_kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    assert!(
        default.contains("replicas: 2"),
        "two operator replicas by default"
    );
    assert!(default.contains("readOnlyRootFilesystem: true"));
    assert!(default.contains("type: RuntimeDefault"));

    let everything = succeeded(&tool(
        "helm",
        &[
            "template",
            "fc",
            "charts/firstcome",
            "-n",
            "ops",
            "-f",
            full,
            "--include-crds",
        ],
    ));
    let kinds = kinds(&everything);
    for kind in [
        "ServiceMonitor",
        "CustomResourceDefinition",
        "PrometheusRule",
        "ConfigMap",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} rendered: {kinds:?}"
        );
    }
    let monitors = kinds.iter().filter(|k| *k == "ServiceMonitor").count();
    assert_eq!(monitors, 2, "the operator's and the issuers'");
    for expected in [
        "--watch-namespace=shop",
        "--issuer-image=registry.example.com/firstcome-issuer:0.1.0",
        "--default-issuer-replicas=4",
        r#"- "--default-issuer-resources={\"limits\":{\"memory\":\"1Gi\"},\"requests\":{\"cpu\":\"1\",\"memory\":\"256Mi\"}}""#,
        "--default-backends-secret=shop-backends",
        "--issuer-otlp-endpoint=http://otel-collector.observability:4318",
        "image: registry.example.com/firstcome:0.1.0",
        "minAvailable: 2",
        "replicas: 3",
        "app.kubernetes.io/component: metrics",
        "- port: ops",
    ] {
        assert!(everything.contains(expected), "{expected} rendered");
    }
}

#[test]
fn the_values_schema_rejects_wrong_values_with_a_clear_message() {
    for (set, field) in [
        ("operator.replicas=0", "replicas"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("operator.logFormat=xml", "logFormat"),
        ("operator.replica=2", "replica"),
        ("backends.secretName=", "secretName"),
        ("issuer.otlpEndpoint=otel-collector:4318", "otlpEndpoint"),
        (
            "metrics.prometheusRule.runbookBaseUrl=runbooks.md",
            "runbookBaseUrl",
        ),
        ("metrics.grafanaDashboard.namespace=Monitoring", "namespace"),
    ] {
        let output = tool(
            "helm",
            &["template", "fc", "charts/firstcome", "--set", set],
        );
        assert!(!output.status.success(), "{set} must be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{set}: {stderr}"
        );
        assert!(
            stderr.contains(field),
            "{set}: the message names {field}: {stderr}"
        );
    }
}

/// `helm template` of one template with `sets`, parsed.
fn render_one(template: &str, sets: &[&str]) -> serde_yaml_ng::Value {
    let mut args = vec!["template", "fc", "charts/firstcome", "-n", "ops"];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(["--show-only", template]);
    serde_yaml_ng::from_str(&succeeded(&tool("helm", &args))).unwrap()
}

fn file(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

#[test]
fn the_alerts_are_the_rule_file_promtool_tests_and_the_dashboard_is_its_file() {
    // Off unless asked for (the default render's kinds above have neither).
    let rule = render_one(
        "templates/prometheusrule.yaml",
        &["metrics.prometheusRule.enabled=true"],
    );
    assert_eq!(rule["kind"], "PrometheusRule");
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&file("charts/firstcome/rules/firstcome.rules.yaml")).unwrap();
    assert_eq!(
        rule["spec"], rules,
        "the PrometheusRule carries the very rule file tests/alerts.rs runs promtool on"
    );

    // Runbook links pointed elsewhere: only the links change, anchors kept.
    let moved = render_one(
        "templates/prometheusrule.yaml",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.runbookBaseUrl=https://wiki.example.com/rb",
        ],
    );
    let moved_text = serde_yaml_ng::to_string(&moved["spec"]).unwrap();
    let expected = serde_yaml_ng::to_string(&rules).unwrap().replace(
        "https://firstcome.dev/docs/runbooks.md",
        "https://wiki.example.com/rb",
    );
    assert_eq!(moved_text, expected);
    assert_eq!(
        moved_text.matches("https://wiki.example.com/rb#").count(),
        9
    );

    let dashboard = render_one(
        "templates/grafana-dashboard.yaml",
        &["metrics.grafanaDashboard.enabled=true"],
    );
    assert_eq!(dashboard["kind"], "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dashboard["metadata"]["namespace"], "ops");
    let json = dashboard["data"]["firstcome.json"].as_str().unwrap();
    assert_eq!(
        json,
        file("charts/firstcome/dashboards/firstcome.json").trim_end(),
        "the ConfigMap carries the dashboard file tests/observability.rs checks"
    );
    let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(parsed["uid"], "firstcome");
    // What Grafana needs to lay it out and query it: unique panel ids, every chart on the
    // data source the user picks, unique query ids per chart.
    let panels = parsed["panels"].as_array().unwrap();
    let ids: std::collections::BTreeSet<u64> =
        panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "unique panel ids");
    for panel in panels.iter().filter(|p| p["type"] == "timeseries") {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        let refs: std::collections::BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{}", panel["title"]);
    }
}

/// A kubeconfig that authenticates with `token` to the test control plane.
fn token_kubeconfig(token: &str, path: &PathBuf) {
    let admin: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(required_env("KUBECONFIG")).unwrap())
            .unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": cluster }],
        "users": [{ "name": "operator", "user": { "token": token } }],
        "contexts": [{ "name": "operator", "context": { "cluster": "test", "user": "operator" } }],
        "current-context": "operator",
    });
    std::fs::write(path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_is_accepted_and_its_rbac_is_enough_for_the_operator() {
    let services = Services::from_env();
    let release_ns = unique_name("firstcome-system");
    succeeded(&tool("kubectl", &["create", "namespace", &release_ns]));
    let rendered = succeeded(&tool(
        "helm",
        &[
            "template",
            "fc",
            "charts/firstcome",
            "--namespace",
            &release_ns,
            "--include-crds",
        ],
    ));
    let file = std::env::temp_dir().join(format!("{release_ns}.yaml"));
    std::fs::write(&file, rendered).unwrap();
    let applied = succeeded(&tool(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            file.to_str().unwrap(),
        ],
    ));
    for object in [
        "clusterrole",
        "clusterrolebinding",
        "role",
        "rolebinding",
        "serviceaccount",
        "deployment",
        "service",
        "poddisruptionbudget",
    ] {
        let accepted = applied
            .lines()
            .any(|l| l.starts_with(&format!("{object}/")) || l.starts_with(&format!("{object}.")));
        assert!(accepted, "{object} accepted:\n{applied}");
    }

    let token = succeeded(&tool(
        "kubectl",
        &["create", "token", "fc-firstcome", "-n", &release_ns],
    ));
    let kubeconfig = std::env::temp_dir().join(format!("{release_ns}.kubeconfig"));
    token_kubeconfig(token.trim(), &kubeconfig);

    let client = client().await;
    let campaign_ns = namespace(&client, "chart", &services, &services.redis_url).await;
    let port = free_port();
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--watch-namespace",
        &campaign_ns,
        "--lease-namespace",
        &release_ns,
        "--lease-name",
        "fc-firstcome",
        "--identity",
        "chart-test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _operator = Process::start(
        "firstcome-operator",
        &args,
        &[("KUBECONFIG", kubeconfig.display().to_string())],
        Ports::one(port),
        "/healthz",
    )
    .await;

    apply_campaign(&client, &campaign_ns, "rbac", "limit: 10\n")
        .await
        .unwrap();
    let status = wait_status(
        &client,
        &campaign_ns,
        "rbac",
        "phase Open with the chart's RBAC",
        |s| s.phase == Phase::Open,
    )
    .await;
    assert_eq!(status.remaining, 10);
    let events = firstcome_e2e::cluster::event_reasons(&client, &campaign_ns, "rbac").await;
    assert!(
        events.contains(&"Opened".to_string()),
        "events published: {events:?}"
    );
}
