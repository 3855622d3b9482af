//! `crds/couponcampaigns.yaml` is generated from the Rust types; this fails when it is stale.

#[test]
fn committed_crds_match_the_rust_types() {
    for file in [
        "crds/couponcampaigns.yaml",
        "charts/firstcome/crds/couponcampaigns.yaml",
    ] {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            committed == firstcome_operator::crd_yaml(),
            "{file} is out of date: run\n  cargo run -p firstcome-operator --bin crdgen | tee {file}"
        );
    }
}
