//! Metrics as an operator sees them: after a push, the collector view on the API port
//! (`/metrics/platform`) holds every component's series under its `component` label,
//! with the app's instance RUNNING in the BBS; a token without an operator's scope is
//! refused.

use std::time::{Duration, Instant};

use wf_tests::platform::{Platform, Wf};

/// `GET path` on the API with `token`: the status, the content type and the body.
fn get(platform: &Platform, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::blocking::Client::new()
        .get(format!("{}{path}", platform.api_url))
        .timeout(Duration::from_secs(30));
    if let Some(token) = token {
        req = req.header("Authorization", token);
    }
    let resp = req.send().expect("metrics request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, resp.text().unwrap_or_default())
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let matches = rest.starts_with('{') && labels.iter().all(|l| rest.contains(l));
        matches.then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn the_platform_view_collects_every_component_for_operators_only() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("metered", "hello");
    let admin = wf.token();

    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, content_type, text) = get(platform, "/metrics/platform", Some(&admin));
        assert_eq!(status, 200, "{text}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let running = value(
            &text,
            "wf_bbs_actual_lrps",
            &["component=\"bbs\"", "state=\"RUNNING\""],
        );
        if running.is_some_and(|n| n >= 1.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "no RUNNING ActualLRP:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    for component in ["bbs", "cell", "router", "uaa", "controller"] {
        let up = format!("component=\"{component}\"");
        assert_eq!(
            value(&text, "up", &[&up]),
            Some(1.0),
            "{component} down:\n{text}"
        );
    }
    for (series, component) in [
        ("wf_bbs_desired_lrps", "bbs"),
        ("wf_cell_lrp_instances", "cell"),
        ("wf_cell_memory_capacity_bytes", "cell"),
        ("wf_router_requests_total", "router"),
        ("wf_uaa_tokens_issued_total", "uaa"),
        ("log_cache_envelopes_ingested_total", "controller"),
        ("syslog_drain_dispatch_lagged_total", "controller"),
    ] {
        let label = format!("component=\"{component}\"");
        assert!(
            value(&text, series, &[&label]).is_some(),
            "{series} of {component} missing:\n{text}"
        );
    }
    assert!(value(&text, "wf_cell_lrp_instances", &["phase=\"RUNNING\""]).unwrap_or(0.0) >= 1.0);
    assert!(value(&text, "log_cache_envelopes_ingested_total", &[]).unwrap_or(0.0) >= 1.0);

    // The controller's own `/metrics`, same scopes.
    let (status, _, own) = get(platform, "/metrics", Some(&admin));
    assert_eq!(status, 200, "{own}");
    assert!(
        own.contains("# TYPE log_cache_envelopes_ingested_total counter"),
        "{own}"
    );

    // No token: 401; a developer's token (no operator scope): 403, on both.
    let outsider = Wf::new(&wf.org, &wf.space);
    platform.create_uaa_user(&wf, "metrics-outsider", "outsider-password-1");
    outsider.login_as(platform, "metrics-outsider", "outsider-password-1");
    let token = outsider.token();
    for path in ["/metrics", "/metrics/platform"] {
        assert_eq!(get(platform, path, None).0, 401, "{path}");
        let (status, _, body) = get(platform, path, Some(&token));
        assert_eq!(status, 403, "{path}: {body}");
    }
}
