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
async fn probe_targets(
    ctx: &Ctx<'_>,
    s: &Settings,
    strategy: Strategy,
) -> Result<Vec<Target>, StageError> {
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
        if t.port.is_some() || strategy == Strategy::Exec {
            out.push(t);
        }
    }
    Ok(out)
}

/// Where the engine runs its tasks, as far as reaching them from this host goes: `Some(what)`
/// when they may be out of reach — a multi-node swarm, or an engine on another machine.
fn out_of_reach(info: &seatrial_engine::EngineInfo) -> Option<String> {
    if info.nodes > 1 {
        return Some(format!("a {}-node swarm", info.nodes));
    }
    let host = info.host.as_str();
    let remote_scheme = ["tcp://", "ssh://", "http://", "https://"]
        .iter()
        .find_map(|scheme| host.strip_prefix(scheme));
    let loopback = |rest: &str| {
        let name = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
    };
    match remote_scheme {
        Some(rest) if !loopback(rest.split('/').next().unwrap_or(rest)) => {
            Some(format!("a remote engine ({host})"))
        }
        _ => None,
    }
}

/// The strategy to probe with: the one the settings chose; else, where this host may not reach
/// the tasks, `url` when a base URL is set and `job` otherwise; else `gateway`. The second value
/// says why, when seatrial chose a strategy other than `gateway`; the third names the kind of
/// engine whose tasks may be out of reach.
async fn strategy(
    ctx: &Ctx<'_>,
    s: &Settings,
) -> Result<(Strategy, Option<String>, Option<String>), StageError> {
    let info = ctx.engine.info().await?;
    let far = out_of_reach(&info);
    if s.strategy_chosen {
        return Ok((s.strategy, None, far));
    }
    Ok(match &far {
        Some(what) if s.url.is_some() => (
            Strategy::Url,
            Some(format!("{what}: through the reverse proxy at probe.url")),
            far.clone(),
        ),
        Some(what) => (
            Strategy::Job,
            Some(format!("{what}: from inside the swarm")),
            far.clone(),
        ),
        None => (Strategy::Gateway, None, None),
    })
}

/// What to do when the settings' strategy cannot reach the tasks of `what` (an engine kind).
fn reach_hint(what: &str) -> String {
    format!(
        "on {what} this host may not reach the tasks: leave probe.strategy unset (seatrial then probes from inside the swarm) or set it to \"job\", or to \"url\" with probe.url (the reverse proxy)"
    )
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
    let (strategy, chosen, far) = strategy(ctx, s).await?;
    let why = chosen.map(|w| format!(" [{w}]")).unwrap_or_default();
    if strategy == Strategy::Url {
        let base = s.url.as_deref().unwrap_or_default();
        let shown = format!("GET {}{}", base.trim_end_matches('/'), spec.path);
        return match probe::until_ok_via(base, &ctx.domain, spec, s.insecure).await {
            Ok(answer) => {
                still_up(ctx).await?;
                *probe_url = Some(base.trim_end_matches('/').to_owned());
                Ok((
                    format!("{shown} (Host: {}) → {}{why}", ctx.domain, answer.status),
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
    let targets = probe_targets(ctx, s, strategy).await?;
    if targets.is_empty() {
        return Err(StageError::Fail(
            "nothing to probe: no service has traefik router labels, a published port or an exposed port (set probe.services and probe.port in tests/seatrial.toml)".into(),
        ));
    }
    if strategy == Strategy::Job {
        let mut lines = Vec::new();
        for target in &targets {
            lines.push(job_probe(ctx, s, target).await?);
        }
        still_up(ctx).await?;
        return Ok((format!("{}{why}", lines.join("; ")), Vec::new()));
    }
    let addresses = ctx.engine.task_addresses(&ctx.stack).await?;
    let hint = far.as_deref().map(reach_hint);
    let mut lines = Vec::new();
    for Target {
        service,
        port,
        spec,
        command,
    } in &targets
    {
        let Some(addr) = addresses.iter().find(|a| &a.service == service) else {
            let Some(hint) = &hint else {
                return Err(StageError::Fail(format!(
                    "service `{service}` has no running task reachable through docker_gwbridge"
                )));
            };
            // Its task runs where this host cannot see its container: not the app's fault.
            let nodes = ctx.engine.service_nodes(service).await?;
            let place = match nodes.as_slice() {
                [] => "no running task on any node".to_owned(),
                [one] => format!("its task runs on node {one}"),
                more => format!("its tasks run on nodes {}", more.join(", ")),
            };
            let how = if strategy == Strategy::Exec {
                "the exec strategy runs commands only in containers on the node of the engine seatrial talks to"
            } else {
                "the gateway strategy reaches only tasks on the node of the engine seatrial talks to"
            };
            return Err(StageError::Error(
                format!(
                    "service `{service}` cannot be probed with probe.strategy = \"{}\": {place}, and {how}; {hint}",
                    strategy.name()
                ),
                ErrorKind::BadInput,
            ));
        };
        if strategy == Strategy::Exec {
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
                let hint = hint
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                return Err(StageError::Fail(format!(
                    "GET {url}{} (Host: {}) for service `{service}` did not succeed within {}: {why}{hint}",
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

/// Probes one target from inside the swarm: a job on the service's network runs `seatrial
/// probe` against a task of the service (by Swarm's DNS name `tasks.<service>`, which needs no
/// routing mesh), with the trial's Host header, accepted statuses, body text and deadline.
async fn job_probe(ctx: &Ctx<'_>, s: &Settings, target: &Target) -> Result<String, StageError> {
    let Target {
        service,
        port,
        spec,
        ..
    } = target;
    let Some(port) = port else {
        return Err(StageError::Fail(format!(
            "service `{service}` has no port to probe (set probe.port or probe.service.<name>.port in tests/seatrial.toml)"
        )));
    };
    let url = format!("http://tasks.{service}:{port}{}", spec.path);
    let mut command = vec![
        "seatrial".to_owned(),
        "probe".to_owned(),
        url.clone(),
        "--host".to_owned(),
        ctx.domain.clone(),
        "--accept".to_owned(),
        format!("{}-{}", spec.status.0, spec.status.1),
        "--retry-for".to_owned(),
        format!("{}ms", spec.deadline.as_millis()),
    ];
    if let Some(body) = &spec.body_contains {
        command.extend(["--body".to_owned(), body.clone()]);
    }
    let job = seatrial_engine::ProbeJob {
        stack: ctx.stack.clone(),
        service: service.clone(),
        image: s.probe_image.clone(),
        command,
        deadline: spec.deadline,
    };
    let outcome = ctx.engine.run_probe_job(&job).await?;
    let node = if outcome.node.is_empty() {
        "not placed".to_owned()
    } else {
        format!("node {}", outcome.node)
    };
    let place = format!(
        "probed from inside the swarm (job on network {}, {node})",
        outcome.network
    );
    let asked = format!("GET {url} (Host: {})", ctx.domain);
    let last = last_line(&outcome.output);
    let image = &s.probe_image;
    let fix_image = format!(
        "seatrial's image ({image}) must be on the manager's node and as new as this seatrial: build it with scripts/build-image.sh and load it there (docker save | docker load), or name another with probe.image or SEATRIAL_PROBE_IMAGE"
    );
    // The task's state and the swarm's message for it: `failed: …`.
    let task = format!(
        "{}{}",
        outcome.state,
        outcome
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    match outcome.exit_code {
        Some(0) => {
            // `seatrial probe` prints `<url> (Host: …): <status>[ (try n, after t)]`.
            let answer = last.rsplit_once("): ").map_or(last.as_str(), |(_, a)| a);
            Ok(format!("{place}: {asked} → {answer} ({service})"))
        }
        Some(1) => Err(StageError::Fail(format!(
            "{asked} for service `{service}`, {place}, did not succeed within {}: {}",
            seatrial_engine::fmt_duration(spec.deadline),
            last.strip_prefix("error: ").unwrap_or(&last)
        ))),
        Some(code) => Err(StageError::Error(
            format!(
                "the probe job for service `{service}` ({place}, image {image}) could not probe: exit {code}: {}; {fix_image}",
                if last.is_empty() {
                    "no output"
                } else {
                    last.as_str()
                }
            ),
            ErrorKind::Infrastructure,
        )),
        None if outcome.timed_out => Err(StageError::Error(
            format!(
                "the probe job for service `{service}` ({place}, image {image}) did not finish within {} and a minute to start (task state: {task}); {fix_image}",
                seatrial_engine::fmt_duration(spec.deadline),
            ),
            ErrorKind::Infrastructure,
        )),
        None => Err(StageError::Error(
            format!(
                "the probe job for service `{service}` ({place}, image {image}) did not run: task {task}; {fix_image}"
            ),
            ErrorKind::Infrastructure,
        )),
    }
}

/// The last line of a job's output that says something.
fn last_line(output: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_owned()
}
