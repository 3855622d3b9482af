//! `crds/couponcampaigns.yaml` is generated from the Rust types; this fails when it is stale.

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/couponcampaigns.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/couponcampaigns.yaml exists");
    assert!(
        committed == firstcome_operator::crd_yaml(),
        "crds/couponcampaigns.yaml is out of date: run\n  cargo run -p firstcome-operator --bin crdgen > crds/couponcampaigns.yaml"
    );
}
