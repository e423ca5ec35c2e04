//! What a run is fixed to when it is queued, so any server that claims it runs it the same way,
//! and the server's probe defaults it starts from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What decides how a run runs, fixed when it is queued and stored with it, so any server that
/// claims it runs it the same way: the recipe's directory in the repository, the probe settings
/// (the server's `[probe]` under the repository's `probe`), and the time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub recipe_path: Option<String>,
    pub probe: StoredProbe,
    pub timeout: Duration,
}

/// The probe settings of a queued run, as stored (JSON in the run's `probe` column).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `[lowest, highest]` accepted HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
}

impl StoredProbe {
    pub fn from_overrides(o: &seatrial_trial::settings::Overrides) -> Self {
        Self {
            strategy: o.strategy.map(|s| s.name().to_owned()),
            url: o.url.clone(),
            insecure: o.insecure,
            path: o.path.clone(),
            status: o.status,
            body: o.body.clone(),
            timeout_ms: o
                .probe_timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            port: o.port,
            services: o.services.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads stored settings back; an error names what is wrong with them.
    pub fn from_json(json: &str) -> Result<Self, String> {
        serde_json::from_str(json)
            .map_err(|e| format!("the run's stored probe settings {json:?} cannot be read: {e}"))
    }

    pub fn to_overrides(&self) -> Result<seatrial_trial::settings::Overrides, String> {
        let strategy = self
            .strategy
            .as_deref()
            .map(|s| {
                serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
                    format!(
                        "the run's stored probe strategy {s:?} is not gateway, url, exec or job"
                    )
                })
            })
            .transpose()?;
        Ok(seatrial_trial::settings::Overrides {
            strategy,
            url: self.url.clone(),
            insecure: self.insecure,
            path: self.path.clone(),
            status: self.status,
            body: self.body.clone(),
            probe_timeout: self.timeout_ms.map(Duration::from_millis),
            port: self.port,
            services: self.services.clone(),
            ..seatrial_trial::settings::Overrides::default()
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeDefaults {
    pub strategy: Option<seatrial_trial::settings::Strategy>,
    pub url: Option<String>,
    pub insecure: Option<bool>,
    pub timeout: Option<String>,
}
