//! Looking at what runs: the engine's facts, where a stack's tasks can be reached from this
//! host, the ports an image exposes, a command run in a task's container, a service's labels.

use std::collections::HashMap;

use bollard::exec::StartExecResults;
use bollard::models::{ContainerSummary, ExecConfig};
use futures_util::StreamExt;

use super::inventory::{Listed, stack_filter};
use super::{SWARM_SERVICE_NAME, SwarmEngine};
use crate::{EngineError, EngineInfo, Result, TaskAddress};

/// The bridge through which a single node reaches its swarm tasks.
const GATEWAY_BRIDGE: &str = "docker_gwbridge";
/// How much of an exec's output is kept.
const EXEC_OUTPUT_LIMIT: usize = 64 * 1024;

impl SwarmEngine {
    pub(super) async fn engine_info(&self) -> Result<EngineInfo> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| EngineError::Unreachable {
                host: self.host.clone(),
                message: e.to_string(),
            })?;
        let nodes = self.node_count().await?;
        Ok(EngineInfo {
            host: self.host.clone(),
            server_version: version.version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
            node_id: self.node_id.clone(),
            nodes,
        })
    }

    /// How many nodes the swarm has now (nodes join and leave while a server runs).
    pub(crate) async fn node_count(&self) -> Result<u64> {
        let info = self.docker.info().await.map_err(EngineError::api(
            "asking the engine how many nodes its swarm has",
        ))?;
        Ok(info
            .swarm
            .and_then(|s| s.nodes)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(1))
    }

    /// The addresses of the stack's running task containers on `docker_gwbridge`.
    pub(super) async fn gateway_addresses(&self, stack: &str) -> Result<Vec<TaskAddress>> {
        let mut filters = stack_filter(stack);
        filters.insert("status".to_owned(), vec!["running".to_owned()]);
        let context = format!("listing containers of stack `{stack}`");
        let containers: Vec<ContainerSummary> = self.list(filters, context).await?;
        let gateway = self
            .docker
            .inspect_network(GATEWAY_BRIDGE, None)
            .await
            .map_err(EngineError::api(format!(
                "inspecting network `{GATEWAY_BRIDGE}`"
            )))?;
        let endpoints = gateway.containers.unwrap_or_default();
        let mut out = Vec::new();
        for c in containers {
            let (Some(id), Some(labels)) = (c.id, c.labels) else {
                continue;
            };
            let Some(service) = labels.get(SWARM_SERVICE_NAME) else {
                continue;
            };
            let ip = endpoints
                .get(&id)
                .and_then(|e| e.ipv4_address.as_deref())
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse().ok());
            if let Some(ip) = ip {
                out.push(TaskAddress {
                    service: service.clone(),
                    container: id,
                    ip,
                });
            }
        }
        out.sort_by(|a, b| a.service.cmp(&b.service).then(a.ip.cmp(&b.ip)));
        Ok(out)
    }

    /// The TCP ports the image declares with EXPOSE, sorted.
    pub(super) async fn exposed_tcp_ports(&self, image: &str) -> Result<Vec<u16>> {
        let inspect = self
            .docker
            .inspect_image(image)
            .await
            .map_err(EngineError::api(format!("inspecting image `{image}`")))?;
        let mut ports: Vec<u16> = inspect
            .config
            .and_then(|c| c.exposed_ports)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
                (proto == "tcp").then(|| port.parse().ok()).flatten()
            })
            .collect();
        ports.sort_unstable();
        Ok(ports)
    }

    /// Runs `command` in the container; its exit code and output (stdout and stderr).
    pub(super) async fn exec_in(
        &self,
        container: &str,
        command: &[String],
    ) -> Result<(i64, String)> {
        let api = || EngineError::api(format!("running {command:?} in container {container}"));
        let created = self
            .docker
            .create_exec(
                container,
                ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(command.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(api())?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(api())?
        {
            while let Some(Ok(chunk)) = stream.next().await {
                if output.len() < EXEC_OUTPUT_LIMIT {
                    output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
        }
        let inspect = self.docker.inspect_exec(&created.id).await.map_err(api())?;
        Ok((inspect.exit_code.unwrap_or(-1), output))
    }

    /// The labels of the service as deployed.
    pub(super) async fn deployed_labels(&self, service: &str) -> Result<HashMap<String, String>> {
        let found = self
            .docker
            .inspect_service(service, None)
            .await
            .map_err(EngineError::api(format!("inspecting service `{service}`")))?;
        Ok(found.labels().cloned().unwrap_or_default())
    }
}
