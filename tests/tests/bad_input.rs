//! Bad input gets a clear CF error (status, code, title, detail), leaves nothing
//! half-written behind, and the platform keeps serving the other apps.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use wf_tests::platform::{Platform, Wf};

/// Uploads `bytes` as the bits of a new package of app `name` (created if needed)
/// straight through the API, as any CF client could; returns (status, body, package guid).
fn upload_bits(
    platform: &Platform,
    wf: &Wf,
    name: &str,
    filename: &str,
    bytes: Vec<u8>,
) -> (u16, Value, String) {
    let space_guid = space_guid(wf);
    let apps = wf.curl_json(&[&format!("/v3/apps?names={name}&space_guids={space_guid}")]);
    let app_guid = match apps["resources"][0]["guid"].as_str() {
        Some(g) => g.to_string(),
        None => {
            let body =
                json!({"name": name, "relationships": {"space": {"data": {"guid": space_guid}}}});
            let app = wf.curl_json(&["-X", "POST", "/v3/apps", "-d", &body.to_string()]);
            app["guid"].as_str().expect("app guid").to_string()
        }
    };
    let body = json!({"type": "bits", "relationships": {"app": {"data": {"guid": app_guid}}}});
    let package = wf.curl_json(&["-X", "POST", "/v3/packages", "-d", &body.to_string()]);
    let package_guid = package["guid"].as_str().expect("package guid").to_string();

    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "bits",
            reqwest::blocking::multipart::Part::bytes(bytes).file_name(filename.to_string()),
        )
        .text("resources", "[]");
    let resp = reqwest::blocking::Client::new()
        .post(format!(
            "{}/v3/packages/{package_guid}/upload",
            platform.api_url
        ))
        .header("Authorization", wf.token())
        .multipart(form)
        .timeout(Duration::from_secs(60))
        .send()
        .expect("upload request");
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap_or(Value::Null);
    (status, body, package_guid)
}

fn space_guid(wf: &Wf) -> String {
    let spaces = wf.curl_json(&[&format!("/v3/spaces?names={}", wf.space)]);
    spaces["resources"][0]["guid"]
        .as_str()
        .expect("space guid")
        .to_string()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        zip.write_all(data).expect("zip data");
    }
    zip.finish().expect("zip").into_inner()
}

fn assert_cf_error(body: &Value, title: &str, detail_contains: &str) {
    let error = &body["errors"][0];
    assert_eq!(error["title"], title, "{body}");
    assert!(error["code"].as_u64().is_some(), "{body}");
    let detail = error["detail"].as_str().unwrap_or_default();
    assert!(
        detail
            .to_lowercase()
            .contains(&detail_contains.to_lowercase()),
        "detail {detail:?} lacks {detail_contains:?}: {body}"
    );
}

#[test]
fn bad_uploads_are_refused_and_leave_no_package_behind() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.push_fixture("steady", "hello");

    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "not wasm",
            "app.wasm",
            b"hello, I am text".to_vec(),
            "WebAssembly",
        ),
        ("empty zip", "app.zip", zip_of(&[]), "empty"),
        (
            "path traversal",
            "app.zip",
            zip_of(&[("../evil.wasm", b"\0asm")]),
            "..",
        ),
    ];
    for (what, filename, bytes, detail) in cases {
        let (status, body, package_guid) = upload_bits(platform, &wf, "victim", filename, bytes);
        assert_eq!(status, 422, "{what}: {body}");
        assert_cf_error(&body, "CF-UnprocessableEntity", detail);
        let package = wf.curl_json(&[&format!("/v3/packages/{package_guid}")]);
        assert_eq!(package["state"], "AWAITING_UPLOAD", "{what}: {package}");
    }

    // The other app was never disturbed.
    let resp = platform.get("steady", "/");
    assert_eq!((resp.status, resp.body.as_str()), (200, "hello from 0\n"));
}

#[test]
fn a_corrupt_wasm_fails_staging_with_a_clear_reason() {
    let platform = Platform::shared();
    let wf = platform.user();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0\x01\xff\xff garbage").expect("write");

    let out = wf.fails(&["push", "broken", "-p", path.to_str().expect("path")]);
    assert!(out.contains("StagingError"), "{out}");
    assert!(out.contains("not a valid WebAssembly"), "{out}");
    let guid = wf.app_guid("broken");
    let builds = wf.curl_json(&[&format!("/v3/builds?app_guids={guid}")]);
    assert_eq!(builds["resources"][0]["state"], "FAILED", "{builds}");
    let droplets = wf.curl_json(&[&format!("/v3/apps/{guid}/droplets")]);
    let staged = droplets["resources"]
        .as_array()
        .map(|d| d.iter().filter(|d| d["state"] == "STAGED").count())
        .unwrap_or_default();
    assert_eq!(staged, 0, "{droplets}");
}

#[test]
fn name_clashes_and_bad_scales_are_unprocessable() {
    let platform = Platform::shared();
    let wf = platform.user();
    let space_guid = space_guid(&wf);
    let body = json!({"name": "twin", "relationships": {"space": {"data": {"guid": space_guid}}}});
    let first = wf.curl_json(&["-X", "POST", "/v3/apps", "-d", &body.to_string()]);
    assert!(first["guid"].is_string(), "{first}");
    let second = wf.curl_json(&["-X", "POST", "/v3/apps", "-d", &body.to_string()]);
    assert_cf_error(&second, "CF-UnprocessableEntity", "twin");

    let process = wf.curl_json(&[&format!(
        "/v3/apps/{}/processes/web",
        first["guid"].as_str().unwrap_or_default()
    )]);
    let process_guid = process["guid"].as_str().expect("process guid");
    let scale = wf.curl_json(&[
        "-X",
        "POST",
        &format!("/v3/processes/{process_guid}/actions/scale"),
        "-d",
        r#"{"instances": -1}"#,
    ]);
    assert_cf_error(&scale, "CF-UnprocessableEntity", "instances");
    let process = wf.curl_json(&[&format!("/v3/processes/{process_guid}")]);
    assert_eq!(process["instances"], 1, "{process}");

    let garbage = wf.curl_json(&["-X", "POST", "/v3/apps", "-d", "{not json"]);
    assert_cf_error(&garbage, "CF-MessageParseError", "");
}

#[test]
fn push_to_a_deleted_space_fails_clearly() {
    let platform = Platform::shared();
    let wf = platform.user();
    wf.ok(&["create-space", "doomed", "-o", &wf.org]);
    wf.ok(&["target", "-o", &wf.org, "-s", "doomed"]);
    wf.ok(&["delete-space", "doomed", "-f"]);
    let err = wf.fails(&[
        "push",
        "orphan",
        "-p",
        wf_tests::fixtures::fixture_wasm("hello")
            .to_str()
            .expect("path"),
    ]);
    assert!(err.to_lowercase().contains("space"), "{err}");
}

#[test]
fn requests_without_a_valid_token_are_refused() {
    let platform = Platform::shared();
    let client = reqwest::blocking::Client::new();
    let apps = format!("{}/v3/apps", platform.api_url);

    let resp = client.get(&apps).send().expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    assert_cf_error(&resp.json().expect("json"), "CF-NotAuthenticated", "");

    let wf = platform.user();
    let token = wf.token();
    // A token whose signature no longer matches its claims (tampered, or from a forger).
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = parts[1].chars().rev().collect();
    for bad in ["bearer garbage".to_string(), parts.join(".")] {
        let resp = client
            .get(&apps)
            .header("Authorization", &bad)
            .send()
            .expect("request");
        assert_eq!(resp.status().as_u16(), 401, "{bad}");
        assert_cf_error(&resp.json().expect("json"), "CF-InvalidAuthToken", "");
    }
}
