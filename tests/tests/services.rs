//! User-provided services as a developer uses them: `wf cups` with credentials and a
//! syslog drain, `wf bind-service`, a restart that puts the binding into
//! `VCAP_SERVICES`, and the app's logs arriving at the drain (a TCP server of this
//! test) as RFC 5424 lines; `wf unbind-service` and `wf delete-service` undo it.

use std::io::Read as _;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wf_tests::platform::Platform;

/// A syslog drain on loopback: everything it receives, appended.
fn drain() -> (String, Arc<Mutex<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(String::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
    });
    (format!("syslog://{addr}"), received)
}

#[test]
fn a_bound_user_provided_service_reaches_the_env_and_the_drain() {
    let platform = Platform::shared();
    let wf = platform.user();
    let (drain_url, received) = drain();
    wf.push_fixture("svc-env", "env");
    let out = wf.ok(&[
        "cups",
        "svc-db",
        "-p",
        r#"{"uri":"postgres://u:pw@db.internal/x"}"#,
        "-l",
        &drain_url,
        "-t",
        "db,pg",
    ]);
    assert!(
        out.contains("Creating user provided service svc-db"),
        "{out}"
    );
    let out = wf.ok(&["bind-service", "svc-env", "svc-db"]);
    assert!(out.contains("TIP: Use 'wf restage svc-env'"), "{out}");
    let services = wf.ok(&["services"]);
    assert!(
        services.contains("svc-db")
            && services.contains("user-provided")
            && services.contains("svc-env"),
        "{services}"
    );

    // As in CF, the binding reaches the environment on the next start.
    assert_eq!(platform.vcap_services("svc-env"), serde_json::json!({}));
    wf.ok(&["restart", "svc-env"]);
    let vcap = platform.vcap_services("svc-env");
    let entry = &vcap["user-provided"][0];
    assert_eq!(entry["name"], "svc-db", "{vcap}");
    assert_eq!(entry["credentials"]["uri"], "postgres://u:pw@db.internal/x");
    assert_eq!(entry["tags"], serde_json::json!(["db", "pg"]));
    assert_eq!(entry["syslog_drain_url"], drain_url.as_str());

    // The drain gets the app's logs at once (the router's access log lines here).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        platform.get("svc-env", "/drained-request");
        let text = received.lock().unwrap().clone();
        let line = text
            .split('\n')
            .find(|l| l.contains("/drained-request") && l.contains("[RTR/"));
        if let Some(line) = line {
            // `<len> <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - [tags@47450 ...] MSG`
            let (len, message) = line.split_once(' ').unwrap();
            assert!(
                len.trim_start_matches(|c: char| !c.is_ascii_digit())
                    .parse::<usize>()
                    .is_ok(),
                "{line}"
            );
            let fields: Vec<&str> = message.splitn(7, ' ').collect();
            assert_eq!(fields[0], "<14>1", "{line}");
            assert!(
                fields[2].ends_with(".svc-env"),
                "hostname org.space.app: {line}"
            );
            assert!(fields[4].starts_with("[RTR/"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "nothing drained:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = wf.ok(&["unbind-service", "svc-env", "svc-db"]);
    assert!(out.contains("OK"), "{out}");
    let out = wf.ok(&["delete-service", "svc-db", "-f"]);
    assert!(out.contains("Service instance svc-db deleted."), "{out}");
    assert!(wf.ok(&["services"]).contains("No service instances found."));
}
