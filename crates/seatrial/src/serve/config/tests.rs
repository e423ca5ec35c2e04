//! The config's behaviour: defaults, the file, the environment over it, enrolment, and the
//! settings fixed at enqueue.

use std::path::Path;

use super::load::load_with;
use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn no_file_gives_sane_defaults() {
    let c = load_with(None, &no_env).expect("defaults");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8086");
    assert_eq!(c.capacity, 1);
    assert_eq!(c.run_timeout, Duration::from_secs(3600));
    assert!(
        c.database_url.starts_with("sqlite://"),
        "{}",
        c.database_url
    );
    assert!(c.api_tokens.is_empty(), "no token: writes are refused");
}

#[test]
fn environment_beats_the_file() {
    let dir = std::env::temp_dir().join(format!("seatrial-serve-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("seatrial.toml");
    std::fs::write(
        &path,
        "listen = \"0.0.0.0:9000\"\ncapacity = 3\napi_tokens = [\"from-file\"]\nrun_timeout = \"20m\"\n[run_timeouts]\n\"recipes/heavy\" = \"2h\"\n",
    )
    .expect("write");
    let env = |k: &str| match k {
        "SEATRIAL_CAPACITY" => Some("2".to_owned()),
        "SEATRIAL_API_TOKEN" => Some("from-env".to_owned()),
        "SEATRIAL_DATABASE_URL" => Some("postgres://db/seatrial".to_owned()),
        _ => None,
    };
    let c = load_with(Some(&path), &env).expect("loads");
    assert_eq!(c.listen.to_string(), "0.0.0.0:9000", "the file sets it");
    assert_eq!(c.capacity, 2, "the environment wins");
    assert_eq!(c.database_url, "postgres://db/seatrial");
    assert_eq!(c.run_timeout, Duration::from_secs(1200));
    assert_eq!(
        c.timeout_for("recipes/heavy/", None),
        Duration::from_secs(7200)
    );
    assert_eq!(
        c.timeout_for("recipes/light", None),
        Duration::from_secs(1200)
    );
    assert_eq!(
        c.timeout_for("recipes/heavy", Some(Duration::from_secs(60))),
        Duration::from_secs(60),
        "a run's own timeout wins"
    );
    assert!(c.api_tokens.iter().any(|t| t.matches("from-file")));
    assert!(c.api_tokens.iter().any(|t| t.matches("from-env")));
    assert!(!format!("{c:?}").contains("from-env"), "tokens never print");

    std::fs::write(&path, "capacty = 3\n").expect("write");
    let err = load_with(Some(&path), &no_env).expect_err("typo");
    assert!(err.contains("capacty"), "{err}");
    std::fs::write(&path, "run_timeout = \"soon\"\n").expect("write");
    let err = load_with(Some(&path), &no_env).expect_err("bad duration");
    assert!(err.contains("run_timeout"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_documented_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seatrial.toml");
    let c = load_with(Some(&path), &no_env).expect("examples/seatrial.toml is valid");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8086");
    assert_eq!(c.lease, Duration::from_secs(30));
}

#[test]
fn enrolled_repositories() {
    let dir = std::env::temp_dir().join(format!("seatrial-forge-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("seatrial.toml");
    let write = |repos: &str| {
        std::fs::write(
            &path,
            format!("[forge]\nurl = \"https://git.example.org\"\ntoken = \"t0k3n\"\n{repos}"),
        )
        .expect("write")
    };
    write(
        "[[repos]]\nname = \"coop/app\"\n\n[[repos]]\nname = \"coop/mono\"\nrecipe = \"apps/x/\"\ntimeout = \"90m\"\nprobe = { path = \"/health\", status = \"200\" }\npermit = [\"docker-socket\", \"host-bind:/var/log\"]\n",
    );
    let c = load_with(Some(&path), &no_env).expect("loads");
    let f = c.forge.expect("forge");
    assert_eq!(f.poll_interval, Duration::from_secs(30), "the default");
    assert_eq!(f.command, "!testme");
    assert!(
        f.webhook_secret.is_none(),
        "the webhook is off without a secret"
    );
    assert!(
        !format!("{f:?}").contains("t0k3n"),
        "the token never prints"
    );
    assert_eq!(f.repos[0].recipe, None, "the root by default");
    assert_eq!(f.repos[1].recipe.as_deref(), Some(Path::new("apps/x")));
    assert_eq!(f.repos[1].timeout, Some(Duration::from_secs(5400)));
    assert_eq!(f.repos[1].probe.path.as_deref(), Some("/health"));
    assert_eq!(f.repos[1].probe.status, Some((200, 200)));
    assert!(
        f.repos[0].permit.is_empty(),
        "nothing is permitted by default"
    );
    let permit: Vec<String> = f.repos[1].permit.iter().map(ToString::to_string).collect();
    assert_eq!(permit, ["docker-socket", "host-bind:/var/log"]);

    write("[[repos]]\nname = \"coop/app\"\npermit = [\"docker_sock\"]\n");
    let err = load_with(Some(&path), &no_env).expect_err("unknown rule");
    assert!(
        err.contains("[[repos]] coop/app: permit") && err.contains("docker-socket"),
        "{err}"
    );

    assert!(!f.repos[0].gate, "no gate unless asked");
    write("[[repos]]\nname = \"coop/app\"\ngate = true\ngate_config = \"deploy/gate.toml\"\n");
    let c = load_with(Some(&path), &no_env).expect("loads");
    let r = &c.forge.expect("forge").repos[0];
    assert!(r.gate);
    assert_eq!(
        r.gate_config.as_deref(),
        Some(Path::new("deploy/gate.toml"))
    );
    write("[[repos]]\nname = \"coop/app\"\ngate = true\ngate_config = \"../gate.toml\"\n");
    let err = load_with(Some(&path), &no_env).expect_err("outside the repository");
    assert!(
        err.contains("gate_config") && err.contains("inside the repository"),
        "{err}"
    );
    write("[[repos]]\nname = \"coop/app\"\ngate_config = \"gate.toml\"\n");
    let err = load_with(Some(&path), &no_env).expect_err("gate_config without gate");
    assert!(err.contains("gate = true"), "{err}");

    write("[[repos]]\nname = \"coop/app\"\nrecipe = \"../elsewhere\"\n");
    let err = load_with(Some(&path), &no_env).expect_err("outside the repository");
    assert!(err.contains("inside the repository"), "{err}");
    write("[[repos]]\nname = \"just-a-name\"\n");
    assert!(
        load_with(Some(&path), &no_env)
            .expect_err("no owner")
            .contains("owner/name")
    );
    std::fs::write(&path, "[forge]\nurl = \"https://git.example.org\"\n").expect("write");
    let err = load_with(Some(&path), &no_env).expect_err("no token");
    assert!(err.contains("SEATRIAL_FORGE_TOKEN"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn api_runs_are_permitted_nothing_unless_configured() {
    let dir = std::env::temp_dir().join(format!("seatrial-api-permit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("seatrial.toml");
    assert!(
        load_with(None, &no_env)
            .expect("defaults")
            .api_permit
            .is_empty()
    );
    std::fs::write(&path, "api_permit = [\"cap_add:NET_ADMIN\"]\n").expect("write");
    let c = load_with(Some(&path), &no_env).expect("loads");
    assert_eq!(
        c.api_permit,
        vec!["cap_add:NET_ADMIN".parse::<Permit>().expect("permit")]
    );
    std::fs::write(&path, "api_permit = [\"host-bind:var\"]\n").expect("write");
    let err = load_with(Some(&path), &no_env).expect_err("relative path");
    assert!(
        err.starts_with("api_permit: ") && err.contains("absolute"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_settings_are_fixed_at_enqueue_and_read_back_the_same() {
    let dir = std::env::temp_dir().join(format!("seatrial-settings-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("seatrial.toml");
    std::fs::write(
        &path,
        "run_timeout = \"30m\"\n[probe]\nstrategy = \"url\"\nurl = \"https://proxy.example.org\"\ntimeout = \"2m\"\n\n[forge]\nurl = \"https://git.example.org\"\ntoken = \"t\"\n\n[[repos]]\nname = \"coop/mono\"\nrecipe = \"apps/x\"\ntimeout = \"90m\"\nprobe = { path = \"/health\", status = \"200\", services = [\"app\"] }\n",
    )
    .expect("write");
    let c = load_with(Some(&path), &no_env).expect("loads");
    let enrolled = c.enrolled("coop/mono");
    assert!(enrolled.is_some());
    let s = c.settings_for("https://git.example.org/coop/mono.git", enrolled, None);
    assert_eq!(s.recipe_path.as_deref(), Some("apps/x"));
    assert_eq!(s.timeout, Duration::from_secs(5400), "the repository's");
    let expected = StoredProbe {
        strategy: Some("url".into()),
        url: Some("https://proxy.example.org".into()),
        path: Some("/health".into()),
        status: Some((200, 200)),
        timeout_ms: Some(120_000),
        services: Some(vec!["app".into()]),
        ..StoredProbe::default()
    };
    assert_eq!(
        s.probe, expected,
        "the repository's probe over the server's"
    );
    let back = StoredProbe::from_json(&s.probe.to_json()).expect("reads back");
    assert_eq!(back, expected);
    let o = back.to_overrides().expect("overrides");
    assert_eq!(StoredProbe::from_overrides(&o), expected);
    let plain = c.settings_for("/recipes/x", None, None);
    assert_eq!(
        (plain.recipe_path, plain.timeout),
        (None, Duration::from_secs(1800))
    );
    assert_eq!(plain.probe.path, None);
    let err = StoredProbe::from_json(r#"{"strategy":"carrier-pigeon"}"#)
        .expect("json")
        .to_overrides()
        .expect_err("unknown strategy");
    assert!(
        err.contains("carrier-pigeon") && err.contains("gateway"),
        "{err}"
    );
    assert!(StoredProbe::from_json("{").is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tokens_compare_exactly() {
    let t = ApiToken("s3cret".into());
    assert!(t.matches("s3cret"));
    assert!(!t.matches("s3cre"));
    assert!(!t.matches("s3cret!"));
    assert!(!t.matches(""));
}

#[test]
fn schedule_infra_and_alerts() {
    let dir = std::env::temp_dir().join(format!("seatrial-schedule-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("seatrial.toml");
    let c = load_with(None, &no_env).expect("defaults");
    assert!(c.schedule.is_none(), "no nightly unless asked");
    assert!(c.infra.apps.is_empty() && c.infra.alerts.is_empty());

    std::fs::write(
        &path,
        "[schedule]\nnightly = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\n\n[[infra]]\nname = \"traefik\"\nrecipe = \"https://git.example.org/coop-cloud/traefik.git\"\npolicy = \"minor\"\n\n[[alerts]]\nkind = \"webhook\"\nurl = \"https://hooks.example.org/seatrial\"\n",
    )
    .expect("write");
    let c = load_with(Some(&path), &no_env).expect("loads");
    let s = c.schedule.expect("schedule");
    assert_eq!(
        (s.nightly.to_string(), s.timezone.as_str()),
        ("0 3 * * *".into(), "Europe/Berlin")
    );
    assert_eq!(c.infra.apps.len(), 1);
    assert_eq!(c.infra.apps[0].name, "traefik");
    assert_eq!(c.infra.alerts.len(), 1);
    assert_eq!(c.infra.data_dir.as_deref(), Some(c.data_dir.as_path()));

    // The environment names its own variables in errors, and wins over the file.
    let env = |k: &str| match k {
        "SEATRIAL_SCHEDULE_NIGHTLY" => Some("30 4 * * mon-fri".to_owned()),
        _ => None,
    };
    let c = load_with(Some(&path), &env).expect("loads");
    assert_eq!(
        c.schedule.expect("schedule").nightly.to_string(),
        "30 4 * * mon-fri"
    );
    let env = |k: &str| (k == "SEATRIAL_SCHEDULE_TIMEZONE").then(|| "Mars/Olympus".to_owned());
    let err = load_with(Some(&path), &env).expect_err("unknown zone");
    assert!(
        err.starts_with("SEATRIAL_SCHEDULE_TIMEZONE = \"Mars/Olympus\""),
        "{err}"
    );

    for (bad, says) in [
        (
            "[schedule]\nnightly = \"0 3 * *\"\n",
            "schedule.nightly = \"0 3 * *\": ",
        ),
        (
            "[schedule]\nnightly = \"0 25 * * *\"\n",
            "hour 25 is out of range",
        ),
        (
            "[schedule]\nnightly = \"0 3 * * *\"\ntimezone = \"Europe/Berlim\"\n",
            "schedule.timezone = \"Europe/Berlim\"",
        ),
        (
            "[schedule]\ntimezone = \"UTC\"\n",
            "schedule.nightly is not",
        ),
        ("[schedule]\nnighly = \"0 3 * * *\"\n", "nighly"),
        (
            "[[infra]]\nname = \"traefik\"\nrecipe = \"\"\n",
            "[[infra]] traefik: recipe is empty",
        ),
        (
            "[[infra]]\nname = \"traefik\"\nrecipe = \"r\"\npolicy = \"yolo\"\n",
            "[[infra]] entry 1",
        ),
        ("[[alerts]]\nkind = \"pager\"\n", "pager"),
    ] {
        std::fs::write(&path, bad).expect("write");
        let err = load_with(Some(&path), &no_env).expect_err(bad);
        assert!(err.contains(says), "{bad}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_infra_example_is_a_serve_config_too() {
    // `seatrial reconcile` and `seatrial serve` read one file: the infra example must load here.
    let text = include_str!("../../../../../examples/infra.toml").replace("NTFY_TOKEN", "PATH");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("seatrial.toml");
    std::fs::write(
        &path,
        format!("{text}\n[schedule]\nnightly = \"15 4 * * *\"\n"),
    )
    .expect("write");
    let c = load_with(Some(&path), &no_env).expect("examples/infra.toml loads as serve's config");
    let names: Vec<&str> = c.infra.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["traefik", "sso"]);
    assert_eq!(c.infra.alerts.len(), 2);
    assert!(c.schedule.is_some());
}

#[test]
fn warm_budget_is_read_in_binary_units_and_a_bad_one_says_how_to_write_it() {
    let env = |k: &str| (k == "SEATRIAL_WARM_BUDGET").then(|| "1.5g".to_owned());
    let c = load_with(None, &env).expect("loads");
    assert_eq!(c.warm_budget, Some(3 << 29));
    assert_eq!(load_with(None, &no_env).expect("loads").warm_budget, None);
    let env = |k: &str| (k == "SEATRIAL_WARM_BUDGET").then(|| "lots".to_owned());
    let err = load_with(None, &env).expect_err("not a size");
    assert!(
        err.contains("SEATRIAL_WARM_BUDGET = \"lots\"") && err.contains("\"50g\""),
        "{err}"
    );
}

#[test]
fn secrets_can_come_from_files_as_docker_and_systemd_mount_them() {
    let dir = std::env::temp_dir().join(format!("seatrial-serve-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("api_token");
    std::fs::write(&token, "s3cret-token\n").expect("write");
    let db = dir.join("db");
    std::fs::write(&db, "postgres://app:pw@db/seatrial").expect("write");
    let token_path = token.display().to_string();
    let db_path = db.display().to_string();
    let env = |k: &str| match k {
        "SEATRIAL_API_TOKEN_FILE" => Some(token_path.clone()),
        "SEATRIAL_DATABASE_URL_FILE" => Some(db_path.clone()),
        _ => None,
    };
    let c = load_with(None, &env).expect("loads");
    assert_eq!(
        c.api_tokens
            .iter()
            .map(|t| t.0.as_str())
            .collect::<Vec<_>>(),
        ["s3cret-token"],
        "the file's value without its newline"
    );
    assert_eq!(c.database_url, "postgres://app:pw@db/seatrial");

    let missing = dir.join("nope").display().to_string();
    let env = |k: &str| (k == "SEATRIAL_WEBHOOK_SECRET_FILE").then(|| missing.clone());
    let err = load_with(None, &env).expect_err("an unreadable file is an error");
    assert!(
        err.contains("SEATRIAL_WEBHOOK_SECRET_FILE") && err.contains("nope"),
        "{err}"
    );

    let env = |k: &str| match k {
        "SEATRIAL_API_TOKEN_FILE" => Some(token_path.clone()),
        "SEATRIAL_API_TOKEN" => Some("other".to_owned()),
        _ => None,
    };
    let err = load_with(None, &env).expect_err("both set is ambiguous");
    assert!(err.contains("set one of them"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
