//! What the operator derives from a `CouponCampaign` alone: its campaign id, the
//! configuration its issuers serve (with the paths in the issuer pod it names), and the
//! names of the objects it owns.

use firstcome_contract::{
    CampaignConfig, ConfigError, HeaderConfig, IdentityConfig, IdentityConfigError, JwtConfig,
    RoomPage, WaitingRoom,
};
use kube::ResourceExt;

use crate::resource::{CouponCampaign, IdentityMode, IdentitySpec, RoomPageSpec, WaitingRoomSpec};

/// Where the issuer Deployment (`desired`) mounts the identity Secret (JWT keys, or the
/// gateway secret); the campaigns file points there. Not under the config directory: a
/// mount inside a read-only ConfigMap volume needs a mount point the runtime cannot
/// create.
pub const IDENTITY_DIR: &str = "/etc/firstcome-identity";
/// The key of a header-mode Secret that holds the gateway's shared secret.
pub const HEADER_SECRET_KEY: &str = "secret";

/// The id issuers serve a campaign under: `<namespace>.<name>`, unique in the cluster
/// (namespaces have no dots), used in the apply URL, Redis keys, events and coupons.
pub fn campaign_id(campaign: &CouponCampaign) -> String {
    format!(
        "{}.{}",
        campaign.namespace().unwrap_or_default(),
        campaign.name_any()
    )
}

/// The configuration handed to the issuers (the one definition both sides share).
pub fn campaign_config(campaign: &CouponCampaign) -> Result<CampaignConfig, ConfigError> {
    let id = campaign_id(campaign);
    let spec = &campaign.spec;
    let identity = identity_config(&spec.identity).map_err(|source| ConfigError::Identity {
        campaign: id.clone(),
        source,
    })?;
    let config = CampaignConfig {
        topic: spec
            .topic
            .name
            .clone()
            .unwrap_or_else(|| CampaignConfig::default_topic(&id)),
        name: id,
        limit: spec.limit,
        per_user_limit: spec.per_user_limit,
        opens_at: spec.opens_at,
        closes_at: spec.closes_at,
        identity,
        rate_limits: spec.rate_limits.into(),
        waiting_room: spec.waiting_room.as_ref().map(waiting_room),
    };
    config.validate()?;
    Ok(config)
}

/// The waiting room the issuers serve: the spec's settings; its secret is where the
/// Deployment mounts the referenced Secret (`--waiting-room-secret-file`).
fn waiting_room(spec: &WaitingRoomSpec) -> WaitingRoom {
    WaitingRoom {
        admission_rate: spec.admission_rate,
        max_active: spec.max_active,
        prequeue_opens_at: spec.prequeue_opens_at,
        pass_ttl_seconds: spec.pass_ttl_seconds,
        ticket_timeout_seconds: spec.ticket_timeout_seconds,
        page: spec.page.as_ref().map(room_page).unwrap_or_default(),
    }
}

fn room_page(spec: &RoomPageSpec) -> RoomPage {
    RoomPage {
        title: spec.title.clone(),
        message: spec.message.clone(),
        accent_color: spec.accent_color.clone(),
        background_color: spec.background_color.clone(),
    }
}

/// The identity the issuers serve: the spec's settings, with the keys and secrets where
/// the Deployment mounts the referenced Secret.
fn identity_config(spec: &IdentitySpec) -> Result<IdentityConfig, IdentityConfigError> {
    Ok(match (spec.mode, &spec.jwt, &spec.header) {
        (IdentityMode::None, ..) => IdentityConfig::None,
        (IdentityMode::Jwt, Some(jwt), _) => IdentityConfig::Jwt {
            jwt: JwtConfig {
                issuer: jwt.issuer.clone(),
                audience: jwt.audience.clone(),
                user_claim: jwt.user_claim.clone(),
                leeway_seconds: jwt.leeway_seconds,
                keys_dir: jwt.secret_ref.as_ref().map(|_| IDENTITY_DIR.into()),
                jwks_url: jwt.jwks_url.clone(),
            },
        },
        (IdentityMode::Header, _, Some(header)) => IdentityConfig::Header {
            header: HeaderConfig {
                user_header: header.user_header.clone(),
                secret_header: header.secret_header.clone(),
                secret_file: std::path::Path::new(IDENTITY_DIR).join(HEADER_SECRET_KEY),
            },
        },
        (IdentityMode::Jwt, None, _) => return Err(IdentityConfigError::MissingSettings("jwt")),
        (IdentityMode::Header, _, None) => {
            return Err(IdentityConfigError::MissingSettings("header"));
        }
    })
}

/// Name of the issuer Deployment, Service and ConfigMap of a campaign.
pub fn issuer_name(campaign: &CouponCampaign) -> String {
    format!("{}-issuer", campaign.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::campaign;
    use firstcome_contract::{Bucket, JwtKeys, RateLimits};

    #[test]
    fn config_carries_the_spec_under_a_cluster_unique_id() {
        let c = campaign("limit: 100\nperUserLimit: 2\nopensAt: 2026-11-27T09:00:00Z\n");
        let config = campaign_config(&c).unwrap();
        assert_eq!(config.name, "shop.black-friday");
        assert_eq!(config.limit, 100);
        assert_eq!(config.per_user_limit, 2);
        assert_eq!(config.topic, "firstcome.shop.black-friday.winners");
        assert_eq!(
            config.opens_at.unwrap().to_rfc3339(),
            "2026-11-27T09:00:00+00:00"
        );
        assert_eq!(issuer_name(&c), "black-friday-issuer");
    }

    #[test]
    fn identity_points_at_the_mounted_secret() {
        let c = campaign(
            "limit: 5\nidentity: {jwt: {issuer: https://login.example, audience: coupons, secretRef: {name: keys}}}\n",
        );
        let IdentityConfig::Jwt { jwt } = campaign_config(&c).unwrap().identity else {
            panic!("the default mode is jwt");
        };
        assert_eq!(
            jwt.keys(),
            Ok(JwtKeys::Dir(std::path::Path::new(IDENTITY_DIR)))
        );
        assert_eq!((jwt.user_claim.as_str(), jwt.leeway_seconds), ("sub", 30));
        let provider = campaign(
            "limit: 5\nidentity: {jwt: {issuer: i, audience: a, jwksUrl: 'https://login.example/jwks'}}\n",
        );
        let IdentityConfig::Jwt { jwt } = campaign_config(&provider).unwrap().identity else {
            panic!("the default mode is jwt");
        };
        assert_eq!(jwt.keys(), Ok(JwtKeys::Jwks("https://login.example/jwks")));
        let both = campaign(
            "limit: 5\nidentity: {jwt: {issuer: i, audience: a, jwksUrl: 'https://x/j', secretRef: {name: k}}}\n",
        );
        assert!(matches!(
            campaign_config(&both),
            Err(ConfigError::Identity {
                source: IdentityConfigError::KeySource,
                ..
            })
        ));
        let bare = campaign("limit: 5\nidentity: {mode: jwt}\n");
        assert!(matches!(
            campaign_config(&bare),
            Err(ConfigError::Identity {
                source: IdentityConfigError::MissingSettings("jwt"),
                ..
            })
        ));
        let none = campaign("limit: 5\nidentity: {mode: none}\n");
        assert_eq!(
            campaign_config(&none).unwrap().identity,
            IdentityConfig::None
        );
    }

    #[test]
    fn rate_limits_are_copied_and_default_when_absent() {
        let c = campaign("limit: 5\nrateLimits: {perUser: {perSecond: 2, burst: 3}}\n");
        let limits = campaign_config(&c).unwrap().rate_limits;
        assert_eq!(
            limits.per_user,
            Bucket {
                per_second: 2,
                burst: 3
            }
        );
        assert_eq!(limits.per_client, None, "per client: off unless set");
        let plain = campaign("limit: 5\n");
        assert_eq!(
            campaign_config(&plain).unwrap().rate_limits,
            RateLimits::default()
        );
    }

    #[test]
    fn a_waiting_room_is_copied_without_its_secret() {
        let c = campaign(
            "limit: 5\nopensAt: 2026-11-27T09:00:00Z\nwaitingRoom: {admissionRate: 50, maxActive: 200, secretRef: {name: room}}\n",
        );
        let room = campaign_config(&c).unwrap().waiting_room.unwrap();
        assert_eq!(
            room,
            WaitingRoom {
                max_active: Some(200),
                ..WaitingRoom::new(50)
            }
        );
        assert_eq!(
            campaign_config(&campaign("limit: 5\n"))
                .unwrap()
                .waiting_room,
            None
        );
        let page = campaign(
            "limit: 5\nwaitingRoom: {admissionRate: 5, secretRef: {name: room}, page: {title: Sale, accentColor: '#aa0000'}}\n",
        );
        let page = campaign_config(&page).unwrap().waiting_room.unwrap().page;
        assert_eq!(
            page,
            RoomPage {
                title: "Sale".into(),
                accent_color: "#aa0000".into(),
                ..RoomPage::default()
            }
        );
        let bad_page = campaign(
            "limit: 5\nwaitingRoom: {admissionRate: 5, secretRef: {name: room}, page: {backgroundColor: red}}\n",
        );
        assert!(matches!(
            campaign_config(&bad_page),
            Err(ConfigError::WaitingRoom { .. })
        ));
        let early = campaign(
            "limit: 5\nwaitingRoom: {admissionRate: 5, prequeueOpensAt: 2026-11-27T08:00:00Z, secretRef: {name: room}}\n",
        );
        assert!(matches!(
            campaign_config(&early),
            Err(ConfigError::WaitingRoom { .. })
        ));
    }

    #[test]
    fn explicit_topic_wins_and_bad_values_are_refused() {
        let c = campaign("limit: 5\ntopic: {name: coupons}\n");
        assert_eq!(campaign_config(&c).unwrap().topic, "coupons");
        let zero = campaign("limit: 0\n");
        assert!(campaign_config(&zero).is_err());
    }
}
