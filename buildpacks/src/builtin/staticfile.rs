//! `staticfile_buildpack`: CF's staticfile buildpack for wasm. An app with a
//! `Staticfile` is a folder of files served by the built-in static file server
//! (`buildpacks/static-server`, embedded at build time): finalize writes that server
//! as `app.wasm`, precompresses text files (`<file>.gz`), and writes the server's
//! config (the Staticfile's options and every file's ETag). Nothing is compiled, so
//! staging a site takes milliseconds.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Component, Path};

use wf_static_server::{mime, Config, FileEntry, CONFIG_FILE};

use crate::lifecycle::{Buildpack, Context, ProcessTypes};
use crate::{StagingError, DROPLET_WASM};

/// The buildpack's name (one of [`crate::BUILT_IN`]).
pub const NAME: &str = "staticfile_buildpack";
/// The file whose presence makes an app a static site, with its options.
const STATICFILE: &str = "Staticfile";
/// The static file server component (see `build.rs`).
const SERVER_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/static-server.wasm"));
/// Files smaller than this are not worth a gzip copy.
const GZIP_MIN_BYTES: u64 = 256;
/// The app's top-level files that describe the app rather than belong to the site.
const NOT_SERVED: &[&str] = &[STATICFILE, "Staticfile.auth", "manifest.yml", "Procfile"];
/// CF Staticfile keys this buildpack has no equivalent for: logged, then ignored.
const UNSUPPORTED_KEYS: &[&str] = &[
    "ssi",
    "location_include",
    "http_strict_transport_security",
    "http_strict_transport_security_include_subdomains",
    "http_strict_transport_security_preload",
    "force_https",
    "enable_http2",
    "status_codes",
    "host_dot_files",
];

pub struct StaticfileBuildpack;

impl Buildpack for StaticfileBuildpack {
    fn name(&self) -> &str {
        NAME
    }

    fn detect(&self, ctx: &Context) -> Result<bool, StagingError> {
        Ok(ctx.app_dir.join(STATICFILE).is_file())
    }

    fn finalize(&self, ctx: &Context) -> Result<(), StagingError> {
        ctx.log("-----> Staticfile Buildpack");
        let text = std::fs::read_to_string(ctx.app_dir.join(STATICFILE))
            .map_err(|e| crate::io_error("reading", STATICFILE, e))?;
        let options = Options::parse(&text)
            .map_err(|e| StagingError::Staging(format!("{STATICFILE}: {e}")))?;
        for key in &options.ignored {
            if UNSUPPORTED_KEYS.contains(&key.as_str()) {
                ctx.log(&format!(
                    "       Staticfile option {key:?} is not supported here; ignoring it"
                ));
            } else {
                ctx.log(&format!(
                    "       Unknown Staticfile option {key:?}; ignoring it"
                ));
            }
        }
        let root_dir = ctx.app_dir.join(&options.root);
        if !root_dir.is_dir() {
            return Err(StagingError::Staging(format!(
                "{STATICFILE}: root {:?} is not a directory of the app",
                options.root
            )));
        }
        if !options.root.is_empty() {
            ctx.log(&format!("       Root: {}", options.root));
        }
        if options.directory_listing {
            ctx.log("       Directory listings: visible");
        }
        if options.pushstate {
            ctx.log("       Pushstate: enabled (unknown paths serve index.html)");
        }

        let mut files = BTreeMap::new();
        let top_skip: &[&str] = if options.root.is_empty() {
            NOT_SERVED
        } else {
            &[]
        };
        collect(&root_dir, "", top_skip, &mut files)?;
        let mut compressed = 0;
        for (rel, entry) in files.iter_mut() {
            let path = root_dir.join(rel);
            let bytes = std::fs::read(&path).map_err(|e| crate::io_error("reading", rel, e))?;
            entry.etag = crate::sha256_hex(&bytes)[..20].to_string();
            let gz_name = format!("{rel}.gz");
            // A `.gz` the app brings is its own file, served as such.
            if mime::compressible(rel)
                && bytes.len() as u64 >= GZIP_MIN_BYTES
                && !root_dir.join(&gz_name).exists()
            {
                let gz = gzip(&bytes).map_err(|e| crate::io_error("compressing", rel, e))?;
                if gz.len() < bytes.len() {
                    std::fs::write(root_dir.join(&gz_name), gz)
                        .map_err(|e| crate::io_error("writing", &gz_name, e))?;
                    entry.gzip = true;
                    compressed += 1;
                }
            }
        }
        ctx.log(&format!(
            "       Serving {} files ({compressed} precompressed with gzip)",
            files.len()
        ));
        if !files.contains_key(wf_static_server::route::INDEX) {
            ctx.log("       Note: the site has no index.html at its root");
        }

        let config = Config {
            root: options.root,
            directory_listing: options.directory_listing,
            pushstate: options.pushstate,
            files,
        };
        let json = serde_json::to_vec(&config)
            .map_err(|e| StagingError::Staging(format!("encoding {CONFIG_FILE}: {e}")))?;
        std::fs::write(ctx.app_dir.join(CONFIG_FILE), json)
            .map_err(|e| crate::io_error("writing", CONFIG_FILE, e))?;
        std::fs::write(ctx.app_dir.join(DROPLET_WASM), SERVER_WASM)
            .map_err(|e| crate::io_error("writing", DROPLET_WASM, e))?;
        Ok(())
    }

    fn release(&self, _ctx: &Context) -> Result<ProcessTypes, StagingError> {
        Ok(ProcessTypes::from([(
            "web".to_string(),
            DROPLET_WASM.to_string(),
        )]))
    }
}

/// The Staticfile options this buildpack honours.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    /// The served directory, relative to the app (empty: the app itself).
    root: String,
    directory_listing: bool,
    pushstate: bool,
    /// Keys given but not honoured (CF keys without an equivalent, and unknown ones).
    ignored: Vec<String>,
}

impl Options {
    /// Parses a Staticfile: YAML `key: value` lines, all optional (an empty
    /// Staticfile is the usual case).
    fn parse(text: &str) -> Result<Options, String> {
        let map: Option<BTreeMap<String, serde_yaml::Value>> =
            serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut options = Options::default();
        for (key, value) in map.unwrap_or_default() {
            let value = match value {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Null => String::new(),
                other => return Err(format!("the value of {key:?} is not a string: {other:?}")),
            };
            match key.as_str() {
                "root" => options.root = root(&value)?,
                "directory" => options.directory_listing = value == "visible",
                "pushstate" => options.pushstate = matches!(value.as_str(), "enabled" | "true"),
                _ => options.ignored.push(key),
            }
        }
        Ok(options)
    }
}

/// The `root` option, checked to stay inside the app (`public`, `dist/site`).
fn root(value: &str) -> Result<String, String> {
    let path = Path::new(value.trim_end_matches('/'));
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(part) => parts.push(part),
                None => return Err(format!("root {value:?} is not UTF-8")),
            },
            Component::CurDir => {}
            _ => return Err(format!("root {value:?} must be a directory inside the app")),
        }
    }
    Ok(parts.join("/"))
}

/// Adds every regular file under `dir` to `files` as `prefix/name`, leaving out
/// dotfiles and dot-directories, and the names in `skip` at this level.
fn collect(
    dir: &Path,
    prefix: &str,
    skip: &[&str],
    files: &mut BTreeMap<String, FileEntry>,
) -> Result<(), StagingError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| crate::io_error("reading", &format!("directory {prefix:?}"), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| crate::io_error("reading", &format!("directory {prefix:?}"), e))?;
        let Ok(name) = entry.file_name().into_string() else {
            return Err(StagingError::Staging(format!(
                "{prefix}/{}: file names must be UTF-8",
                entry.file_name().to_string_lossy()
            )));
        };
        if name.starts_with('.') || skip.contains(&name.as_str()) {
            continue;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry
            .file_type()
            .map_err(|e| crate::io_error("reading", &rel, e))?;
        if kind.is_dir() {
            collect(&entry.path(), &rel, &[], files)?;
        } else if kind.is_file() {
            files.insert(rel, FileEntry::default());
        }
    }
    Ok(())
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use wf_static_server::route::{self, Method, Request, Response};

    use super::*;
    use crate::tests::run_stage;
    use crate::{AppKind, Staged};

    const PAGE: &str = "<!DOCTYPE html><html><head><title>Site</title></head><body>";

    /// Stages a package of `entries` with all built-in buildpacks.
    fn stage(
        entries: &[(&str, &[u8])],
    ) -> (tempfile::TempDir, Result<Staged, StagingError>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("package.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        for (name, data) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        let (staged, lines) = run_stage(&zip_path, &dir.path().join("work"), vec![], false);
        (dir, staged, lines)
    }

    fn page(body: &str) -> Vec<u8> {
        format!(
            "{PAGE}{}{body}</body></html>\n",
            "<p>lorem ipsum</p>".repeat(20)
        )
        .into_bytes()
    }

    fn staging_error(staged: Result<Staged, StagingError>) -> String {
        match staged {
            Err(StagingError::Staging(reason)) => reason,
            Err(other) => panic!("expected a staging error, got {other:?}"),
            Ok(_) => panic!("expected a staging error, staging succeeded"),
        }
    }

    #[test]
    fn a_site_stages_into_the_server_its_config_and_gzip_copies() {
        let index = page("home");
        let (dir, staged, lines) = stage(&[
            (
                "Staticfile",
                b"root: public\ndirectory: visible\npushstate: enabled\nforce_https: true\nflavour: x\n",
            ),
            ("manifest.yml", b"applications: []\n"),
            ("public/index.html", &index),
            ("public/css/site.css", b"body { color: red }"),
            ("public/img/logo.png", &[0x89, b'P', b'N', b'G']),
            ("public/.env", b"SECRET=1"),
            ("public/app.wasm", b"not the server"),
            ("notes.txt", b"outside the root"),
        ]);
        let staged = staged.unwrap();
        assert_eq!(staged.metadata.buildpack, NAME);
        assert_eq!(staged.metadata.kind, AppKind::Handler);
        assert_eq!(staged.metadata.process_types["web"], "app.wasm");
        assert_eq!(staged.metadata.wasm_sha256, crate::sha256_hex(SERVER_WASM));
        for expected in [
            "-----> Staticfile Buildpack",
            "       Root: public",
            "       Directory listings: visible",
            "       Serving 4 files (1 precompressed with gzip)",
            "       Staticfile option \"force_https\" is not supported here; ignoring it",
            "       Unknown Staticfile option \"flavour\"; ignoring it",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected:?} in {lines:?}"
            );
        }

        let out = dir.path().join("droplet");
        crate::unpack_droplet(&staged.droplet, &out).unwrap();
        let config: Config =
            serde_json::from_slice(&std::fs::read(out.join("app").join(CONFIG_FILE)).unwrap())
                .unwrap();
        assert_eq!(config.root, "public");
        assert!(config.directory_listing && config.pushstate);
        let files: Vec<&str> = config.files.keys().map(String::as_str).collect();
        assert_eq!(
            files,
            ["app.wasm", "css/site.css", "img/logo.png", "index.html"]
        );
        assert_eq!(
            config.files["index.html"].etag,
            &crate::sha256_hex(&index)[..20]
        );
        // Only text worth compressing gets a gzip copy (the css is too small).
        assert!(config.files["index.html"].gzip);
        assert!(!config.files["css/site.css"].gzip && !config.files["img/logo.png"].gzip);
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(out.join("app/public/index.html.gz")).unwrap(),
        )
        .read_to_end(&mut unzipped)
        .unwrap();
        assert_eq!(unzipped, index);

        // What the server will answer, from the staged config.
        let request = Request {
            method: Method::Get,
            path_with_query: "/index.html",
            accept_encoding: Some("gzip"),
            if_none_match: None,
        };
        let Response::File(file) = route::respond(&config, &request) else {
            panic!("index.html is served");
        };
        assert_eq!(file.path, "index.html.gz");
        assert!(out.join("app/public").join(&file.path).is_file());
    }

    #[test]
    fn an_empty_staticfile_serves_the_app_dir_without_the_app_description() {
        let (dir, staged, _) = stage(&[
            ("Staticfile", b""),
            ("Procfile", b"web: app.wasm\n"),
            ("index.html", b"<h1>hi</h1>"),
            ("sub/index.html", b"<h1>sub</h1>"),
        ]);
        let staged = staged.unwrap();
        assert_eq!(staged.metadata.buildpack, NAME);
        let out = dir.path().join("droplet");
        crate::unpack_droplet(&staged.droplet, &out).unwrap();
        let config: Config =
            serde_json::from_slice(&std::fs::read(out.join("app").join(CONFIG_FILE)).unwrap())
                .unwrap();
        let files: Vec<&str> = config.files.keys().map(String::as_str).collect();
        assert_eq!(files, ["index.html", "sub/index.html"]);
        assert_eq!(config.root, "");
        assert!(!config.directory_listing && !config.pushstate);
    }

    #[test]
    fn bad_staticfiles_fail_staging_with_the_reason() {
        let reason = staging_error(stage(&[("Staticfile", b"root: ../elsewhere\n")]).1);
        assert!(
            reason.contains("must be a directory inside the app"),
            "{reason}"
        );
        let reason = staging_error(stage(&[("Staticfile", b"root: /etc\n")]).1);
        assert!(
            reason.contains("must be a directory inside the app"),
            "{reason}"
        );
        let reason = staging_error(stage(&[("Staticfile", b"root: dist\n")]).1);
        assert!(
            reason.contains("root \"dist\" is not a directory of the app"),
            "{reason}"
        );
        let reason = staging_error(stage(&[("Staticfile", b"root: [a, b]\n")]).1);
        assert!(
            reason.starts_with("Staticfile: the value of \"root\""),
            "{reason}"
        );
        let reason = staging_error(stage(&[("Staticfile", b": : :\n  - x")]).1);
        assert!(reason.starts_with("Staticfile: "), "{reason}");
    }

    #[test]
    fn staticfile_options_parse() {
        let options =
            Options::parse("root: ./dist/site/\ndirectory: hidden\npushstate: enabled\n").unwrap();
        assert_eq!(
            options,
            Options {
                root: "dist/site".into(),
                directory_listing: false,
                pushstate: true,
                ignored: vec![],
            }
        );
        assert_eq!(Options::parse("").unwrap(), Options::default());
        assert_eq!(
            Options::parse("# just a comment\n").unwrap(),
            Options::default()
        );
        assert!(
            crate::BUILT_IN.contains(&NAME) && crate::BUILT_IN.contains(&super::super::wat::NAME)
        );
    }
}
