//! The route registration messages of CF's routing protocol, on the message bus:
//! `router.register` / `router.unregister` (published by the route-emitter),
//! `router.start` (published by a router on start) and `router.greet`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const REGISTER_SUBJECT: &str = "router.register";
pub const UNREGISTER_SUBJECT: &str = "router.unregister";
pub const START_SUBJECT: &str = "router.start";
pub const GREET_SUBJECT: &str = "router.greet";

/// The body of `router.register` and `router.unregister`, in CF's JSON: `host`,
/// `port` and `uris` always present, the rest omitted when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RegistryMessage {
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u16>,
    pub uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_service_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_instance_index: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cert_domain_san: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_segment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_updated_at_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_threshold_in_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<RegistryOptions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RegistryOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadbalancing: Option<String>,
}

/// The body of `router.start` (and the reply to `router.greet`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterStart {
    pub id: String,
    pub hosts: Vec<String>,
    #[serde(rename = "minimumRegisterIntervalInSeconds")]
    pub minimum_register_interval_in_seconds: u64,
    /// Gorouter writes `prunteThresholdInSeconds`; both spellings are read.
    #[serde(rename = "pruneThresholdInSeconds", alias = "prunteThresholdInSeconds")]
    pub prune_threshold_in_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_message_omits_empty_fields() {
        let m = RegistryMessage {
            host: "10.0.0.1".into(),
            port: 61001,
            uris: vec!["app.example.com".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"host":"10.0.0.1","port":61001,"uris":["app.example.com"]}"#
        );
    }

    #[test]
    fn router_start_reads_gorouter_spelling() {
        let s: RouterStart = serde_json::from_str(
            r#"{"id":"0-x","hosts":["127.0.0.1"],"minimumRegisterIntervalInSeconds":20,"prunteThresholdInSeconds":120}"#,
        )
        .unwrap();
        assert_eq!(s.prune_threshold_in_seconds, 120);
    }
}
