//! The chart's alerts checked with Prometheus's own promtool (built by
//! `scripts/prometheus`): the rule file is valid, every alert fires on synthetic series
//! exactly when it should (tests/alerts/firstcome.rules.test.yaml), and every alert has a
//! runbook section its annotation links to.

use std::collections::BTreeSet;

use firstcome_e2e::prometheus::{RULES, promtool};
use serde_yaml_ng::Value;

const UNIT_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/alerts/firstcome.rules.test.yaml"
);
const RUNBOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/runbooks.md");
const RUNBOOK_BASE: &str = "https://firstcome.dev/docs/runbooks.md#";

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every alerting rule of the rule file.
fn alert_rules() -> Vec<Value> {
    yaml(RULES)["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap().clone())
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

fn name(rule: &Value) -> &str {
    rule["alert"].as_str().unwrap()
}

#[test]
fn promtool_accepts_the_rule_file() {
    let (ok, output) = promtool(&["check", "rules", RULES]);
    assert!(ok, "{output}");
    assert!(output.contains("SUCCESS: 9 rules found"), "{output}");
}

#[test]
fn every_alert_fires_on_its_synthetic_series_and_not_before() {
    let (ok, output) = promtool(&["test", "rules", UNIT_TESTS]);
    assert!(ok, "{output}");
    assert!(output.contains("SUCCESS"), "{output}");

    // Each alert is expected to fire somewhere, and to be quiet somewhere.
    let tests = yaml(UNIT_TESTS);
    let cases: Vec<&Value> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .collect();
    for rule in alert_rules() {
        let (firing, quiet): (Vec<&Value>, Vec<&Value>) = cases
            .iter()
            .copied()
            .filter(|c| c["alertname"].as_str() == Some(name(&rule)))
            .partition(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()));
        assert!(
            !firing.is_empty(),
            "{} has a case where it fires",
            name(&rule)
        );
        assert!(
            !quiet.is_empty(),
            "{} has a case where it is quiet",
            name(&rule)
        );
    }
}

#[test]
fn every_alert_links_its_own_runbook_section() {
    let runbooks = std::fs::read_to_string(RUNBOOKS).unwrap();
    let sections: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(str::to_string)
        .collect();
    let alerts: BTreeSet<String> = alert_rules().iter().map(|r| name(r).to_string()).collect();
    assert_eq!(sections, alerts, "one runbook section per alert, no other");
    for rule in alert_rules() {
        let annotations = &rule["annotations"];
        let url = annotations["runbook_url"].as_str().unwrap();
        assert_eq!(
            url,
            format!("{RUNBOOK_BASE}{}", name(&rule).to_lowercase()),
            "the anchor GitHub and most renderers give the section ## {}",
            name(&rule)
        );
        for key in ["summary", "description"] {
            assert!(
                annotations.get(key).is_some(),
                "{} has a {key}",
                name(&rule)
            );
        }
        assert!(rule["labels"]["severity"].as_str().is_some());
    }
}
