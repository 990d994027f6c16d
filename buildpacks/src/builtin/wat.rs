//! `wat_buildpack`: the app is WebAssembly text (`app.wat`, or the only `.wat` at the
//! app's top level), a core module or a component; finalize turns it into `app.wasm`
//! in-process with the `wat` crate, no build tools needed.

use std::path::Path;

use crate::lifecycle::{Buildpack, Context, ProcessTypes};
use crate::{StagingError, DROPLET_WASM};

/// The buildpack's name (one of [`crate::BUILT_IN`]).
pub const NAME: &str = "wat_buildpack";
/// The text file `detect` looks for first.
const APP_WAT: &str = "app.wat";

pub struct WatBuildpack;

impl Buildpack for WatBuildpack {
    fn name(&self) -> &str {
        NAME
    }

    /// Text, and no prebuilt wasm beside it (that is the wasm buildpack's app).
    fn detect(&self, ctx: &Context) -> Result<bool, StagingError> {
        match crate::wasm::find_app_wasm(ctx.app_dir) {
            Err(StagingError::NoAppDetected) => {}
            Ok(_) => return Ok(false),
            Err(e) => return Err(e),
        }
        Ok(find_app_wat(ctx.app_dir)?.is_some())
    }

    fn finalize(&self, ctx: &Context) -> Result<(), StagingError> {
        ctx.log("-----> Wat Buildpack");
        let name = find_app_wat(ctx.app_dir)?.ok_or(StagingError::NoAppDetected)?;
        let text = std::fs::read(ctx.app_dir.join(&name))
            .map_err(|e| crate::io_error("reading", &name, e))?;
        let wasm = wat::Parser::new()
            .parse_bytes(Some(Path::new(&name)), &text)
            .map_err(|e| {
                // The parser's message names the file, line and column, with the line.
                let message = e.to_string();
                for line in message.lines() {
                    ctx.log(&format!("       {line}"));
                }
                let reason = message.lines().next().unwrap_or("invalid WebAssembly text");
                // `--> app.wat:3:7`: where the parser stopped.
                let at = message
                    .lines()
                    .find_map(|line| line.trim().strip_prefix("--> "))
                    .map(|location| format!(" (at {location})"))
                    .unwrap_or_default();
                StagingError::Staging(format!(
                    "{name} is not valid WebAssembly text: {reason}{at}"
                ))
            })?;
        std::fs::write(ctx.app_dir.join(DROPLET_WASM), &wasm)
            .map_err(|e| crate::io_error("writing", DROPLET_WASM, e))?;
        ctx.log(&format!(
            "       Assembled {name} into {DROPLET_WASM} ({} bytes)",
            wasm.len()
        ));
        Ok(())
    }

    fn release(&self, _ctx: &Context) -> Result<ProcessTypes, StagingError> {
        Ok(ProcessTypes::from([(
            "web".to_string(),
            DROPLET_WASM.to_string(),
        )]))
    }
}

/// `app.wat`, or the only `.wat` at the top of `app_dir`; several without an
/// `app.wat` is an error, none is `None`.
fn find_app_wat(app_dir: &Path) -> Result<Option<String>, StagingError> {
    if app_dir.join(APP_WAT).is_file() {
        return Ok(Some(APP_WAT.to_string()));
    }
    let entries = std::fs::read_dir(app_dir)
        .map_err(|e| crate::io_error("reading", "the app directory", e))?;
    let mut wats: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".wat"))
        .collect();
    wats.sort();
    match wats.len() {
        0 => Ok(None),
        1 => Ok(wats.pop()),
        _ => Err(StagingError::Staging(format!(
            "the app has several .wat files at its top level ({}); name the one to run {APP_WAT}",
            wats.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::path::PathBuf;

    use crate::tests::run_stage;
    use crate::{AppKind, Staged, StagingError};

    /// Stages a package of `entries` with all built-in buildpacks.
    fn stage(
        entries: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Staged, StagingError>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("package.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        for (name, data) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        let (staged, lines) = run_stage(&zip_path, &dir.path().join("work"), vec![], false);
        (dir, staged, lines)
    }

    fn droplet_wasm(dir: &tempfile::TempDir, staged: &Staged) -> Vec<u8> {
        let out: PathBuf = dir.path().join("unpacked");
        crate::unpack_droplet(&staged.droplet, &out).unwrap();
        std::fs::read(out.join("app.wasm")).unwrap()
    }

    #[test]
    fn a_core_module_in_text_becomes_app_wasm() {
        let (dir, staged, lines) = stage(&[
            (
                "server.wat",
                "(module (func (export \"_start\")) (memory (export \"memory\") 1))",
            ),
            ("README.md", "docs"),
        ]);
        let staged = staged.unwrap();
        assert_eq!(staged.metadata.buildpack, super::NAME);
        assert_eq!(staged.metadata.kind, AppKind::Server);
        assert_eq!(staged.metadata.process_types["web"], "app.wasm");
        assert!(
            lines.iter().any(|l| l == "-----> Wat Buildpack"),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("Assembled server.wat into app.wasm")),
            "{lines:?}"
        );
        let wasm = droplet_wasm(&dir, &staged);
        assert!(wasm.starts_with(b"\0asm\x01\0\0\0"));
    }

    #[test]
    fn a_component_in_text_becomes_a_component() {
        let component = r#"
            (component
              (core module $m
                (func (export "run") (result i32) i32.const 42))
              (core instance $i (instantiate $m))
              (func $run (result u32) (canon lift (core func $i "run")))
              (export "run" (func $run)))
        "#;
        let (dir, staged, _) = stage(&[("app.wat", component), ("other.wat", "(module)")]);
        let staged = staged.unwrap();
        assert_eq!(staged.metadata.buildpack, super::NAME);
        assert!(wasmparser::Parser::is_component(&droplet_wasm(
            &dir, &staged
        )));
    }

    #[test]
    fn a_syntax_error_shows_the_parser_message_with_its_location() {
        let (_dir, staged, lines) = stage(&[(
            "app.wat",
            "(module\n  (func (result i32)\n    i32.const))\n",
        )]);
        let Err(StagingError::Staging(reason)) = staged else {
            panic!("expected a staging error");
        };
        assert!(
            reason.starts_with("app.wat is not valid WebAssembly text: "),
            "{reason}"
        );
        assert!(reason.contains("(at app.wat:3:"), "{reason}");
        assert!(
            lines.iter().any(|l| l.contains("--> app.wat:3:")),
            "{lines:?}"
        );
    }

    #[test]
    fn prebuilt_wasm_wins_and_several_wat_files_need_an_app_wat() {
        let (_dir, staged, _) = stage(&[("x.wat", "(module)"), ("x.wasm", "\0asm\x01\0\0\0")]);
        assert_eq!(staged.unwrap().metadata.buildpack, crate::WASM_BUILDPACK);
        let (_dir, staged, _) = stage(&[("a.wat", "(module)"), ("b.wat", "(module)")]);
        let Err(StagingError::Staging(reason)) = staged else {
            panic!("expected a staging error");
        };
        assert!(
            reason.contains("several .wat files at its top level (a.wat, b.wat)"),
            "{reason}"
        );
    }
}
