//! Typed model of the compose-spec parts seatrial deploys to Docker Swarm.
//!
//! Short and long syntaxes are normalised while deserialising (ports, volumes, environment,
//! labels, secrets, configs, networks), so the engine sees one shape per concept.
//! Numbers and booleans are also accepted as strings, because interpolation yields strings.

use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::de;

/// A whole compose file (or the merge of several).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ComposeFile {
    /// Obsolete in the compose spec, still common in recipes; informational only.
    pub version: Option<String>,
    pub name: Option<String>,
    pub services: IndexMap<String, Service>,
    #[serde(deserialize_with = "de::map_nullable")]
    pub networks: IndexMap<String, Network>,
    #[serde(deserialize_with = "de::map_nullable")]
    pub volumes: IndexMap<String, Volume>,
    #[serde(deserialize_with = "de::map_nullable")]
    pub secrets: IndexMap<String, Secret>,
    #[serde(deserialize_with = "de::map_nullable")]
    pub configs: IndexMap<String, Config>,
    /// Top-level `x-*` extension fields, kept verbatim.
    #[serde(skip)]
    pub extensions: IndexMap<String, Value>,
}

/// One service of a compose file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Service {
    pub image: Option<String>,
    #[serde(deserialize_with = "de::command")]
    pub command: Option<Vec<String>>,
    #[serde(deserialize_with = "de::command")]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY: value`, `KEY:` (unset: taken from the deploying environment) or `- KEY=value`.
    #[serde(deserialize_with = "de::key_values_nullable")]
    pub environment: IndexMap<String, Option<String>>,
    #[serde(deserialize_with = "de::ports")]
    pub ports: Vec<Port>,
    #[serde(deserialize_with = "de::service_volumes")]
    pub volumes: Vec<ServiceVolume>,
    #[serde(deserialize_with = "de::service_networks")]
    pub networks: IndexMap<String, ServiceNetwork>,
    pub healthcheck: Option<Healthcheck>,
    #[serde(deserialize_with = "de::key_values")]
    pub labels: IndexMap<String, String>,
    pub deploy: Option<Deploy>,
    #[serde(deserialize_with = "de::file_references")]
    pub secrets: Vec<FileReference>,
    #[serde(deserialize_with = "de::file_references")]
    pub configs: Vec<FileReference>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub read_only: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub init: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub tty: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub stdin_open: Option<bool>,
    #[serde(deserialize_with = "de::string_list")]
    pub extra_hosts: Vec<String>,
    #[serde(deserialize_with = "de::key_values")]
    pub sysctls: IndexMap<String, String>,
    #[serde(deserialize_with = "de::string_list")]
    pub cap_add: Vec<String>,
    #[serde(deserialize_with = "de::string_list")]
    pub cap_drop: Vec<String>,
    pub logging: Option<Logging>,
    /// Kept so that recipes written for compose parse; Swarm ignores start order.
    #[serde(deserialize_with = "de::depends_on")]
    pub depends_on: Vec<String>,
    /// `build:` is ignored when `image:` is set (Swarm never builds).
    pub build: Option<Value>,
    /// `env_file:` is refused at validation: seatrial deploys env-file-free specs.
    pub env_file: Option<Value>,
    /// Not supported by Swarm; reported by validation.
    pub container_name: Option<String>,
    /// Ignored by Swarm (`deploy.restart_policy` applies); reported as a warning.
    pub restart: Option<String>,
    /// Service-level `x-*` extension fields, kept verbatim.
    #[serde(skip)]
    pub extensions: IndexMap<String, Value>,
    /// Keys that reach into the host (`privileged`, `devices`, `network_mode`, `pid`, ...; see
    /// [`crate::policy::HOST_OPTION_KEYS`]), kept verbatim so the policy can judge them. Swarm
    /// ignores them and seatrial does not deploy them, but `docker compose` would apply them.
    #[serde(skip)]
    pub host_options: IndexMap<String, Value>,
}

/// A published port, normalised from `"8080:80/tcp"` or the long syntax.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Port {
    pub target: u16,
    pub published: Option<u16>,
    pub protocol: Protocol,
    pub mode: PortMode,
    /// A host IP from the short syntax (`127.0.0.1:80:80`); Swarm cannot bind one.
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// `ingress` goes through the routing mesh (needs IPVS); `host` binds on the node running the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    #[default]
    Ingress,
    Host,
}

/// A mount of a service, normalised from `"data:/var/lib/x:ro"` or the long syntax.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ServiceVolume {
    pub kind: MountKind,
    /// Volume name (key of the top-level `volumes:`), host path, or `None` for anonymous/tmpfs.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    /// `volume.nocopy`.
    pub no_copy: bool,
    /// `volume.subpath`.
    pub subpath: Option<String>,
    /// `tmpfs.size` in bytes.
    pub tmpfs_size: Option<i64>,
    /// `tmpfs.mode`.
    pub tmpfs_mode: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ServiceNetwork {
    #[serde(deserialize_with = "de::string_list")]
    pub aliases: Vec<String>,
}

/// `healthcheck:`. Durations default to the engine's (interval 30 s, timeout 30 s, retries 3).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Healthcheck {
    #[serde(deserialize_with = "de::healthcheck_test")]
    pub test: Option<Vec<String>>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub interval: Option<Duration>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub retries: Option<u64>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub start_period: Option<Duration>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub start_interval: Option<Duration>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub disable: Option<bool>,
}

impl Healthcheck {
    /// True when this healthcheck turns the image's healthcheck off.
    pub fn disables(&self) -> bool {
        self.disable == Some(true)
            || self
                .test
                .as_ref()
                .is_some_and(|t| t.first().is_some_and(|s| s == "NONE"))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Deploy {
    pub mode: Option<DeployMode>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub replicas: Option<u64>,
    pub endpoint_mode: Option<EndpointMode>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub restart_policy: Option<RestartPolicy>,
    pub resources: Option<Resources>,
    #[serde(deserialize_with = "de::key_values")]
    pub labels: IndexMap<String, String>,
    pub placement: Option<Placement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployMode {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}

/// `update_config` and `rollback_config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct UpdateConfig {
    #[serde(deserialize_with = "de::opt_u64")]
    pub parallelism: Option<u64>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub delay: Option<Duration>,
    pub failure_action: Option<FailureAction>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub monitor: Option<Duration>,
    #[serde(deserialize_with = "de::opt_f64")]
    pub max_failure_ratio: Option<f64>,
    pub order: Option<UpdateOrder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Continue,
    Pause,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RestartPolicy {
    pub condition: Option<RestartCondition>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub delay: Option<Duration>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub max_attempts: Option<u64>,
    #[serde(deserialize_with = "de::opt_duration")]
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Resources {
    pub limits: Option<ResourceSpec>,
    pub reservations: Option<ResourceSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ResourceSpec {
    /// CPUs as a fraction (`"0.5"`).
    #[serde(deserialize_with = "de::opt_f64")]
    pub cpus: Option<f64>,
    /// Bytes (`"512M"`).
    #[serde(deserialize_with = "de::opt_bytes")]
    pub memory: Option<i64>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Placement {
    #[serde(deserialize_with = "de::string_list")]
    pub constraints: Vec<String>,
    pub preferences: Vec<PlacementPreference>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct PlacementPreference {
    pub spread: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Logging {
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::key_values")]
    pub options: IndexMap<String, String>,
}

/// A service's reference to a secret or config (`- db_password` or the long syntax).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct FileReference {
    /// Key in the top-level `secrets:`/`configs:`.
    pub source: String,
    /// Path in the container; defaults to `/run/secrets/<source>` or `/<source>`.
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub mode: Option<u32>,
}

/// `external: true` or the legacy `external: {name: x}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct External {
    pub external: bool,
    /// Legacy `external.name`.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Network {
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::key_values")]
    pub driver_opts: IndexMap<String, String>,
    #[serde(deserialize_with = "de::external")]
    pub external: External,
    pub name: Option<String>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub attachable: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub internal: Option<bool>,
    #[serde(deserialize_with = "de::key_values")]
    pub labels: IndexMap<String, String>,
    pub ipam: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Volume {
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::key_values")]
    pub driver_opts: IndexMap<String, String>,
    #[serde(deserialize_with = "de::external")]
    pub external: External,
    pub name: Option<String>,
    #[serde(deserialize_with = "de::key_values")]
    pub labels: IndexMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Secret {
    /// Path of the file holding the value, relative to the compose file.
    pub file: Option<String>,
    /// Name of an environment variable holding the value.
    pub environment: Option<String>,
    #[serde(deserialize_with = "de::external")]
    pub external: External,
    pub name: Option<String>,
    #[serde(deserialize_with = "de::key_values")]
    pub labels: IndexMap<String, String>,
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::key_values")]
    pub driver_opts: IndexMap<String, String>,
    pub template_driver: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub file: Option<String>,
    /// Inline content (compose spec 2.x).
    pub content: Option<String>,
    pub environment: Option<String>,
    #[serde(deserialize_with = "de::external")]
    pub external: External,
    pub name: Option<String>,
    #[serde(deserialize_with = "de::key_values")]
    pub labels: IndexMap<String, String>,
    pub template_driver: Option<String>,
}

impl Service {
    /// The replica count the service asks for (1 when unset), or `None` for global modes.
    pub fn replicas(&self) -> Option<u64> {
        let deploy = self.deploy.as_ref();
        match deploy.and_then(|d| d.mode) {
            Some(DeployMode::Global) | Some(DeployMode::GlobalJob) => None,
            _ => Some(deploy.and_then(|d| d.replicas).unwrap_or(1)),
        }
    }
}
