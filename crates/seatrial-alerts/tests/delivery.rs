//! Delivering alerts to real servers on 127.0.0.1: what each kind of target sends, and how a
//! failure is reported.

mod sinks;

use std::time::{Duration, Instant};

use seatrial_alerts::{
    Alert, AlertError, AlertTarget, Delivery, Secret, Severity, send, send_all_within, send_within,
};
use sinks::{Auth, HttpSink, SilentSink, SmtpSink};

fn held() -> Alert {
    Alert {
        event: "held".into(),
        app: "traefik".into(),
        from: Some("1.9.0".into()),
        to: Some("2.0.0".into()),
        reason: "2.0.0 is a new major version; a person must approve it".into(),
        notes: Some("Breaking: the entrypoints were renamed.".into()),
        severity: Severity::Warning,
    }
}

fn ntfy(url: &str, token: Option<&str>) -> AlertTarget {
    AlertTarget::Ntfy {
        url: url.into(),
        topic: "seatrial-ops".into(),
        token: token.map(Secret::new),
        token_env: None,
    }
}

fn email(port: u16, login: Option<(&str, &str)>) -> AlertTarget {
    AlertTarget::Email {
        host: "127.0.0.1".into(),
        port,
        starttls: false,
        username: login.map(|(user, _)| user.to_string()),
        password: login.map(|(_, password)| Secret::new(password)),
        password_env: None,
        from: "Seatrial <seatrial@example.org>".into(),
        to: vec!["ops@example.org".into(), "oncall@example.org".into()],
    }
}

mod webhook {
    use super::*;

    #[tokio::test]
    async fn posts_the_alert_as_json() {
        let sink = HttpSink::answering(204, "").await;
        let target = AlertTarget::Webhook {
            url: format!("{}/hooks/seatrial", sink.url),
        };
        send(&target, &held()).await.expect("delivered");

        let requests = sink.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        let request = &requests[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/hooks/seatrial")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json body");
        assert_eq!(
            body,
            serde_json::json!({
                "event": "held",
                "app": "traefik",
                "from": "1.9.0",
                "to": "2.0.0",
                "reason": "2.0.0 is a new major version; a person must approve it",
                "notes": "Breaking: the entrypoints were renamed.",
                "severity": "warning",
            })
        );
    }

    #[tokio::test]
    async fn absent_versions_and_notes_are_null() {
        let sink = HttpSink::answering(200, "ok").await;
        let target = AlertTarget::Webhook {
            url: sink.url.clone(),
        };
        let alert = Alert {
            from: None,
            to: None,
            notes: None,
            severity: Severity::Critical,
            ..held()
        };
        send(&target, &alert).await.expect("delivered");
        let body: serde_json::Value =
            serde_json::from_slice(&sink.requests()[0].body).expect("json body");
        assert_eq!(body["from"], serde_json::Value::Null);
        assert_eq!(body["to"], serde_json::Value::Null);
        assert_eq!(body["notes"], serde_json::Value::Null);
        assert_eq!(body["severity"], "critical");
    }

    #[tokio::test]
    async fn a_server_error_names_the_status_and_the_target() {
        let sink = HttpSink::answering(500, "database is down").await;
        let target = AlertTarget::Webhook {
            url: format!("{}/hooks/secret-path", sink.url),
        };
        let err = send(&target, &held())
            .await
            .expect_err("500 is not a delivery");
        assert!(
            matches!(err, AlertError::Rejected { status: 500, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("HTTP 500"), "{message}");
        assert!(message.contains(&sink.url), "{message}");
        assert!(message.contains("database is down"), "{message}");
        assert!(!message.contains("secret-path"), "{message}");
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_but_reported() {
        let sink = HttpSink::answering(301, "").await;
        let target = AlertTarget::Webhook {
            url: sink.url.clone(),
        };
        let err = send(&target, &held())
            .await
            .expect_err("a redirect is not a delivery");
        let message = err.to_string();
        assert!(message.contains("HTTP 301"), "{message}");
        assert!(
            message.contains("https://elsewhere.example.org/hook"),
            "{message}"
        );
        assert_eq!(sink.requests().len(), 1);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let sink = SilentSink::start().await;
        let target = AlertTarget::Webhook {
            url: format!("http://127.0.0.1:{}/hook", sink.port),
        };
        let started = Instant::now();
        let err = send_within(&target, &held(), Duration::from_millis(300))
            .await
            .expect_err("no answer is not a delivery");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, AlertError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("no answer within 0.3 s"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_as_unreachable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let target = AlertTarget::Webhook {
            url: format!("http://127.0.0.1:{port}/hook"),
        };
        let err = send(&target, &held()).await.expect_err("nobody listens");
        assert!(matches!(err, AlertError::Unreachable { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("webhook http://127.0.0.1:{port}/…")),
            "{err}"
        );
    }
}

mod ntfy {
    use super::*;

    #[tokio::test]
    async fn publishes_to_the_topic_with_title_priority_tags_and_token() {
        let sink = HttpSink::answering(200, r#"{"id":"x"}"#).await;
        let target = ntfy(&sink.url, Some("tk_alertsecret"));
        send(&target, &held()).await.expect("delivered");

        let requests = sink.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        let request = &requests[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/seatrial-ops")
        );
        assert_eq!(
            request.header("title"),
            Some("seatrial: traefik held (1.9.0 -> 2.0.0)")
        );
        assert_eq!(request.header("priority"), Some("4"));
        assert_eq!(
            request.header("tags"),
            Some("warning,seatrial,traefik,held")
        );
        assert_eq!(
            request.header("authorization"),
            Some("Bearer tk_alertsecret")
        );
        let body = request.text();
        assert!(
            body.starts_with("2.0.0 is a new major version; a person must approve it\n"),
            "{body}"
        );
        assert!(body.contains("version: 1.9.0 -> 2.0.0"), "{body}");
        assert!(
            body.contains("Breaking: the entrypoints were renamed."),
            "{body}"
        );
    }

    #[tokio::test]
    async fn without_a_token_there_is_no_authorization_and_critical_is_urgent() {
        let sink = HttpSink::answering(200, "").await;
        let alert = Alert {
            event: "rolled back".into(),
            severity: Severity::Critical,
            ..held()
        };
        send(&ntfy(&format!("{}/", sink.url), None), &alert)
            .await
            .expect("delivered");
        let request = &sink.requests()[0];
        assert_eq!(request.path, "/seatrial-ops");
        assert_eq!(request.header("authorization"), None);
        assert_eq!(request.header("priority"), Some("5"));
        assert_eq!(
            request.header("tags"),
            Some("rotating_light,seatrial,traefik,rolled back")
        );
    }

    #[tokio::test]
    async fn a_title_that_is_not_ascii_is_rfc_2047_encoded() {
        let sink = HttpSink::answering(200, "").await;
        let alert = Alert {
            app: "café".into(),
            ..held()
        };
        send(&ntfy(&sink.url, None), &alert)
            .await
            .expect("delivered");
        let title = sink.requests()[0]
            .header("title")
            .expect("title")
            .to_string();
        let encoded = title
            .strip_prefix("=?UTF-8?B?")
            .and_then(|t| t.strip_suffix("?="))
            .expect("RFC 2047 encoded word");
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        assert_eq!(
            String::from_utf8(decoded).expect("utf-8"),
            "seatrial: café held (1.9.0 -> 2.0.0)"
        );
    }

    #[tokio::test]
    async fn a_refused_token_is_reported_without_the_token() {
        let sink = HttpSink::answering(
            401,
            r#"{"code":40101,"http":401,"error":"unauthorized for tk_refusedsecret"}"#,
        )
        .await;
        let err = send(&ntfy(&sink.url, Some("tk_refusedsecret")), &held())
            .await
            .expect_err("401 is not a delivery");
        let message = err.to_string();
        assert!(message.contains("HTTP 401"), "{message}");
        assert!(message.contains("40101"), "{message}");
        assert!(message.contains("check the token"), "{message}");
        assert!(
            message.contains(&format!("ntfy {}/seatrial-ops", sink.url)),
            "{message}"
        );
        assert!(!message.contains("tk_refusedsecret"), "{message}");
        assert!(!format!("{err:?}").contains("tk_refusedsecret"), "{err:?}");
    }

    #[tokio::test]
    async fn long_notes_are_cut_to_ntfys_message_limit() {
        let sink = HttpSink::answering(200, "").await;
        let alert = Alert {
            notes: Some("x".repeat(10_000)),
            ..held()
        };
        send(&ntfy(&sink.url, None), &alert)
            .await
            .expect("delivered");
        let body = sink.requests()[0].text();
        assert!(body.len() <= 4096, "{}", body.len());
        assert!(body.ends_with("(cut)"), "{}", &body[body.len() - 20..]);
    }
}

mod email {
    use super::*;

    #[tokio::test]
    async fn sends_one_message_to_every_recipient() {
        let sink = SmtpSink::start(Auth::Off).await;
        send(&email(sink.port, None), &held())
            .await
            .expect("delivered");

        let log = sink.log();
        assert_eq!(log.mail_from, ["<seatrial@example.org>"], "{log:?}");
        assert_eq!(
            log.rcpt_to,
            ["<ops@example.org>", "<oncall@example.org>"],
            "{log:?}"
        );
        assert!(log.logins.is_empty(), "{log:?}");
        assert!(
            !log.commands.iter().any(|c| c.starts_with("AUTH")),
            "{log:?}"
        );
        assert_eq!(log.messages.len(), 1, "{log:?}");
        let message = &log.messages[0];
        for expected in [
            "Subject: seatrial: traefik held (1.9.0 -> 2.0.0)",
            "From: Seatrial <seatrial@example.org>",
            "To: ops@example.org, oncall@example.org",
            "Content-Type: text/plain; charset=utf-8",
            "2.0.0 is a new major version; a person must approve it",
            "version: 1.9.0 -> 2.0.0",
            "Breaking: the entrypoints were renamed.",
        ] {
            assert!(
                message.contains(expected),
                "{expected:?} missing from:\n{message}"
            );
        }
    }

    #[tokio::test]
    async fn a_critical_alert_says_so_in_the_subject() {
        let sink = SmtpSink::start(Auth::Off).await;
        let alert = Alert {
            event: "rolled back".into(),
            severity: Severity::Critical,
            ..held()
        };
        send(&email(sink.port, None), &alert)
            .await
            .expect("delivered");
        let message = &sink.log().messages[0];
        assert!(
            message.contains("Subject: [critical] seatrial: traefik rolled back (1.9.0 -> 2.0.0)"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn logs_in_when_a_username_is_set() {
        let sink = SmtpSink::start(Auth::Accept).await;
        send(&email(sink.port, Some(("seatrial", "s3cret-pw"))), &held())
            .await
            .expect("delivered");
        let log = sink.log();
        assert_eq!(
            log.logins,
            [("seatrial".to_string(), "s3cret-pw".to_string())],
            "{log:?}"
        );
        assert_eq!(log.messages.len(), 1, "{log:?}");
    }

    #[tokio::test]
    async fn a_refused_login_is_reported_without_the_password() {
        // The sink echoes the credentials in its refusal, as a careless server might.
        let sink = SmtpSink::start(Auth::RefuseEchoing).await;
        let target = email(sink.port, Some(("seatrial", "s3cret-pw")));
        let err = send(&target, &held()).await.expect_err("refused login");
        let message = err.to_string();
        assert!(matches!(err, AlertError::Smtp { .. }), "{err:?}");
        assert!(message.contains("535"), "{message}");
        assert!(
            message.contains("check `username` and the password"),
            "{message}"
        );
        assert!(
            message.contains(&format!("email 127.0.0.1:{} to ops@example.org", sink.port)),
            "{message}"
        );
        assert!(!message.contains("s3cret-pw"), "{message}");
        assert!(!format!("{err:?}").contains("s3cret-pw"), "{err:?}");
        assert!(sink.log().messages.is_empty());
    }

    #[tokio::test]
    async fn starttls_required_sends_nothing_to_a_server_without_it() {
        let sink = SmtpSink::start(Auth::Accept).await;
        let mut target = email(sink.port, Some(("seatrial", "s3cret-pw")));
        if let AlertTarget::Email { starttls, .. } = &mut target {
            *starttls = true;
        }
        let err = send(&target, &held())
            .await
            .expect_err("no STARTTLS offered");
        assert!(err.to_string().contains("STARTTLS"), "{err}");
        let log = sink.log();
        assert!(
            log.logins.is_empty(),
            "credentials sent in the clear: {log:?}"
        );
        assert!(log.mail_from.is_empty(), "{log:?}");
    }

    #[tokio::test]
    async fn a_server_that_never_greets_times_out() {
        let sink = SilentSink::start().await;
        let started = Instant::now();
        let err = send_within(&email(sink.port, None), &held(), Duration::from_millis(300))
            .await
            .expect_err("no greeting");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(err, AlertError::Timeout { .. } | AlertError::Smtp { .. }),
            "{err:?}"
        );
    }
}

mod send_all {
    use super::*;

    #[tokio::test]
    async fn reports_one_delivery_per_target_in_order() {
        let webhook = HttpSink::answering(200, "").await;
        let broken_ntfy = HttpSink::answering(503, "maintenance").await;
        let smtp = SmtpSink::start(Auth::Off).await;
        let targets = [
            AlertTarget::Webhook {
                url: webhook.url.clone(),
            },
            ntfy(&broken_ntfy.url, None),
            email(smtp.port, None),
            AlertTarget::Webhook {
                url: "gopher://example.org".into(),
            },
        ];
        let deliveries = send_all_within(&targets, &held(), Duration::from_secs(10)).await;

        assert_eq!(deliveries.len(), 4, "{deliveries:?}");
        assert_eq!(
            deliveries[0],
            Delivery {
                target: format!("webhook {}", webhook.url),
                error: None
            }
        );
        assert_eq!(
            deliveries[1].target,
            format!("ntfy {}/seatrial-ops", broken_ntfy.url)
        );
        let ntfy_error = deliveries[1].error.as_deref().expect("ntfy failed");
        assert!(ntfy_error.contains("HTTP 503"), "{ntfy_error}");
        assert!(deliveries[2].is_delivered(), "{deliveries:?}");
        let config_error = deliveries[3].error.as_deref().expect("bad url");
        assert!(config_error.contains("`url`"), "{config_error}");

        assert_eq!(webhook.requests().len(), 1);
        assert_eq!(broken_ntfy.requests().len(), 1);
        assert_eq!(smtp.log().messages.len(), 1);
    }

    #[tokio::test]
    async fn a_hanging_target_does_not_hold_up_the_others() {
        let silent = SilentSink::start().await;
        let webhook = HttpSink::answering(200, "").await;
        let targets = [
            AlertTarget::Webhook {
                url: format!("http://127.0.0.1:{}/", silent.port),
            },
            AlertTarget::Webhook {
                url: webhook.url.clone(),
            },
        ];
        let started = Instant::now();
        let deliveries = send_all_within(&targets, &held(), Duration::from_millis(500)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            deliveries[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no answer")),
            "{deliveries:?}"
        );
        assert!(deliveries[1].is_delivered(), "{deliveries:?}");
    }

    #[test]
    fn deliveries_serialize_for_the_api() {
        let delivery = Delivery {
            target: "webhook https://hooks.example.org/…".into(),
            error: None,
        };
        assert_eq!(
            serde_json::to_value(&delivery).expect("json"),
            serde_json::json!({"target": "webhook https://hooks.example.org/…", "error": null})
        );
    }
}
