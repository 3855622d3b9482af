//! The objects a campaign owns, built as pure functions of the campaign: the issuers'
//! ConfigMap, Deployment (with the identity Secret mounted read-only), the Service
//! clients apply through (the API port only), the metrics Service (the operational
//! port, for Prometheus) and, when asked for, the issuers' HorizontalPodAutoscaler.
//! Applied with server-side apply by the controller.

use std::collections::BTreeMap;

use firstcome_contract::{CampaignConfig, CampaignsFile};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
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

use crate::campaign::{IDENTITY_DIR, issuer_name};
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
const IDENTITY_VOLUME: &str = "identity";
/// Where the waiting room's Secret is mounted; the issuer reads its key `secret`.
pub const WAITING_ROOM_DIR: &str = "/etc/firstcome-waiting-room";
/// The key of the waiting room's Secret that holds the room secret.
pub const WAITING_ROOM_SECRET_KEY: &str = "secret";
const WAITING_ROOM_VOLUME: &str = "waiting-room";
/// Probes and metrics: apart from the API, never behind the customer-facing Service.
const OPS_PORT: i32 = 9090;
/// Label of the metrics Service, for a ServiceMonitor to select.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
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
            port: IntOrString::String("ops".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The issuer's environment: each backend setting from the Secret, never inline; the
/// traces collector, when the operator names one.
fn issuer_env(secret: &str, otlp_endpoint: Option<&str>) -> Vec<EnvVar> {
    let value = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    };
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
        .chain([value("FIRSTCOME_LOG_FORMAT", "json")])
        .chain(otlp_endpoint.map(|url| value("OTEL_EXPORTER_OTLP_ENDPOINT", url)))
        .collect()
}

/// The issuer's arguments: where it listens, what it serves, whom it trusts.
fn issuer_args(campaign: &CouponCampaign) -> Vec<String> {
    let mut args = vec![
        "serve".into(),
        "--listen".into(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--ops-listen".into(),
        format!("0.0.0.0:{OPS_PORT}"),
        "--campaigns-file".into(),
        format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        "--topic-partitions".into(),
        campaign.spec.topic.partitions.to_string(),
        "--topic-replication-factor".into(),
        campaign.spec.topic.replication_factor.to_string(),
        "--shutdown-delay-ms".into(),
        "5000".into(),
    ];
    let proxies = &campaign.spec.issuer.trusted_proxies;
    if !proxies.is_empty() {
        args.extend(["--trusted-proxies".into(), proxies.join(",")]);
    }
    if campaign.spec.waiting_room.is_some() {
        args.extend([
            "--waiting-room-secret-file".into(),
            format!("{WAITING_ROOM_DIR}/{WAITING_ROOM_SECRET_KEY}"),
        ]);
    }
    args
}

/// The issuer container: serves applies and consumes winners of the one campaign.
fn issuer_container(campaign: &CouponCampaign, defaults: &IssuerDefaults) -> Container {
    Container {
        name: "issuer".into(),
        image: Some(defaults.image(campaign).into()),
        args: Some(issuer_args(campaign)),
        env: Some(issuer_env(
            defaults.backends_secret(campaign),
            defaults.otlp_endpoint.as_deref(),
        )),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("ops".into()),
                container_port: OPS_PORT,
                ..ContainerPort::default()
            },
        ]),
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
        IdentityMode::Jwt => (identity.jwt.as_ref())
            .and_then(|j| j.secret_ref.as_ref())
            .map(|s| s.name.as_str()),
        IdentityMode::Header => identity.header.as_ref().map(|h| h.secret_ref.name.as_str()),
    }
}

/// The Secrets the issuers mount: (volume, Secret name, mount path) of the identity
/// Secret if the mode has one, and the waiting room's if the campaign has one.
fn mounted_secrets(campaign: &CouponCampaign) -> Vec<(&'static str, &str, &'static str)> {
    let identity = identity_secret(campaign).map(|secret| (IDENTITY_VOLUME, secret, IDENTITY_DIR));
    let room = (campaign.spec.waiting_room.as_ref()).map(|room| {
        (
            WAITING_ROOM_VOLUME,
            room.secret_ref.name.as_str(),
            WAITING_ROOM_DIR,
        )
    });
    identity.into_iter().chain(room).collect()
}

/// The campaigns file, and the Secrets of [`mounted_secrets`].
fn volumes(campaign: &CouponCampaign) -> Vec<Volume> {
    let config = Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: issuer_name(campaign),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let secrets = mounted_secrets(campaign)
        .into_iter()
        .map(|(volume, secret, _)| Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    std::iter::once(config).chain(secrets).collect()
}

/// Every volume read-only; the Secrets without subPath, so key updates reach the pods.
fn volume_mounts(campaign: &CouponCampaign) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let secrets =
        (mounted_secrets(campaign).into_iter()).map(|(volume, _, dir)| mount(volume, dir));
    std::iter::once(mount("config", CONFIG_DIR))
        .chain(secrets)
        .collect()
}

/// The issuer Deployment: every pod serves applies and consumes winners. `replicas` is
/// `None` when an autoscaler owns them: the field is then left out of what the operator
/// applies.
pub fn deployment(
    campaign: &CouponCampaign,
    config: &CampaignConfig,
    defaults: &IssuerDefaults,
    replicas: Option<i32>,
) -> Deployment {
    let image = defaults.image(campaign);
    let secret = defaults.backends_secret(campaign);
    Deployment {
        metadata: metadata(campaign),
        spec: DeploymentSpec {
            replicas,
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

/// The issuers' HorizontalPodAutoscaler (CPU), when `issuer.scaling.autoscaler` asks for
/// one and issuers are meant to run: `min_replicas` is the plan's replicas, so the
/// autoscaler never goes below the plan.
pub fn autoscaler(campaign: &CouponCampaign, min_replicas: i32) -> Option<HorizontalPodAutoscaler> {
    let scaling = campaign.spec.issuer.scaling.as_ref()?;
    let autoscaler = scaling.autoscaler.as_ref()?;
    (min_replicas >= 1).then(|| HorizontalPodAutoscaler {
        metadata: metadata(campaign),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: issuer_name(campaign),
            },
            min_replicas: Some(min_replicas),
            max_replicas: autoscaler.max_replicas.max(min_replicas),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(autoscaler.target_cpu_utilization_percent),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    })
}

/// Name of the metrics Service of a campaign.
pub fn metrics_service_name(campaign: &CouponCampaign) -> String {
    format!("{}-metrics", issuer_name(campaign))
}

/// The Service Prometheus scrapes the issuers through: the operational port only,
/// labelled `app.kubernetes.io/component: metrics`.
pub fn metrics_service(campaign: &CouponCampaign) -> Service {
    let mut metadata = metadata(campaign);
    metadata.name = Some(metrics_service_name(campaign));
    (metadata.labels.get_or_insert_default()).insert(COMPONENT_LABEL.into(), "metrics".into());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(labels(campaign)),
            ports: Some(vec![ServicePort {
                name: Some("ops".into()),
                port: OPS_PORT,
                target_port: Some(IntOrString::String("ops".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service clients apply through: the API port only.
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
        let d = deployment(
            &c,
            &campaign_config(&c).unwrap(),
            &defaults("firstcome:1"),
            Some(2),
        );
        d.spec.template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
    }

    #[test]
    fn owned_objects_point_at_the_campaign() {
        let c = campaign("limit: 100\n");
        let config = campaign_config(&c).unwrap();
        for meta in [
            config_map(&c, &config).metadata,
            deployment(&c, &config, &defaults("img"), Some(2)).metadata,
            service(&c).metadata,
            metrics_service(&c).metadata,
        ] {
            let owner = &meta.owner_references.unwrap()[0];
            assert_eq!(owner.kind, "CouponCampaign");
            assert_eq!(owner.name, "black-friday");
            assert_eq!(owner.controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            assert!(meta.name.unwrap().starts_with("black-friday-issuer"));
        }
    }

    #[test]
    fn the_autoscaler_floor_is_the_plan_and_it_targets_the_issuers() {
        let c = campaign(
            "limit: 100\nissuer: {scaling: {baseReplicas: 2, peakReplicas: 8, autoscaler: {maxReplicas: 20}}}\n",
        );
        let hpa = autoscaler(&c, 8).unwrap();
        let owner = &hpa.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("CouponCampaign", Some(true))
        );
        let spec = hpa.spec;
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(8), 20));
        let target = spec.scale_target_ref;
        assert_eq!(
            (target.kind.as_str(), target.name.as_str()),
            ("Deployment", "black-friday-issuer")
        );
        let cpu = spec.metrics.unwrap()[0].resource.clone().unwrap();
        assert_eq!(
            (cpu.name.as_str(), cpu.target.average_utilization),
            ("cpu", Some(70))
        );
        assert!(autoscaler(&c, 0).is_none(), "paused: no autoscaler");
        let without = campaign("limit: 100\nissuer: {scaling: {peakReplicas: 8}}\n");
        assert!(autoscaler(&without, 8).is_none());
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
        let d = deployment(
            &c,
            &campaign_config(&c).unwrap(),
            &defaults("firstcome:1"),
            Some(3),
        );
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
    fn issuers_export_traces_only_where_the_operator_says() {
        let c = campaign("limit: 100\n");
        let env_of = |defaults: &IssuerDefaults| {
            let d = deployment(&c, &campaign_config(&c).unwrap(), defaults, Some(2));
            d.spec.template.spec.unwrap().containers[0]
                .env
                .clone()
                .unwrap()
        };
        let otlp = |env: &[EnvVar]| {
            (env.iter().find(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT"))
                .and_then(|e| e.value.clone())
        };
        assert_eq!(otlp(&env_of(&defaults("img"))), None);
        let traced = IssuerDefaults {
            otlp_endpoint: Some("http://otel-collector:4318".into()),
            ..defaults("img")
        };
        assert_eq!(
            otlp(&env_of(&traced)).as_deref(),
            Some("http://otel-collector:4318")
        );
    }

    #[test]
    fn the_waiting_room_secret_is_mounted_read_only_where_the_issuer_reads_it() {
        let c = campaign(
            "limit: 100\nidentity: {mode: none}\nwaitingRoom: {admissionRate: 50, secretRef: {name: shop-room}}\n",
        );
        let d = deployment(&c, &campaign_config(&c).unwrap(), &defaults("img"), Some(2));
        let pod = d.spec.template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        let volume = volumes.iter().find(|v| v.name == "waiting-room").unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("shop-room"));
        let container = &pod.containers[0];
        let mounts = container.volume_mounts.as_ref().unwrap();
        let mount = mounts.iter().find(|m| m.name == "waiting-room").unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (WAITING_ROOM_DIR, Some(true))
        );
        let args = container.args.as_ref().unwrap();
        let flag = args.iter().position(|a| a == "--waiting-room-secret-file");
        assert_eq!(
            args.get(flag.unwrap() + 1).map(String::as_str),
            Some("/etc/firstcome-waiting-room/secret")
        );
        let plain = campaign("limit: 100\nidentity: {mode: none}\n");
        let d = deployment(
            &plain,
            &campaign_config(&plain).unwrap(),
            &defaults("img"),
            Some(2),
        );
        let pod = d.spec.template.spec.unwrap();
        assert_eq!(pod.volumes.unwrap().len(), 1, "no room, no room Secret");
        let args = pod.containers[0].args.clone().unwrap();
        assert!(!args.iter().any(|a| a == "--waiting-room-secret-file"));
    }

    #[test]
    fn the_identity_secret_is_mounted_read_only_where_the_config_points() {
        let c = campaign(
            "limit: 100\nidentity: {jwt: {issuer: i, audience: a, secretRef: {name: shop-keys}}}\n",
        );
        let d = deployment(&c, &campaign_config(&c).unwrap(), &defaults("img"), Some(2));
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
        let d = deployment(
            &none,
            &campaign_config(&none).unwrap(),
            &defaults("img"),
            Some(2),
        );
        let volumes = d.spec.template.spec.unwrap().volumes.unwrap();
        assert_eq!(volumes.len(), 1, "identity none mounts no Secret");
        let provider = campaign(
            "limit: 100\nidentity: {jwt: {issuer: i, audience: a, jwksUrl: 'https://idp/jwks'}}\n",
        );
        let d = deployment(
            &provider,
            &campaign_config(&provider).unwrap(),
            &defaults("img"),
            Some(2),
        );
        let volumes = d.spec.template.spec.unwrap().volumes.unwrap();
        assert_eq!(volumes.len(), 1, "keys from a JWKS URL mount no Secret");
    }

    #[test]
    fn probes_and_metrics_are_on_the_ops_port_and_clients_see_only_the_api() {
        let c = campaign("limit: 100\n");
        let d = deployment(&c, &campaign_config(&c).unwrap(), &defaults("img"), Some(2));
        let container = &d.spec.template.spec.unwrap().containers[0];
        let args = container.args.as_ref().unwrap();
        let after = |flag: &str| &args[args.iter().position(|a| a == flag).unwrap() + 1];
        assert_eq!(after("--listen"), "0.0.0.0:8080");
        assert_eq!(after("--ops-listen"), "0.0.0.0:9090");
        let ports: Vec<(&str, i32)> = (container.ports.as_ref().unwrap().iter())
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(ports, [("http", 8080), ("ops", 9090)]);
        for probe in [&container.readiness_probe, &container.liveness_probe] {
            let port = &probe.as_ref().unwrap().http_get.as_ref().unwrap().port;
            assert_eq!(port, &IntOrString::String("ops".into()));
        }
        let target = |s: Service| {
            let ports = s.spec.unwrap().ports.unwrap();
            assert_eq!(ports.len(), 1);
            ports[0].target_port.clone().unwrap()
        };
        assert_eq!(target(service(&c)), IntOrString::String("http".into()));
        let metrics = metrics_service(&c);
        assert_eq!(
            metrics.metadata.name.as_deref(),
            Some("black-friday-issuer-metrics")
        );
        assert_eq!(
            metrics.metadata.labels.as_ref().unwrap()[COMPONENT_LABEL],
            "metrics"
        );
        assert_eq!(target(metrics), IntOrString::String("ops".into()));
    }

    #[test]
    fn trusted_proxies_are_passed_only_when_set() {
        let args = |yaml: &str| issuer_args(&campaign(yaml));
        assert!(!args("limit: 1\n").contains(&"--trusted-proxies".to_string()));
        let set = args("limit: 1\nissuer: {trustedProxies: [10.0.0.0/8, 'fd00::1']}\n");
        let at = set.iter().position(|a| a == "--trusted-proxies").unwrap();
        assert_eq!(set[at + 1], "10.0.0.0/8,fd00::1");
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
