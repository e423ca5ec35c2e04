//! The serve stage: find what users reach (ports, proxy routes) and probe it until it answers.

use std::time::Duration;

use crate::Ctx;
use crate::deploy::still_up;
use crate::probe::{self, ProbeSpec};
use crate::recipe_tests;
use crate::settings::{Settings, Strategy};
use crate::stage::StageError;
use seatrial_engine::ErrorKind;

/// The port users reach a service on: traefik's loadbalancer port, else the container side of
/// its first published port, else the first port its image exposes.
async fn service_port(
    ctx: &Ctx<'_>,
    status: &seatrial_engine::ServiceStatus,
) -> Result<(Option<u16>, bool), StageError> {
    let deployed = ctx.engine.service_labels(&status.name).await?;
    let traefik = deployed.iter().find_map(|(k, v)| {
        (k.starts_with("traefik.http.services.") && k.ends_with(".loadbalancer.server.port"))
            .then(|| v.parse::<u16>().ok())
            .flatten()
    });
    if let Some(port) = traefik {
        return Ok((Some(port), true));
    }
    // `8080->80/tcp (host)` or `80/tcp`: the container side is what the gateway reaches.
    let published = status.ports.first().and_then(|p| {
        let container_side = p.split("->").last()?;
        container_side.split('/').next()?.parse::<u16>().ok()
    });
    let port = match published {
        Some(p) => Some(p),
        None => ctx
            .engine
            .image_ports(&status.image)
            .await?
            .first()
            .copied(),
    };
    Ok((port, false))
}

/// One service the serve stage probes, with what its probe asks.
struct Target {
    service: String,
    port: Option<u16>,
    spec: ProbeSpec,
    command: Option<Vec<String>>,
}

/// The services to probe and their ports: those the settings choose (`probe.services`, or the
/// `[probe.service.*]` tables), else the traefik-routed service, else each with a published or
/// exposed port.
async fn probe_targets(ctx: &Ctx<'_>, s: &Settings) -> Result<Vec<Target>, StageError> {
    let services = ctx.engine.ps(&ctx.stack).await?;
    let prefix = format!("{}_", ctx.stack);
    let target = |status: &seatrial_engine::ServiceStatus, found: Option<u16>| {
        let short = status.name.strip_prefix(&prefix).unwrap_or(&status.name);
        let (spec, port, command) = s.probe_for(short);
        Target {
            service: status.name.clone(),
            port: port.or(found),
            spec,
            command,
        }
    };
    if let Some(names) = s.chosen_services() {
        let mut out = Vec::new();
        for name in names {
            let full = format!("{prefix}{name}");
            let status = services.iter().find(|x| x.name == full).ok_or_else(|| {
                StageError::Error(
                    format!(
                        "probe service `{name}` is not a service of the recipe (services: {})",
                        services
                            .iter()
                            .map(|x| x.name.strip_prefix(&prefix).unwrap_or(&x.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    ErrorKind::BadInput,
                )
            })?;
            let found = if s.probe_for(&name).1.is_some() {
                None
            } else {
                service_port(ctx, status).await?.0
            };
            out.push(target(status, found));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for status in &services {
        let (port, routed) = service_port(ctx, status).await?;
        if routed {
            // The proxy-routed service is what users reach: probe it alone.
            return Ok(vec![target(status, port)]);
        }
        let t = target(status, port);
        if t.port.is_some() || s.strategy == Strategy::Exec {
            out.push(t);
        }
    }
    Ok(out)
}

/// Probes the app as users would reach it, with the configured strategy.
pub(crate) async fn serve(
    ctx: &Ctx<'_>,
    s: &Settings,
    probe_url: &mut Option<String>,
) -> Result<(String, Vec<recipe_tests::TestResult>), StageError> {
    let spec = &s.probe;
    // The latest serve stage decides the URL tests get: an upgrade may move the task.
    *probe_url = None;
    if s.strategy == Strategy::Url {
        let base = s.url.as_deref().unwrap_or_default();
        let shown = format!("GET {}{}", base.trim_end_matches('/'), spec.path);
        return match probe::until_ok_via(base, &ctx.domain, spec, s.insecure).await {
            Ok(answer) => {
                still_up(ctx).await?;
                *probe_url = Some(base.trim_end_matches('/').to_owned());
                Ok((
                    format!("{shown} (Host: {}) → {}", ctx.domain, answer.status),
                    Vec::new(),
                ))
            }
            Err(why) => Err(StageError::Fail(format!(
                "{shown} (Host: {}) did not succeed within {}: {why} (a proxy's fallback page or 404 counts as failure)",
                ctx.domain,
                seatrial_engine::fmt_duration(spec.deadline)
            ))),
        };
    }
    let targets = probe_targets(ctx, s).await?;
    if targets.is_empty() {
        return Err(StageError::Fail(
            "nothing to probe: no service has traefik router labels, a published port or an exposed port (set probe.services and probe.port in tests/seatrial.toml)".into(),
        ));
    }
    let addresses = ctx.engine.task_addresses(&ctx.stack).await?;
    let mut lines = Vec::new();
    for Target {
        service,
        port,
        spec,
        command,
    } in &targets
    {
        let Some(addr) = addresses.iter().find(|a| &a.service == service) else {
            return Err(StageError::Fail(format!(
                "service `{service}` has no running task reachable through docker_gwbridge"
            )));
        };
        if s.strategy == Strategy::Exec {
            let command = command.clone().unwrap_or_default();
            let outcome = exec_until_ok(ctx, &addr.container, &command, spec.deadline).await?;
            match outcome {
                Ok(output) => lines.push(format!(
                    "{command:?} in {service} → exit 0{}",
                    output
                        .lines()
                        .next()
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                )),
                Err(why) => {
                    return Err(StageError::Fail(format!(
                        "{command:?} in `{service}` did not succeed within {}: {why}",
                        seatrial_engine::fmt_duration(spec.deadline)
                    )));
                }
            }
            if let Some(port) = port {
                probe_url.get_or_insert(format!("http://{}:{port}", addr.ip));
            }
            continue;
        }
        let Some(port) = port else {
            return Err(StageError::Fail(format!(
                "service `{service}` has no port to probe (set probe.port or probe.service.<name>.port in tests/seatrial.toml)"
            )));
        };
        let url = format!("http://{}:{port}", addr.ip);
        match probe::until_ok(&addr.ip.to_string(), *port, &ctx.domain, spec).await {
            Ok(answer) => {
                lines.push(format!(
                    "GET {url}{} (Host: {}) → {} ({service})",
                    spec.path, ctx.domain, answer.status
                ));
                probe_url.get_or_insert(url);
            }
            Err(why) => {
                return Err(StageError::Fail(format!(
                    "GET {url}{} (Host: {}) for service `{service}` did not succeed within {}: {why}",
                    spec.path,
                    ctx.domain,
                    seatrial_engine::fmt_duration(spec.deadline)
                )));
            }
        }
    }
    still_up(ctx).await?;
    Ok((lines.join("; "), Vec::new()))
}

/// Runs `command` in `container` until it exits 0 or `deadline` passes (backing off).
async fn exec_until_ok(
    ctx: &Ctx<'_>,
    container: &str,
    command: &[String],
    deadline: Duration,
) -> Result<Result<String, String>, StageError> {
    let until = tokio::time::Instant::now() + deadline;
    let mut wait = Duration::from_millis(100);
    loop {
        let (code, output) = ctx.engine.exec(container, command).await?;
        if code == 0 {
            return Ok(Ok(output));
        }
        let why = format!("exit {code}: {}", output.trim());
        if tokio::time::Instant::now() + wait > until {
            return Ok(Err(why));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}
