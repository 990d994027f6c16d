use std::io::Write as _;

use super::*;

/// The smallest valid core module and component.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

fn zip_of(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("package.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (name, data) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn stage_entries(
    entries: &[(&str, &[u8])],
) -> (tempfile::TempDir, Result<Staged, StagingError>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of(dir.path(), entries);
    let work = dir.path().join("work");
    let mut lines = Vec::new();
    let staged = stage(&zip, &work, &[], &mut |l| lines.push(l.to_string()));
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
    let err = stage(&path, &dir.path().join("work"), &[], &mut |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[test]
fn a_package_that_is_not_a_zip_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("package.zip");
    std::fs::write(&path, b"not a zip").unwrap();
    let err = stage(&path, &dir.path().join("work"), &[], &mut |_| {})
        .err()
        .unwrap();
    assert!(matches!(err, StagingError::InvalidPackage(_)), "{err}");
}

#[test]
fn unknown_buildpacks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of(dir.path(), &[("app.wasm", CORE_MODULE)]);
    let err = stage(
        &zip,
        &dir.path().join("work"),
        &["ruby_buildpack".into()],
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("ruby_buildpack"), "{err}");
    let ok = stage(
        &zip,
        &dir.path().join("work2"),
        &[WASM_BUILDPACK.into()],
        &mut |_| {},
    );
    assert!(ok.is_ok());
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
}
