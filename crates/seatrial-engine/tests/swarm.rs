//! Deploy, converge and undeploy against the real Docker Swarm engine (`scripts/setup.sh` makes
//! one). These tests fail — never skip — when no engine answers.
//!
//! Longer than 600 lines on purpose: one lifecycle (check, deploy, converge, undeploy) whose
//! tests share the recipe, plan and leftover helpers at the top.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    ListConfigsOptions, ListContainersOptions, ListNetworksOptions, ListSecretsOptions,
    ListServicesOptions, ListVolumesOptions,
};
use futures_util::FutureExt;
use seatrial_engine::{
    ConvergeOptions, DeployMode, DeployOptions, Engine, EngineError, FailureReason, NoProgress,
    PullPolicy, RunLabels, StackPlan, SwarmEngine, UndeployOptions, labels,
};

async fn engine() -> SwarmEngine {
    match SwarmEngine::connect().await {
        Ok(e) => e,
        Err(e) => panic!("these tests need a Docker Swarm manager (run scripts/setup.sh): {e}"),
    }
}

/// A stack name unique to this test process and test.
fn stack_name(test: &str) -> String {
    format!("st{}-{test}", std::process::id() % 100_000)
}

/// Writes a recipe (compose.yml plus files) into a fresh directory.
fn recipe(name: &str, compose: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seatrial-engine-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create recipe dir");
    std::fs::write(dir.join("compose.yml"), compose).expect("write compose.yml");
    for (file, content) in files {
        std::fs::write(dir.join(file), content).expect("write recipe file");
    }
    dir
}

fn plan(stack: &str, dir: &std::path::Path) -> StackPlan {
    let loaded = seatrial_recipe::load_compose(dir).expect("recipe loads");
    StackPlan {
        stack: stack.to_owned(),
        compose: loaded.compose.clone(),
        base_dir: loaded.base_dir().to_owned(),
        labels: RunLabels::new(format!("test-{stack}"), "test-recipe", "trial"),
        env: HashMap::new(),
        secret_values: HashMap::new(),
    }
}

fn fast_converge(timeout: Duration) -> ConvergeOptions {
    ConvergeOptions {
        timeout,
        stable_for: Duration::from_secs(2),
        ..ConvergeOptions::default()
    }
}

fn create() -> DeployOptions {
    DeployOptions {
        mode: DeployMode::Create,
        pull: PullPolicy::Never,
        ..DeployOptions::default()
    }
}

/// Every object on the engine that carries the stack's namespace label, by kind.
async fn leftovers(stack: &str) -> Vec<String> {
    let d = common::api_client().await;
    let filter = || {
        Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={stack}", labels::STACK_NAMESPACE)],
        )]))
    };
    let mut out = Vec::new();
    for s in d
        .list_services(Some(ListServicesOptions {
            filters: filter(),
            status: None,
        }))
        .await
        .expect("list services")
    {
        out.push(format!("service {:?}", s.spec.and_then(|s| s.name)));
    }
    for c in d
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: filter(),
            ..Default::default()
        }))
        .await
        .expect("list containers")
    {
        out.push(format!("container {:?}", c.names));
    }
    for n in d
        .list_networks(Some(ListNetworksOptions { filters: filter() }))
        .await
        .expect("list networks")
    {
        out.push(format!("network {:?}", n.name));
    }
    for v in d
        .list_volumes(Some(ListVolumesOptions { filters: filter() }))
        .await
        .expect("list volumes")
        .volumes
        .unwrap_or_default()
    {
        out.push(format!("volume {}", v.name));
    }
    for s in d
        .list_secrets(Some(ListSecretsOptions { filters: filter() }))
        .await
        .expect("list secrets")
    {
        out.push(format!("secret {:?}", s.spec.and_then(|s| s.name)));
    }
    for c in d
        .list_configs(Some(ListConfigsOptions { filters: filter() }))
        .await
        .expect("list configs")
    {
        out.push(format!("config {:?}", c.spec.and_then(|s| s.name)));
    }
    out
}

/// Runs a test body, then removes the stack whatever happened, then re-raises a panic.
async fn with_stack<F, Fut>(engine: &SwarmEngine, stack: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let result = std::panic::AssertUnwindSafe(body()).catch_unwind().await;
    let cleanup = UndeployOptions {
        remove_data: true,
        ..UndeployOptions::default()
    };
    match engine.undeploy(stack, &cleanup, &NoProgress).await {
        Ok(_) | Err(EngineError::StackNotFound { .. }) => {}
        Err(e) => eprintln!("cleanup of {stack} failed: {e}"),
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn http_get(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the published port");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send request");
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .expect("read response");
    body
}

const FULL_STACK: &str = r#"
services:
  web:
    image: seatrial-fixture/web:1
    ports:
      - {target: 80, published: 18181, mode: host}
    volumes: [data:/data]
    secrets: [token]
    configs:
      - {source: motd, target: /etc/motd}
    networks: [back]
    deploy:
      endpoint_mode: dnsrr
networks:
  back:
volumes:
  data:
secrets:
  token:
    file: ./token
configs:
  motd:
    file: ./motd
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_converges_serves_and_undeploy_leaves_nothing() {
    let engine = engine().await;
    let stack = stack_name("full");
    let dir = recipe("full", FULL_STACK, &[("token", "s3cret"), ("motd", "hi")]);
    with_stack(&engine, &stack, || async {
        let outcome = engine
            .deploy(&plan(&stack, &dir), &create())
            .await
            .expect("deploy");
        assert_eq!(outcome.created_services, vec![format!("{stack}_web")]);
        let report = engine
            .converge(
                &stack,
                &fast_converge(Duration::from_secs(120)),
                &NoProgress,
            )
            .await
            .expect("a healthy stack converges");
        assert_eq!(report.services.len(), 1);
        assert_eq!(
            (report.services[0].running, report.services[0].desired),
            (1, 1)
        );
        let response = http_get(18181).await;
        assert!(response.contains("seatrial fixture web v1"), "{response}");

        // Everything created carries the seatrial labels, volumes included.
        let d = common::api_client().await;
        let volume = d
            .inspect_volume(&format!("{stack}_data"))
            .await
            .expect("volume exists");
        for key in [labels::RUN, labels::RECIPE, labels::KIND, labels::CREATED] {
            assert!(
                volume.labels.contains_key(key),
                "volume lacks {key}: {:?}",
                volume.labels
            );
        }
        assert_eq!(volume.labels[labels::RUN], format!("test-{stack}"));
        let svc = d
            .inspect_service(&format!("{stack}_web"), None)
            .await
            .expect("service");
        let svc_labels = svc.spec.and_then(|s| s.labels).unwrap_or_default();
        assert_eq!(
            svc_labels.get(labels::KIND).map(String::as_str),
            Some("trial")
        );
        let net = d
            .inspect_network(&format!("{stack}_back"), None)
            .await
            .expect("network");
        assert!(net.labels.unwrap_or_default().contains_key(labels::CREATED));

        // Without data removal, the volume, secret and config stay (the data survives)...
        let started = Instant::now();
        engine
            .undeploy(&stack, &UndeployOptions::default(), &NoProgress)
            .await
            .expect("undeploy");
        let left = leftovers(&stack).await;
        assert_eq!(
            left.len(),
            3,
            "only volume, secret and config stay: {left:?}"
        );
        assert!(
            left.iter().all(|l| !l.starts_with("service")
                && !l.starts_with("container")
                && !l.starts_with("network")),
            "{left:?}"
        );
        eprintln!("undeploy took {:?}", started.elapsed());

        // ...and removing the data removes them too.
        let opts = UndeployOptions {
            remove_data: true,
            ..UndeployOptions::default()
        };
        engine
            .undeploy(&stack, &opts, &NoProgress)
            .await
            .expect("remove data");
        assert_eq!(leftovers(&stack).await, Vec::<String>::new());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_healthcheck_is_reported_within_the_deadline() {
    let engine = engine().await;
    let stack = stack_name("sick");
    let dir = recipe(
        "sick",
        "services:\n  web:\n    image: seatrial-fixture/unhealthy:1\n    deploy:\n      restart_policy: {condition: any, delay: 1s}\n",
        &[],
    );
    with_stack(&engine, &stack, || async {
        engine
            .deploy(&plan(&stack, &dir), &create())
            .await
            .expect("deploy");
        let deadline = Duration::from_secs(90);
        let started = Instant::now();
        let err = engine
            .converge(&stack, &fast_converge(deadline), &NoProgress)
            .await
            .expect_err("an unhealthy app must not converge");
        assert!(
            started.elapsed() < deadline,
            "reported at {:?}",
            started.elapsed()
        );
        let EngineError::Failed(failure) = &err else {
            panic!("expected an app failure, got {err}")
        };
        assert_eq!(failure.service, format!("{stack}_web"));
        assert!(
            matches!(failure.reason, FailureReason::TasksFailing { .. }),
            "{:?}",
            failure.reason
        );
        let text = err.to_string();
        assert!(text.contains(&format!("{stack}_web")), "{text}");
        assert!(
            text.contains("failed its healthcheck"),
            "the task error says why: {text}"
        );
        assert!(
            text.contains("failing on purpose"),
            "the healthcheck output is shown: {text}"
        );
    })
    .await;
    assert_eq!(leftovers(&stack).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_rolled_back_by_swarm_is_a_failure() {
    let engine = engine().await;
    let stack = stack_name("roll");
    let compose = |image: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    deploy:\n      update_config: {{failure_action: rollback, monitor: 10s}}\n      restart_policy: {{condition: any, delay: 1s}}\n"
        )
    };
    let v1 = recipe("roll1", &compose("seatrial-fixture/web:1"), &[]);
    let v2 = recipe("roll2", &compose("seatrial-fixture/unhealthy:1"), &[]);
    with_stack(&engine, &stack, || async {
        engine
            .deploy(&plan(&stack, &v1), &create())
            .await
            .expect("deploy v1");
        engine
            .converge(
                &stack,
                &fast_converge(Duration::from_secs(120)),
                &NoProgress,
            )
            .await
            .expect("v1 converges");
        let update = DeployOptions {
            mode: DeployMode::Update,
            ..create()
        };
        let outcome = engine
            .deploy(&plan(&stack, &v2), &update)
            .await
            .expect("update to v2");
        assert_eq!(outcome.updated_services, vec![format!("{stack}_web")]);
        let err = engine
            .converge(
                &stack,
                &fast_converge(Duration::from_secs(120)),
                &NoProgress,
            )
            .await
            .expect_err("a rolled-back update is a failure, never a success");
        let EngineError::Failed(failure) = &err else {
            panic!("expected an app failure, got {err}")
        };
        assert_eq!(failure.reason, FailureReason::RolledBack, "{err}");
        assert!(err.to_string().contains("rolled it back"), "{err}");
        let ps = engine.ps(&stack).await.expect("ps");
        assert!(
            ps[0]
                .update_state
                .as_deref()
                .is_some_and(|s| s.starts_with("rollback")),
            "{ps:?}"
        );
    })
    .await;
    assert_eq!(leftovers(&stack).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_update_is_a_failure_not_a_hang() {
    let engine = engine().await;
    let stack = stack_name("pause");
    // No update_config: Swarm's default failure_action is pause.
    let compose = |image: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    deploy:\n      restart_policy: {{condition: any, delay: 1s}}\n"
        )
    };
    let v1 = recipe("pause1", &compose("seatrial-fixture/web:1"), &[]);
    let v2 = recipe("pause2", &compose("seatrial-fixture/unhealthy:1"), &[]);
    with_stack(&engine, &stack, || async {
        engine
            .deploy(&plan(&stack, &v1), &create())
            .await
            .expect("deploy v1");
        engine
            .converge(
                &stack,
                &fast_converge(Duration::from_secs(120)),
                &NoProgress,
            )
            .await
            .expect("v1 converges");
        let update = DeployOptions {
            mode: DeployMode::Update,
            ..create()
        };
        engine
            .deploy(&plan(&stack, &v2), &update)
            .await
            .expect("update to v2");
        let started = Instant::now();
        let err = engine
            .converge(
                &stack,
                &fast_converge(Duration::from_secs(120)),
                &NoProgress,
            )
            .await
            .expect_err("a paused update is a failure");
        assert!(started.elapsed() < Duration::from_secs(120));
        let EngineError::Failed(failure) = &err else {
            panic!("expected an app failure, got {err}")
        };
        assert_eq!(failure.reason, FailureReason::UpdatePaused, "{err}");
        assert!(err.to_string().contains("paused"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_to_a_good_version_converges_on_the_new_spec() {
    let engine = engine().await;
    let stack = stack_name("upgr");
    let compose = |image: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    ports:\n      - {{target: 80, published: 18182, mode: host}}\n    deploy:\n      update_config: {{failure_action: rollback, monitor: 2s}}\n"
        )
    };
    let v1 = recipe("upgr1", &compose("seatrial-fixture/web:1"), &[]);
    let v2 = recipe("upgr2", &compose("seatrial-fixture/web:2"), &[]);
    with_stack(&engine, &stack, || async {
        engine
            .deploy(&plan(&stack, &v1), &create())
            .await
            .expect("deploy v1");
        engine
            .converge(
                &stack,
                &fast_converge(Duration::from_secs(120)),
                &NoProgress,
            )
            .await
            .expect("v1 converges");
        assert!(http_get(18182).await.contains("web v1"));
        let update = DeployOptions {
            mode: DeployMode::Update,
            ..create()
        };
        engine
            .deploy(&plan(&stack, &v2), &update)
            .await
            .expect("update to v2");
        let report = engine
            .converge(
                &stack,
                &fast_converge(Duration::from_secs(120)),
                &NoProgress,
            )
            .await
            .expect("v2 converges");
        assert_eq!(report.services[0].image, "seatrial-fixture/web:2");
        assert_eq!(
            report.services[0].update_state.as_deref(),
            Some("completed")
        );
        assert!(
            http_get(18182).await.contains("web v2"),
            "the new version serves"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_can_count_once_its_new_tasks_are_healthy_without_the_monitor_period() {
    let engine = engine().await;
    let stack = stack_name("mon");
    // A monitor period far longer than the new task needs to become healthy.
    let compose = |image: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    ports:\n      - {{target: 80, published: 18183, mode: host}}\n    deploy:\n      update_config: {{failure_action: rollback, monitor: 120s}}\n"
        )
    };
    let v1 = recipe("mon1", &compose("seatrial-fixture/web:1"), &[]);
    let v2 = recipe("mon2", &compose("seatrial-fixture/web:2"), &[]);
    with_stack(&engine, &stack, || async {
        engine
            .deploy(&plan(&stack, &v1), &create())
            .await
            .expect("deploy v1");
        engine
            .converge(
                &stack,
                &fast_converge(Duration::from_secs(120)),
                &NoProgress,
            )
            .await
            .expect("v1 converges");
        let update = DeployOptions {
            mode: DeployMode::Update,
            ..create()
        };
        engine
            .deploy(&plan(&stack, &v2), &update)
            .await
            .expect("update to v2");
        let options = ConvergeOptions {
            until_update_completed: false,
            ..fast_converge(Duration::from_secs(100))
        };
        let report = engine
            .converge(&stack, &options, &NoProgress)
            .await
            .expect("v2 counts before its 120 s monitor period ends");
        assert_eq!(report.services[0].image, "seatrial-fixture/web:2");
        assert_eq!(
            report.services[0].update_state.as_deref(),
            Some("updating"),
            "Swarm is still monitoring the update"
        );
        assert!(report.services[0].converged);
        assert!(
            http_get(18183).await.contains("web v2"),
            "the new version serves"
        );
        let ps = engine.ps(&stack).await.expect("ps");
        assert!(
            ps[0].converged,
            "ps agrees while the update is monitored: {ps:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_long_secret_name_is_refused_before_anything_exists() {
    let engine = engine().await;
    let stack = stack_name("long");
    let key = "k".repeat(60);
    let compose = format!(
        "services:\n  web:\n    image: seatrial-fixture/web:1\n    secrets: [{key}]\nsecrets:\n  {key}:\n    file: ./s\n"
    );
    let dir = recipe("long", &compose, &[("s", "x")]);
    let err = engine
        .deploy(&plan(&stack, &dir), &create())
        .await
        .expect_err("a 70-character secret name must be refused");
    let text = err.to_string();
    assert!(matches!(err, EngineError::Invalid { .. }), "{text}");
    assert!(text.contains(&key) && text.contains("at most 64"), "{text}");
    assert_eq!(leftovers(&stack).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_plan_names_every_problem_as_deploy_would() {
    let engine = engine().await;
    let stack = stack_name("check");
    let compose = "services:\n  web:\n    image: seatrial-fixture/web:1\n    secrets: [token]\n    configs: [site]\nsecrets:\n  token:\n    file: ./missing\nconfigs:\n  site:\n    file: ../outside\n";
    let dir = recipe("check", compose, &[]);
    let bad = plan(&stack, &dir);
    let at = |err: &EngineError| match err {
        EngineError::Invalid { findings, .. } => {
            findings.iter().map(|f| f.at.clone()).collect::<Vec<_>>()
        }
        other => panic!("expected the plan to be invalid, got: {other}"),
    };
    let checked = engine
        .check_plan(&bad)
        .expect_err("a secret and a config without their files are refused");
    assert_eq!(at(&checked), ["secrets.token", "configs.site"], "{checked}");
    assert!(
        SwarmEngine::check_plan_unconnected(&bad).is_err(),
        "the check before connecting agrees"
    );
    let deployed = engine
        .deploy(&bad, &create())
        .await
        .expect_err("deploy refuses what check_plan refuses");
    assert_eq!(at(&deployed), at(&checked));
    assert_eq!(leftovers(&stack).await, Vec::<String>::new());

    let good = recipe(
        "check-good",
        "services:\n  web:\n    image: seatrial-fixture/web:1\n",
        &[],
    );
    engine
        .check_plan(&plan(&stack, &good))
        .expect("a plain service is a valid plan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_refused_before_anything_exists() {
    let engine = engine().await;
    let stack = stack_name("noimg");
    let dir = recipe(
        "noimg",
        "services:\n  web:\n    image: seatrial-fixture/web:1\n  api:\n    image: seatrial-fixture/does-not-exist:1\nnetworks:\n  back:\n",
        &[],
    );
    for pull in [PullPolicy::Never, PullPolicy::Missing] {
        let options = DeployOptions { pull, ..create() };
        let err = engine
            .deploy(&plan(&stack, &dir), &options)
            .await
            .expect_err("a missing image must be refused");
        let text = err.to_string();
        assert!(matches!(err, EngineError::Invalid { .. }), "{text}");
        assert!(
            text.contains("seatrial-fixture/does-not-exist:1") && text.contains("service `api`"),
            "{text}"
        );
        assert_eq!(leftovers(&stack).await, Vec::<String>::new(), "{pull:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_stack_name_is_refused_and_left_untouched() {
    let engine = engine().await;
    let stack = stack_name("taken");
    let dir = recipe(
        "taken",
        "services:\n  web:\n    image: seatrial-fixture/web:1\n",
        &[],
    );
    with_stack(&engine, &stack, || async {
        engine
            .deploy(&plan(&stack, &dir), &create())
            .await
            .expect("first deploy");
        let d = common::api_client().await;
        let before = d
            .inspect_service(&format!("{stack}_web"), None)
            .await
            .expect("service")
            .spec;
        let err = engine
            .deploy(&plan(&stack, &dir), &create())
            .await
            .expect_err("a second create of the same stack must be refused");
        assert!(matches!(err, EngineError::StackTaken { .. }), "{err}");
        assert!(
            err.to_string().contains("--update"),
            "the error says what to do: {err}"
        );
        let after = d
            .inspect_service(&format!("{stack}_web"), None)
            .await
            .expect("service")
            .spec;
        // (The version index moves on its own as Swarm records status; the spec must not.)
        assert_eq!(before, after, "the existing stack was not modified");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeploy_of_unknown_stack_says_so() {
    let engine = engine().await;
    let err = engine
        .undeploy(
            &stack_name("ghost"),
            &UndeployOptions::default(),
            &NoProgress,
        )
        .await
        .expect_err("nothing to remove");
    assert!(matches!(err, EngineError::StackNotFound { .. }), "{err}");
}
