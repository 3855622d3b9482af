//! The objects a campaign owns, built as pure functions of the campaign: the issuers'
//! ConfigMap, Deployment (with the identity Secret mounted read-only) and Service.
//! Applied with server-side apply by the controller.

use std::collections::BTreeMap;

use firstcome_contract::{CampaignConfig, CampaignsFile};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::campaign::issuer_name;
use crate::defaults::IssuerDefaults;
use crate::resource::{CouponCampaign, IdentityMode};

/// Keys of the backends Secret, and the issuer environment variable each one feeds.
pub const SECRET_KEYS: [(&str, &str); 3] = [
    ("redis-url", "FIRSTCOME_REDIS_URL"),
    ("kafka-brokers", "FIRSTCOME_KAFKA_BROKERS"),
    ("database-url", "FIRSTCOME_DATABASE_URL"),
];
const CONFIG_FILE: &str = "campaigns.json";
const CONFIG_DIR: &str = "/etc/firstcome";
const HTTP_PORT: i32 = 8080;
/// Where the identity Secret (JWT keys, or the gateway secret) is mounted; the campaigns
/// file points there. Not under CONFIG_DIR: a mount inside a read-only ConfigMap volume
/// needs a mount point the runtime cannot create.
pub const IDENTITY_DIR: &str = "/etc/firstcome-identity";
/// The key of a header-mode Secret that holds the gateway's shared secret.
pub const HEADER_SECRET_KEY: &str = "secret";
const IDENTITY_VOLUME: &str = "identity";
/// Annotation on the pod template: changes when the issuers must restart.
pub const CONFIG_HASH_ANNOTATION: &str = "firstcome.dev/config-hash";

fn labels(campaign: &CouponCampaign) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "firstcome-issuer".into()),
        ("app.kubernetes.io/instance".into(), campaign.name_any()),
        (
            "app.kubernetes.io/managed-by".into(),
            "firstcome-operator".into(),
        ),
    ])
}

fn metadata(campaign: &CouponCampaign) -> ObjectMeta {
    ObjectMeta {
        name: Some(issuer_name(campaign)),
        namespace: campaign.namespace(),
        labels: Some(labels(campaign)),
        owner_references: campaign.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn campaigns_json(config: &CampaignConfig) -> String {
    let file = CampaignsFile {
        campaigns: vec![config.clone()],
    };
    serde_json::to_string_pretty(&file).expect("a campaigns file always serializes")
}

/// The issuers' configuration file.
pub fn config_map(campaign: &CouponCampaign, config: &CampaignConfig) -> ConfigMap {
    ConfigMap {
        metadata: metadata(campaign),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.into(),
            campaigns_json(config),
        )])),
        ..ConfigMap::default()
    }
}

/// What makes running issuers stale: SHA-256 of a canonical JSON of what they serve, so
/// it stays the same across Rust releases and operator upgrades (a changed hash rolls
/// every issuer). The limit is left out on purpose: issuers read it from Redis, so
/// raising it must not restart them in the middle of a sale.
fn config_hash(config: &CampaignConfig, image: &str, secret: &str) -> String {
    let served = CampaignConfig {
        limit: 0,
        ..config.clone()
    };
    let canonical = json!({ "config": served, "image": image, "secret": secret });
    format!("{:x}", Sha256::digest(canonical.to_string()))
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The issuer's environment: each backend setting from the Secret, never inline.
fn issuer_env(secret: &str) -> Vec<EnvVar> {
    SECRET_KEYS
        .iter()
        .map(|(key, var)| EnvVar {
            name: (*var).into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.to_string(),
                    key: (*key).into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .chain([EnvVar {
            name: "FIRSTCOME_LOG_FORMAT".into(),
            value: Some("json".into()),
            ..EnvVar::default()
        }])
        .collect()
}

/// The issuer container: serves applies and consumes winners of the one campaign.
fn issuer_container(campaign: &CouponCampaign, defaults: &IssuerDefaults) -> Container {
    Container {
        name: "issuer".into(),
        image: Some(defaults.image(campaign).into()),
        args: Some(vec![
            "serve".into(),
            "--listen".into(),
            format!("0.0.0.0:{HTTP_PORT}"),
            "--campaigns-file".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
            "--topic-partitions".into(),
            campaign.spec.topic.partitions.to_string(),
            "--topic-replication-factor".into(),
            campaign.spec.topic.replication_factor.to_string(),
            "--shutdown-delay-ms".into(),
            "5000".into(),
        ]),
        env: Some(issuer_env(defaults.backends_secret(campaign))),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: HTTP_PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(defaults.resources(campaign)),
        volume_mounts: Some(volume_mounts(campaign)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The Secret the campaign's identity mode reads its keys or secret from.
fn identity_secret(campaign: &CouponCampaign) -> Option<&str> {
    let identity = &campaign.spec.identity;
    match identity.mode {
        IdentityMode::None => None,
        IdentityMode::Jwt => identity.jwt.as_ref().map(|j| j.secret_ref.name.as_str()),
        IdentityMode::Header => identity.header.as_ref().map(|h| h.secret_ref.name.as_str()),
    }
}

/// The campaigns file, and the identity Secret if the mode has one.
fn volumes(campaign: &CouponCampaign) -> Vec<Volume> {
    let config = Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: issuer_name(campaign),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let identity = identity_secret(campaign).map(|secret| Volume {
        name: IDENTITY_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    std::iter::once(config).chain(identity).collect()
}

/// Both volumes read-only; the Secret without subPath, so key updates reach the pods.
fn volume_mounts(campaign: &CouponCampaign) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let identity = identity_secret(campaign).map(|_| mount(IDENTITY_VOLUME, IDENTITY_DIR));
    std::iter::once(mount("config", CONFIG_DIR))
        .chain(identity)
        .collect()
}

/// The issuer Deployment: every pod serves applies and consumes winners.
pub fn deployment(
    campaign: &CouponCampaign,
    config: &CampaignConfig,
    defaults: &IssuerDefaults,
) -> Deployment {
    let image = defaults.image(campaign);
    let replicas = defaults.replicas(campaign);
    let secret = defaults.backends_secret(campaign);
    Deployment {
        metadata: metadata(campaign),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels(campaign)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(campaign)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.into(),
                        config_hash(config, image, secret),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![issuer_container(campaign, defaults)],
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(volumes(campaign)),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The Service clients apply through.
pub fn service(campaign: &CouponCampaign) -> Service {
    Service {
        metadata: metadata(campaign),
        spec: Some(ServiceSpec {
            selector: Some(labels(campaign)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::campaign_config;
    use crate::fixtures::campaign;

    fn defaults(image: &str) -> IssuerDefaults {
        IssuerDefaults {
            image: image.into(),
            ..IssuerDefaults::default()
        }
    }

    fn hash_of(yaml: &str) -> String {
        let c = campaign(yaml);
        let d = deployment(&c, &campaign_config(&c).unwrap(), &defaults("firstcome:1"));
        d.spec.template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
    }

    #[test]
    fn owned_objects_point_at_the_campaign() {
        let c = campaign("limit: 100\n");
        let config = campaign_config(&c).unwrap();
        for meta in [
            config_map(&c, &config).metadata,
            deployment(&c, &config, &defaults("img")).metadata,
            service(&c).metadata,
        ] {
            let owner = &meta.owner_references.unwrap()[0];
            assert_eq!(owner.kind, "CouponCampaign");
            assert_eq!(owner.name, "black-friday");
            assert_eq!(owner.controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            assert_eq!(meta.name.as_deref(), Some("black-friday-issuer"));
        }
    }

    #[test]
    fn config_map_holds_the_contract_campaigns_file() {
        let c = campaign("limit: 100\nperUserLimit: 2\n");
        let config = campaign_config(&c).unwrap();
        let data = config_map(&c, &config).data.unwrap();
        let file: CampaignsFile = serde_json::from_str(&data[CONFIG_FILE]).unwrap();
        assert_eq!(file.campaigns, vec![config]);
    }

    #[test]
    fn deployment_wires_secret_probes_and_security() {
        let c =
            campaign("limit: 100\nissuer: {replicas: 3}\nbackends: {secretName: shop-backends}\n");
        let d = deployment(&c, &campaign_config(&c).unwrap(), &defaults("firstcome:1"));
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("firstcome:1"));
        let env = container.env.as_ref().unwrap();
        let redis = env
            .iter()
            .find(|e| e.name == "FIRSTCOME_REDIS_URL")
            .unwrap();
        let from = redis
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (from.name.as_str(), from.key.as_str()),
            ("shop-backends", "redis-url")
        );
        assert!(
            env.iter().all(|e| e.value.as_deref() != Some("redis://")),
            "no credential inline"
        );
        assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
        assert!(container.resources.as_ref().unwrap().requests.is_some());
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn the_identity_secret_is_mounted_read_only_where_the_config_points() {
        let c = campaign(
            "limit: 100\nidentity: {jwt: {issuer: i, audience: a, secretRef: {name: shop-keys}}}\n",
        );
        let d = deployment(&c, &campaign_config(&c).unwrap(), &defaults("img"));
        let pod = d.spec.template.spec.unwrap();
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "identity");
        let secret = volume.unwrap().secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("shop-keys"));
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let mount = mounts.iter().find(|m| m.name == "identity").unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (IDENTITY_DIR, Some(true))
        );
        assert!(
            mount.sub_path.is_none(),
            "a subPath mount would never see new keys"
        );
        let none = campaign("limit: 100\n");
        let d = deployment(&none, &campaign_config(&none).unwrap(), &defaults("img"));
        let volumes = d.spec.template.spec.unwrap().volumes.unwrap();
        assert_eq!(volumes.len(), 1, "identity none mounts no Secret");
    }

    #[test]
    fn paused_campaigns_run_no_issuers() {
        let c = campaign("limit: 100\npaused: true\n");
        let d = deployment(&c, &campaign_config(&c).unwrap(), &defaults("img"));
        assert_eq!(d.spec.replicas, Some(0));
    }

    #[test]
    fn spec_changes_roll_issuers_but_a_limit_change_does_not() {
        let base = hash_of("limit: 100\n");
        assert_eq!(
            hash_of("limit: 500\n"),
            base,
            "raising the limit keeps issuers running"
        );
        assert_ne!(hash_of("limit: 100\nperUserLimit: 2\n"), base);
        assert_ne!(hash_of("limit: 100\nopensAt: 2030-01-01T00:00:00Z\n"), base);
        assert_ne!(hash_of("limit: 100\nissuer: {image: other}\n"), base);
        assert_ne!(hash_of("limit: 100\nbackends: {secretName: other}\n"), base);
    }

    /// The hash is part of every running Deployment: if this value changes, upgrading
    /// the operator restarts the issuers of every campaign. It is the SHA-256 of
    /// `{"config":{"limit":0,"name":"shop.black-friday","perUserLimit":1,"topic":"firstcome.shop.black-friday.winners"},"image":"firstcome:1","secret":"firstcome-backends"}`.
    #[test]
    fn the_config_hash_is_stable_across_builds() {
        assert_eq!(
            hash_of("limit: 100\n"),
            "d5b58a5750db66ee4ffff769f9915c46c09b8baa62e9845c83b485a460ae8c97"
        );
    }
}
