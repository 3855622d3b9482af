//! The `CouponCampaign` custom resource (`firstcome.dev/v1alpha1`).
//!
//! The CRD in `crds/` is generated from these types (`cargo run -p firstcome-operator
//! --bin crdgen`); a test fails when the file is out of date.
#![allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) of the kube derive repeats `type_`"
)]

use chrono::{DateTime, Utc};
use firstcome_contract::{
    Bucket, DEFAULT_PASS_TTL_SECONDS, DEFAULT_TICKET_TIMEOUT_SECONDS, HEADER_NAME_PATTERN,
    MAX_ADMISSION_RATE, MAX_BUCKET_RATE, MAX_LEEWAY_SECONDS, MAX_PAGE_MESSAGE_CHARS,
    MAX_PAGE_TITLE_CHARS, PAGE_COLOR_PATTERN, PASS_TTL_SECONDS, RateLimits, TICKET_TIMEOUT_SECONDS,
};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A first-come-first-served coupon campaign: the first `limit` applicants win.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "firstcome.dev",
    version = "v1alpha1",
    kind = "CouponCampaign",
    plural = "couponcampaigns",
    singular = "couponcampaign",
    shortname = "cc",
    shortname = "campaign",
    category = "firstcome",
    namespaced,
    status = "CouponCampaignStatus",
    derive = "PartialEq",
    printcolumn(name = "Limit", type_ = "integer", json_path = ".spec.limit"),
    printcolumn(name = "Issued", type_ = "integer", json_path = ".status.issued"),
    printcolumn(name = "Remaining", type_ = "integer", json_path = ".status.remaining"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Waiting",
        type_ = "integer",
        json_path = ".status.waitingRoom.queueLength",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.opensAt) || !has(self.closesAt) || timestamp(self.closesAt) > timestamp(self.opensAt)"
).message("closesAt must be later than opensAt"))]
#[x_kube(validation = Rule::new(
    "!has(self.waitingRoom) || !has(self.waitingRoom.prequeueOpensAt) || (has(self.opensAt) && timestamp(self.waitingRoom.prequeueOpensAt) < timestamp(self.opensAt))"
).message("waitingRoom.prequeueOpensAt needs opensAt, and must be earlier than it"))]
#[serde(rename_all = "camelCase")]
pub struct CouponCampaignSpec {
    /// Most coupons the campaign issues. It may be raised at any time; lowering it below
    /// the number already admitted is refused (condition LimitAccepted=False).
    #[schemars(range(min = 1))]
    pub limit: u64,

    /// Most coupons one user may win.
    #[serde(default = "default_per_user_limit")]
    #[schemars(range(min = 1))]
    pub per_user_limit: u32,

    /// Applies before this instant are answered "not open yet" (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<DateTime<Utc>>,

    /// Applies from this instant on are answered "closed" (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<DateTime<Utc>>,

    /// The Kafka topic winners are published to.
    #[serde(default)]
    pub topic: TopicSpec,

    /// Abuse limits on applies, checked by every issuer before any admission work.
    #[serde(default)]
    pub rate_limits: RateLimitsSpec,

    /// The issuer Deployment serving this campaign.
    #[serde(default)]
    pub issuer: IssuerSpec,

    /// Where the Redis, Kafka and PostgreSQL connection settings come from.
    #[serde(default)]
    pub backends: BackendsRef,

    /// A paused campaign keeps its state but runs no issuers.
    #[serde(default)]
    pub paused: bool,

    /// What deleting the campaign deletes. Coupons in PostgreSQL are always kept.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Who may apply: how the issuers authenticate callers. Required, so no campaign is
    /// open to everyone by omission; its mode defaults to `jwt`, which needs
    /// `identity.jwt`; `none` lets anyone apply as anyone (demos only). Keys and secrets
    /// are never written here: Secrets are referenced by name and mounted read-only into
    /// the issuer pods.
    pub identity: IdentitySpec,

    /// A waiting room in front of the applies (absent: none). Users join a queue — before
    /// `opensAt` a pre-queue let in in a random order, after it first come, first served
    /// — and are let in at `admissionRate`, each with a signed pass the apply requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<WaitingRoomSpec>,
}

/// The waiting room of a campaign. Its secret is never written here: `secretRef` names a
/// Secret mounted read-only into the issuer pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingRoomSpec {
    /// Users let in per second, across every issuer pod.
    #[schemars(range(min = 1, max = MAX_ADMISSION_RATE))]
    pub admission_rate: u32,

    /// Most unexpired passes at once; absent: only the rate limits admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_active: Option<u32>,

    /// When users may start joining the pre-queue (RFC 3339); default 15 minutes before
    /// `opensAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prequeue_opens_at: Option<DateTime<Utc>>,

    /// How long a pass lets its user apply, in seconds.
    #[serde(default = "default_pass_ttl_seconds")]
    #[schemars(range(min = *PASS_TTL_SECONDS.start(), max = *PASS_TTL_SECONDS.end()))]
    pub pass_ttl_seconds: u32,

    /// A waiting ticket not polled for this many seconds loses its place.
    #[serde(default = "default_ticket_timeout_seconds")]
    #[schemars(range(min = *TICKET_TIMEOUT_SECONDS.start(), max = *TICKET_TIMEOUT_SECONDS.end()))]
    pub ticket_timeout_seconds: u32,

    /// The Secret whose key `secret` holds the room's secret (at least 32 bytes): passes,
    /// tickets and the pre-queue order derive from it. Read when an issuer starts.
    pub secret_ref: SecretRef,

    /// The customers' page (`GET /v1/campaigns/{campaign}/room`): its text and colours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<RoomPageSpec>,
}

/// The text and colours of a waiting room's page; the text is shown escaped.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomPageSpec {
    /// The page's heading and title.
    #[serde(default = "firstcome_contract::default_page_title")]
    #[schemars(length(min = 1, max = MAX_PAGE_TITLE_CHARS))]
    pub title: String,

    /// A paragraph under the heading; empty: none.
    #[serde(default)]
    #[schemars(length(max = MAX_PAGE_MESSAGE_CHARS))]
    pub message: String,

    /// Buttons and progress marks, `#rrggbb`.
    #[serde(default = "firstcome_contract::default_page_accent")]
    #[schemars(regex(pattern = PAGE_COLOR_PATTERN))]
    pub accent_color: String,

    /// The page's background, `#rrggbb`.
    #[serde(default = "firstcome_contract::default_page_background")]
    #[schemars(regex(pattern = PAGE_COLOR_PATTERN))]
    pub background_color: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(self.mode != 'jwt' || has(self.jwt)) && (self.mode != 'header' || has(self.header))"
).message("identity mode jwt needs identity.jwt, mode header needs identity.header"))]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// `jwt` (default): a bearer token verified with the keys of `jwt.secretRef`;
    /// `header`: a user header set by an authenticating gateway, with its shared secret;
    /// `none`: the body's `userId` is believed.
    #[serde(default)]
    pub mode: IdentityMode,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderSpec>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    None,
    #[default]
    Jwt,
    Header,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.jwksUrl)")
    .message("identity.jwt needs exactly one of secretRef and jwksUrl"))]
#[x_kube(validation = Rule::new(
    "!has(self.jwksUrl) || (isURL(self.jwksUrl) && (url(self.jwksUrl).getScheme() == 'https' || (url(self.jwksUrl).getScheme() == 'http' && url(self.jwksUrl).getHostname() in ['localhost', '127.0.0.1', '::1'])))"
).message("identity.jwt.jwksUrl must be an https URL (http only to a loopback host)"))]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    /// The `iss` every token must carry.
    #[schemars(length(min = 1))]
    pub issuer: String,

    /// The `aud` every token must carry.
    #[schemars(length(min = 1))]
    pub audience: String,

    /// The claim holding the user id.
    #[serde(default = "default_user_claim")]
    #[schemars(length(min = 1))]
    pub user_claim: String,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_seconds")]
    #[schemars(range(min = 0, max = MAX_LEEWAY_SECONDS))]
    pub leeway_seconds: u64,

    /// The Secret of verification keys: each key of the Secret is one key file, named
    /// by its `kid` — a PEM public key (RSA, EC, Ed25519) or an HMAC secret. Keys added
    /// to the Secret are used without restarting the issuers. Exactly one of
    /// `secretRef` and `jwksUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,

    /// The identity provider's JSON Web Key Set (public keys only), fetched by the
    /// issuers and fetched again when a token names a key not seen yet (at most every
    /// 10 s) or every 5 minutes. `https`, or `http` to a loopback host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub jwks_url: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSpec {
    /// The header the gateway names the authenticated user in.
    #[schemars(length(min = 1, max = 256), regex(pattern = HEADER_NAME_PATTERN))]
    pub user_header: String,

    /// The header the gateway sends the shared secret in.
    #[schemars(length(min = 1, max = 256), regex(pattern = HEADER_NAME_PATTERN))]
    pub secret_header: String,

    /// The Secret whose key `secret` holds the gateway's shared secret.
    pub secret_ref: SecretRef,
}

/// A Secret in the campaign's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Topic name; default `firstcome.<namespace>.<name>.winners`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub name: Option<String>,

    /// Partitions when the operator creates the topic.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1000))]
    pub partitions: i32,

    /// Replication factor when the operator creates the topic.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 10))]
    pub replication_factor: i32,
}

impl Default for TopicSpec {
    fn default() -> Self {
        Self {
            name: None,
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
        }
    }
}

/// Token buckets an apply must pass in each issuer pod: one per user, and, when set,
/// one per client address (an IPv6 client by its /64). Over either, the apply is
/// answered 429 with `Retry-After`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitsSpec {
    /// Per client address; off unless set. Every user behind one address shares it: a
    /// carrier NAT (thousands of phones), an office, or — without `issuer.trustedProxies`
    /// — the ingress or load balancer in front of the issuers, which makes it a limit on
    /// the whole campaign. Set it only where clients reach the issuers with addresses of
    /// their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BucketSpec>")]
    pub per_client: Option<Bucket>,
    /// Per user; default 5/s, burst 10.
    #[serde(default = "RateLimits::default_per_user")]
    #[schemars(with = "BucketSpec")]
    pub per_user: Bucket,
}

/// The schema of a token bucket ([`Bucket`] is the contract's; this type only
/// describes it, with the bounds the apiserver enforces).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    /// Applies per second the bucket refills.
    #[schemars(range(min = 1, max = MAX_BUCKET_RATE))]
    pub per_second: u32,
    /// Applies the bucket holds: how many may come at once.
    #[schemars(range(min = 1, max = MAX_BUCKET_RATE))]
    pub burst: u32,
}

impl Default for RateLimitsSpec {
    fn default() -> Self {
        let limits = RateLimits::default();
        Self {
            per_client: limits.per_client,
            per_user: limits.per_user,
        }
    }
}

impl From<RateLimitsSpec> for RateLimits {
    fn from(spec: RateLimitsSpec) -> Self {
        Self {
            per_client: spec.per_client,
            per_user: spec.per_user,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.replicas) || !has(self.scaling)")
    .message("issuer.replicas and issuer.scaling are mutually exclusive: scaling plans the replicas"))]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// Issuer pods (each serves applies and consumes winners); default the operator's
    /// `--default-issuer-replicas` (2). Not with `scaling`, which plans them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Issuer image; default the operator's `--issuer-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Resource requests and limits of an issuer container; default the operator's
    /// `--default-issuer-resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Proxies in front of the issuers (CIDRs or addresses, e.g. the ingress
    /// controller's pod network) whose `X-Forwarded-For` names the client. Without them
    /// the client of an apply is the TCP peer: behind an ingress, or a Service that
    /// rewrites source addresses, that is a proxy or a node, and every client behind it
    /// shares one `rateLimits.perClient` bucket (when one is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(p, isCIDR(p) || isIP(p))")
        .message("each entry must be a CIDR (10.0.0.0/8) or an IP address"))]
    // Bounded so the apiserver can bound the rule's cost: an IPv6 CIDR is at most 43
    // characters.
    #[schemars(length(max = 16), inner(length(max = 64)))]
    pub trusted_proxies: Vec<String>,

    /// Issuers scaled up before the doors open: `baseReplicas` until `leadSeconds` before
    /// `opensAt`, `peakReplicas` from then until the campaign is sold out or closed, then
    /// `baseReplicas` again. Not with `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSpec>,
}

/// The issuers' replicas planned around the opening (`operator/src/scaling.rs`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.peakReplicas >= self.baseReplicas")
    .message("peakReplicas must be at least baseReplicas"))]
#[x_kube(validation = Rule::new(
    "!has(self.autoscaler) || (self.baseReplicas >= 1 && self.autoscaler.maxReplicas >= self.peakReplicas)"
).message("with an autoscaler, baseReplicas must be at least 1 and autoscaler.maxReplicas at least peakReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// Issuer pods before the lead time and after the sale (sold out or closed).
    #[serde(default = "default_base_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub base_replicas: i32,

    /// Issuer pods from `leadSeconds` before `opensAt` until sold out or closed.
    #[schemars(range(min = 1, max = 1000))]
    pub peak_replicas: i32,

    /// How long before `opensAt` the issuers go to `peakReplicas`: time for pods to be
    /// scheduled, pull the image and pass their readiness probe.
    #[serde(default = "default_lead_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub lead_seconds: u32,

    /// A HorizontalPodAutoscaler (autoscaling/v2, CPU) owned by the campaign, for load
    /// beyond the plan: its `minReplicas` follows the plan (base or peak), so it never
    /// scales below it, and the operator leaves the Deployment's replicas to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerSpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerSpec {
    /// Most issuer pods the autoscaler may run.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// Average CPU use the autoscaler aims at, in percent of the pods' CPU request.
    #[serde(default = "default_target_cpu_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percent: i32,
}

/// A Secret in the campaign's namespace with the keys `redis-url`, `kafka-brokers` and
/// `database-url`. No credential is ever written in the campaign itself.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendsRef {
    /// Name of the Secret; default the operator's `--default-backends-secret`
    /// (`firstcome-backends`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionPolicy {
    /// `Retain` (default) keeps the Kafka topic when the campaign is deleted; `Delete`
    /// deletes it. Redis keys are always removed.
    #[serde(default)]
    pub topic: TopicDeletion,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TopicDeletion {
    #[default]
    Retain,
    Delete,
}

/// Where a campaign stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Provisioning,
    Scheduled,
    Open,
    SoldOut,
    Closed,
    Failed,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponCampaignStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    /// Admissions recorded in Redis.
    #[serde(default)]
    pub admitted: u64,
    /// Coupons persisted in PostgreSQL.
    #[serde(default)]
    pub issued: u64,
    /// limit - admitted.
    #[serde(default)]
    pub remaining: u64,
    /// admitted - issued: winners on their way to PostgreSQL.
    #[serde(default)]
    pub pending_persistence: u64,
    /// Messages stored in failed_events, not yet resolved.
    #[serde(default)]
    pub failed_events: u64,
    /// Issuer pods ready.
    #[serde(default)]
    pub ready_issuers: i32,
    /// Issuer pods the operator plans: `issuer.replicas` (or the default), or the
    /// `issuer.scaling` plan's base or peak (with an autoscaler, its floor); 0 while
    /// paused.
    #[serde(default)]
    pub issuer_replicas: i32,
    /// The campaign id issuers serve it under (`<namespace>.<name>`): the `{campaign}`
    /// of the apply URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// The waiting room's line, for a campaign with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<WaitingRoomStatus>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A waiting room as the operator last saw it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingRoomStatus {
    /// Tickets waiting in line (Redis, at the last reconcile).
    pub queue_length: u64,
    /// Users let in per second.
    pub admission_rate: u32,
}

fn default_per_user_limit() -> u32 {
    firstcome_contract::DEFAULT_PER_USER_LIMIT
}

fn default_user_claim() -> String {
    firstcome_contract::DEFAULT_USER_CLAIM.to_string()
}

fn default_leeway_seconds() -> u64 {
    firstcome_contract::DEFAULT_LEEWAY_SECONDS
}

fn default_base_replicas() -> i32 {
    1
}

fn default_lead_seconds() -> u32 {
    300
}

fn default_target_cpu_percent() -> i32 {
    70
}

fn default_pass_ttl_seconds() -> u32 {
    DEFAULT_PASS_TTL_SECONDS
}

fn default_ticket_timeout_seconds() -> u32 {
    DEFAULT_TICKET_TIMEOUT_SECONDS
}

fn default_partitions() -> i32 {
    3
}

fn default_replication_factor() -> i32 {
    1
}
