//! The `url` probe strategy over HTTPS, against a real TLS server (openssl s_server with a
//! self-signed certificate for the app's domain): the certificate is verified unless the
//! operator says `insecure`, and the TLS name is the app's domain, not the proxy's address.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use seatrial_trial::probe::{ProbeSpec, until_ok_via};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn https_probe_verifies_unless_insecure() {
    let dir = std::env::temp_dir().join(format!("seatrial-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=app.test",
            "-addext",
            "subjectAltName=DNS:app.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed for this test (Debian: openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let _server = Server(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server"),
    );
    let base = format!("https://127.0.0.1:{port}");
    let spec = ProbeSpec {
        body_contains: Some("Ciphers".into()),
        deadline: Duration::from_secs(10),
        ..ProbeSpec::default()
    };
    let answer = until_ok_via(&base, "app.test", &spec, true)
        .await
        .expect("insecure accepts the self-signed certificate");
    assert_eq!(answer.status, 200);

    let quick = ProbeSpec {
        deadline: Duration::from_millis(500),
        ..spec.clone()
    };
    let err = until_ok_via(&base, "app.test", &quick, false)
        .await
        .expect_err("an unverifiable certificate fails the probe");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let wrong_body = ProbeSpec {
        body_contains: Some("Welcome to the app".into()),
        ..quick
    };
    let err = until_ok_via(&base, "app.test", &wrong_body, true)
        .await
        .expect_err("a page without the expected text fails");
    assert!(err.contains("lacks"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
