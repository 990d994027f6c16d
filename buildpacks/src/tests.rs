use std::io::Write as _;

use super::*;

/// The smallest valid core module and component.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

fn zip_of(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
    zip_at(dir.join("package.zip"), entries)
}

fn zip_at(path: PathBuf, entries: &[(&str, &[u8])]) -> PathBuf {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (name, data) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    path
}

/// Stages `zip` in `work` with `buildpacks` (empty: all built-in ones), an app cache
/// in `work/../cache`; returns the outcome and the staging log.
pub(crate) fn run_stage(
    zip: &Path,
    work: &Path,
    buildpacks: Vec<BuildpackSource>,
    skip_detect: bool,
) -> (Result<Staged, StagingError>, Vec<String>) {
    let lines = std::sync::Mutex::new(Vec::new());
    let parent = work.parent().unwrap();
    let staged = stage(
        StageRequest {
            package: zip,
            work_dir: work,
            buildpacks,
            skip_detect,
            cache_dir: &parent.join("cache"),
            tools_dir: &parent.join("tools"),
            env: vec![("STAGING_VAR".into(), "from-env".into())],
            limits: Limits {
                timeout: std::time::Duration::from_secs(60),
                memory_bytes: 512 << 20,
            },
        },
        &|line: &str| lines.lock().unwrap().push(line.to_string()),
    );
    (staged, lines.into_inner().unwrap())
}

fn stage_entries(
    entries: &[(&str, &[u8])],
) -> (tempfile::TempDir, Result<Staged, StagingError>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of(dir.path(), entries);
    let (staged, lines) = run_stage(&zip, &dir.path().join("work"), vec![], false);
    (dir, staged, lines)
}

#[test]
fn a_single_wasm_stages_into_a_droplet_that_unpacks() {
    let (dir, staged, lines) = stage_entries(&[
        ("hello.wasm", COMPONENT),
        ("static/index.html", b"<h1>hi</h1>"),
    ]);
    let staged = staged.unwrap();
    assert_eq!(staged.metadata.kind, AppKind::Server);
    assert_eq!(staged.metadata.wasm, "app.wasm");
    assert_eq!(staged.metadata.wasm_sha256, sha256_hex(COMPONENT));
    assert_eq!(staged.metadata.buildpack, WASM_BUILDPACK);
    assert_eq!(staged.metadata.buildpacks, vec![WASM_BUILDPACK.to_string()]);
    assert_eq!(staged.metadata.process_types["web"], "app.wasm");
    assert!(
        lines.iter().any(|l| l == "-----> Wasm Buildpack"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Detected hello.wasm")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("Droplet: ")), "{lines:?}");

    let dest = dir.path().join("unpacked");
    let metadata = unpack_droplet(&staged.droplet, &dest).unwrap();
    assert_eq!(metadata, staged.metadata);
    assert_eq!(std::fs::read(dest.join("app.wasm")).unwrap(), COMPONENT);
    assert_eq!(
        std::fs::read(dest.join("app/static/index.html")).unwrap(),
        b"<h1>hi</h1>"
    );
    assert!(
        !dest.join("app/hello.wasm").exists(),
        "the wasm is stored once"
    );
}

#[test]
fn core_modules_are_servers_too() {
    let (_dir, staged, _) = stage_entries(&[("app.wasm", CORE_MODULE)]);
    assert_eq!(staged.unwrap().metadata.kind, AppKind::Server);
}

#[test]
fn app_wasm_wins_among_several_and_otherwise_several_is_an_error() {
    let (_dir, staged, lines) = stage_entries(&[("a.wasm", CORE_MODULE), ("app.wasm", COMPONENT)]);
    assert_eq!(staged.unwrap().metadata.wasm_sha256, sha256_hex(COMPONENT));
    assert!(lines.iter().any(|l| l.contains("Detected app.wasm")));

    let (_dir, staged, _) = stage_entries(&[("a.wasm", CORE_MODULE), ("b.wasm", COMPONENT)]);
    let err = staged.err().unwrap();
    assert_eq!(err.cf_name(), "StagingError");
    assert!(err.to_string().contains("a.wasm, b.wasm"), "{err}");
}

#[test]
fn a_corrupt_wasm_fails_with_the_validator_reason() {
    let (_dir, staged, _) =
        stage_entries(&[("broken.wasm", b"\0asm\x01\0\0\0\x01\xff\xff garbage")]);
    let err = staged.err().unwrap();
    assert_eq!(err.cf_name(), "StagingError");
    let message = err.to_string();
    assert!(
        message.starts_with("broken.wasm is not a valid WebAssembly module or component: "),
        "{message}"
    );

    let (_dir, staged, _) = stage_entries(&[("app.wasm", b"hello, I am text")]);
    assert!(staged
        .err()
        .unwrap()
        .to_string()
        .contains("not a valid WebAssembly"));
}

#[test]
fn no_wasm_is_no_app_detected() {
    for entries in [&[("README", b"hi".as_slice())][..], &[][..]] {
        let (_dir, staged, _) = stage_entries(entries);
        let err = staged.err().unwrap();
        assert!(matches!(err, StagingError::NoAppDetected), "{err}");
        assert_eq!(err.cf_name(), "NoAppDetectedError");
    }
}

#[test]
fn escaping_entries_and_symlinks_are_refused() {
    let (dir, staged, _) = stage_entries(&[("../evil.wasm", CORE_MODULE)]);
    let err = staged.err().unwrap();
    assert!(
        matches!(err, StagingError::InvalidPackage(_)) && err.to_string().contains(".."),
        "{err}"
    );
    assert!(!dir.path().join("evil.wasm").exists());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("package.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    zip.add_symlink(
        "app.wasm",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.finish().unwrap();
    let err = run_stage(&path, &dir.path().join("work"), vec![], false)
        .0
        .err()
        .unwrap();
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[test]
fn a_package_that_is_not_a_zip_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("package.zip");
    std::fs::write(&path, b"not a zip").unwrap();
    let err = run_stage(&path, &dir.path().join("work"), vec![], false)
        .0
        .err()
        .unwrap();
    assert!(matches!(err, StagingError::InvalidPackage(_)), "{err}");
}

#[test]
fn unknown_buildpacks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of(dir.path(), &[("app.wasm", CORE_MODULE)]);
    let named = |name: &str| vec![BuildpackSource::BuiltIn(name.into())];
    let (staged, _) = run_stage(
        &zip,
        &dir.path().join("work"),
        named("ruby_buildpack"),
        true,
    );
    let err = staged.err().unwrap();
    assert!(err.to_string().contains("ruby_buildpack"), "{err}");
    let (staged, _) = run_stage(&zip, &dir.path().join("work2"), named(WASM_BUILDPACK), true);
    assert!(staged.is_ok());
}

#[test]
fn a_tampered_droplet_is_refused() {
    let (dir, staged, _) = stage_entries(&[("app.wasm", COMPONENT)]);
    let staged = staged.unwrap();
    let dest = dir.path().join("unpacked");
    unpack_droplet(&staged.droplet, &dest).unwrap();
    std::fs::write(dest.join("app.wasm"), CORE_MODULE).unwrap();
    // Repack with the changed wasm but the old metadata.
    let repacked = dir.path().join("tampered.tgz");
    let file = std::fs::File::create(&repacked).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    tar.append_path_with_name(dest.join("app.wasm"), "app.wasm")
        .unwrap();
    tar.append_path_with_name(dest.join("droplet.json"), "droplet.json")
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let err = unpack_droplet(&repacked, &dir.path().join("again"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("sha256"), "{err}");
    let err = crate::inspect_droplet(&repacked, 1 << 30).err().unwrap();
    assert!(err.to_string().contains("sha256"), "{err}");
}

#[test]
fn an_uploaded_droplet_is_inspected_without_unpacking() {
    let (dir, staged, _) = stage_entries(&[
        ("app.wasm", COMPONENT),
        ("static/index.html", b"<h1>hi</h1>"),
    ]);
    let staged = staged.unwrap();
    let metadata = crate::inspect_droplet(&staged.droplet, 1 << 30).unwrap();
    assert_eq!(metadata, staged.metadata);
    let err = crate::inspect_droplet(&staged.droplet, 100).err().unwrap();
    assert!(err.to_string().contains("more than 100 bytes"), "{err}");

    // A tgz of anything else: no metadata, links, paths climbing out.
    let tgz =
        |name: &str, build: &dyn Fn(&mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>)| {
            let path = dir.path().join(name);
            let file = std::fs::File::create(&path).unwrap();
            let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ));
            build(&mut tar);
            tar.into_inner().unwrap().finish().unwrap();
            crate::inspect_droplet(&path, 1 << 30)
                .err()
                .unwrap()
                .to_string()
        };
    let file = |tar: &mut tar::Builder<_>, name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, bytes).unwrap();
    };
    let err = tgz("bare.tgz", &|tar| file(tar, "app.wasm", COMPONENT));
    assert!(err.contains("no droplet.json"), "{err}");
    let err = tgz("link.tgz", &|tar| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, "app.wasm", "/etc/passwd")
            .unwrap();
    });
    assert!(err.contains("neither a file nor a directory"), "{err}");
    let err = tgz("climb.tgz", &|tar| {
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // append_data refuses `..`; write the name into the header as an attacker would.
        header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../x.wasm");
        header.set_cksum();
        tar.append(&header, &b"hi"[..]).unwrap();
    });
    assert!(err.contains("outside"), "{err}");
    let err = std::fs::write(dir.path().join("junk.tgz"), b"not a tgz")
        .map(|()| crate::inspect_droplet(&dir.path().join("junk.tgz"), 1 << 30))
        .unwrap()
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("invalid droplet"), "{err}");
}

/// Custom buildpacks run in bubblewrap; CI installs it (and sets `WF_REQUIRE_BWRAP`).
fn sandbox_available() -> bool {
    if sandbox::available() {
        return true;
    }
    assert!(
        std::env::var_os("WF_REQUIRE_BWRAP").is_none(),
        "WF_REQUIRE_BWRAP is set but bubblewrap (bwrap) is not installed"
    );
    eprintln!("skipped: bubblewrap (bwrap) is not installed");
    false
}

/// A custom buildpack zip `name.zip` in `dir` with `bin/<script>` bodies (sh).
fn buildpack(dir: &Path, name: &str, scripts: &[(&str, &str)]) -> BuildpackSource {
    let entries: Vec<(String, Vec<u8>)> = scripts
        .iter()
        .map(|(script, body)| {
            (
                format!("bin/{script}"),
                format!("#!/bin/sh\n{body}\n").into_bytes(),
            )
        })
        .collect();
    let entries: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    BuildpackSource::Custom {
        name: name.to_string(),
        zip: zip_at(dir.join(format!("{name}.zip")), &entries),
    }
}

/// An app holding a core module under a name no buildpack detects.
fn module_app(dir: &Path) -> PathBuf {
    zip_of(
        dir,
        &[
            ("module.bin", CORE_MODULE),
            ("Procfile", b"worker: app.wasm work\n"),
        ],
    )
}

#[test]
fn detect_picks_the_first_custom_buildpack_that_matches_and_runs_its_scripts() {
    if !sandbox_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zip = module_app(dir.path());
    let never = buildpack(
        dir.path(),
        "never",
        &[("detect", "exit 1"), ("compile", "exit 9")],
    );
    let copier = buildpack(
        dir.path(),
        "copier",
        &[
            ("detect", "test -f $1/module.bin && echo copier-1.0"),
            (
                "finalize",
                "echo \"finalizing with STAGING_VAR=$STAGING_VAR in $(pwd)\"; cp $1/module.bin $1/app.wasm; echo to-stderr >&2",
            ),
            ("release", "printf -- '---\\ndefault_process_types:\\n  web: app.wasm serve\\n'"),
        ],
    );
    let (staged, lines) = run_stage(&zip, &dir.path().join("work"), vec![never, copier], false);
    let staged = staged.unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    assert_eq!(staged.metadata.buildpack, "copier");
    assert_eq!(staged.metadata.buildpacks, vec!["copier".to_string()]);
    assert_eq!(staged.metadata.process_types["web"], "app.wasm serve");
    // The app's Procfile adds to (and would override) the buildpack's types.
    assert_eq!(staged.metadata.process_types["worker"], "app.wasm work");
    for expected in [
        "-----> copier (copier-1.0)",
        "finalizing with STAGING_VAR=from-env in /tmp/app",
        "to-stderr",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} not in {lines:?}"
        );
    }
}

#[test]
fn named_buildpacks_skip_detect_supply_in_order_and_the_last_finalizes() {
    if !sandbox_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zip = module_app(dir.path());
    let supplier = buildpack(
        dir.path(),
        "supplier",
        &[
            ("detect", "exit 1"),
            ("supply", "cp $1/module.bin $3/$4/supplied.wasm"),
        ],
    );
    let finisher = buildpack(
        dir.path(),
        "finisher",
        &[
            ("detect", "exit 1"),
            ("finalize", "cp $3/0/supplied.wasm $1/app.wasm"),
        ],
    );
    let (staged, lines) = run_stage(
        &zip,
        &dir.path().join("work"),
        vec![supplier.clone(), finisher],
        true,
    );
    let staged = staged.unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    assert_eq!(
        staged.metadata.buildpacks,
        vec!["supplier".to_string(), "finisher".to_string()]
    );
    assert_eq!(staged.metadata.wasm_sha256, sha256_hex(CORE_MODULE));

    // A buildpack without bin/supply cannot go first, nor one without a final step last.
    let compiler = buildpack(
        dir.path(),
        "compiler",
        &[("detect", "true"), ("compile", "true")],
    );
    let (staged, _) = run_stage(
        &zip,
        &dir.path().join("w2"),
        vec![compiler, supplier.clone()],
        true,
    );
    let err = staged.err().unwrap().to_string();
    assert!(
        err.contains("compiler cannot run before another one"),
        "{err}"
    );
    let (staged, _) = run_stage(&zip, &dir.path().join("w3"), vec![supplier], true);
    let err = staged.err().unwrap().to_string();
    assert!(err.contains("cannot be the last buildpack"), "{err}");
}

#[test]
fn the_cache_carries_over_between_stagings_of_an_app() {
    if !sandbox_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zip = module_app(dir.path());
    let counter = buildpack(
        dir.path(),
        "counter",
        &[
            ("detect", "true"),
            ("compile", "echo run >> $2/runs; echo \"runs: $(wc -l < $2/runs)\"; cp $1/module.bin $1/app.wasm"),
        ],
    );
    for (work, expected) in [("w1", "runs: 1"), ("w2", "runs: 2")] {
        let (staged, lines) = run_stage(&zip, &dir.path().join(work), vec![counter.clone()], false);
        staged.unwrap();
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} not in {lines:?}"
        );
    }
}

#[test]
fn failing_scripts_show_their_output_and_cannot_see_the_cell() {
    if !sandbox_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zip = module_app(dir.path());
    let secret = dir.path().join("other-app-package.zip");
    std::fs::write(&secret, "other tenant's bits").unwrap();
    let snoop = buildpack(
        dir.path(),
        "snoop",
        &[
            ("detect", "true"),
            (
                "compile",
                &format!("cat {} || echo cannot-read; ls /root 2>/dev/null | wc -l; echo 'error: boom' >&2; exit 2", secret.display()),
            ),
        ],
    );
    let (staged, lines) = run_stage(&zip, &dir.path().join("work"), vec![snoop], false);
    let err = staged.err().unwrap();
    assert_eq!(err.cf_name(), "StagingError");
    assert!(
        err.to_string()
            .contains("bin/compile of buildpack snoop failed (exit status: 2)"),
        "{err}"
    );
    assert!(lines.contains(&"error: boom".to_string()), "{lines:?}");
    assert!(lines.contains(&"cannot-read".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"0".to_string()),
        "/root is empty inside: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("other tenant")),
        "{lines:?}"
    );
}

#[test]
fn a_zip_without_the_scripts_is_no_buildpack() {
    let dir = tempfile::tempdir().unwrap();
    let zip = module_app(dir.path());
    let empty = buildpack(dir.path(), "empty", &[("release", "true")]);
    let (staged, _) = run_stage(&zip, &dir.path().join("work"), vec![empty], false);
    let err = staged.err().unwrap().to_string();
    assert!(err.contains("empty is not a buildpack"), "{err}");
}
