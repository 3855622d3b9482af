//! Prints the CouponCampaign CRD as YAML: `cargo run -p firstcome-operator --bin crdgen > crds/couponcampaigns.yaml`.

use firstcome_operator::crd_yaml;

fn main() {
    print!("{}", crd_yaml());
}
