//! `javascript_buildpack`: an ES module that handles `fetch` events
//! (`addEventListener("fetch", event => event.respondWith(...))`, or one that exports
//! `incomingHandler` itself) becomes a `wasi:http` handler component, built by
//! `@bytecodealliance/componentize-js` (npm; the SpiderMonkey-based StarlingMonkey
//! runtime with the app's code pre-initialized), which it installs once per cell.

use std::path::{Component, Path};

use crate::lifecycle::{Buildpack, Context, ProcessTypes};
use crate::sandbox::DEPS;
use crate::{StagingError, DROPLET_WASM};

/// The pinned componentize-js release.
const COMPONENTIZE_JS: &str = "0.23.0";
/// The WASI 0.2 release the StarlingMonkey runtime of that componentize-js is built
/// against: it exports `wasi:http/incoming-handler@0.2.10`.
const RUNTIME_WASI_PATCH: u32 = 10;
/// Where the tool is inside the sandbox.
const TOOL_MOUNT: &str = "/tmp/tools/componentize-js";
/// The system's trusted CAs (Debian's), which the sandbox sees read-only.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The script that runs componentize-js (`componentize-js.mjs`), as written into the
/// staging.
const DRIVER: &str = "componentize-js.mjs";
/// The entry modules looked for when `package.json` names none.
const ENTRIES: &[&str] = &["index.js", "app.js"];

/// The buildpack's name, as apps and builds list it.
pub const NAME: &str = "javascript_buildpack";

pub struct JavascriptBuildpack;

impl Buildpack for JavascriptBuildpack {
    fn name(&self) -> &str {
        NAME
    }

    fn detect(&self, ctx: &Context) -> Result<bool, StagingError> {
        if ctx.app_dir.join("package.json").is_file() {
            return Ok(true);
        }
        Ok(ENTRIES.iter().any(|entry| {
            std::fs::read_to_string(ctx.app_dir.join(entry))
                .is_ok_and(|source| handles_fetch(&source))
        }))
    }

    fn finalize(&self, ctx: &Context) -> Result<(), StagingError> {
        ctx.log("-----> JavaScript Buildpack");
        let entry = entry_module(ctx.app_dir)?;
        ctx.log(&format!("       Entry module: {entry}"));
        let toolchain = format!(
            "componentize-js {COMPONENTIZE_JS} {entry} wasi 0.2.{RUNTIME_WASI_PATCH}/{}",
            super::wit::WASI_PATCH
        );
        let digest = super::components::digest(ctx, &toolchain)?;
        if super::components::restore(ctx, &digest)? {
            ctx.log("       Reusing the component built from the same sources (buildpack cache)");
            return Ok(());
        }
        check_syntax(ctx, &entry)?;

        let tool =
            crate::tools::ensure(ctx, &format!("componentize-js-{COMPONENTIZE_JS}"), |dir| {
                let mut npm = ctx
                    .command("npm", "npm install of componentize-js")
                    .mount_rw(dir, TOOL_MOUNT)
                    .env("npm_config_update_notifier", "false");
                // Node trusts only the CAs it bundles; the cell's own (a TLS-inspecting
                // proxy's, say) are in the system's store, which the sandbox sees.
                if Path::new(SYSTEM_CA_BUNDLE).is_file() {
                    npm = npm.env("NODE_EXTRA_CA_CERTS", SYSTEM_CA_BUNDLE);
                }
                npm.args(["install", "--no-audit", "--no-fund", "--prefix", TOOL_MOUNT])
                    .arg(format!(
                        "@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"
                    ))
                    .run(ctx.log)
            })?;

        let wit = ctx.deps_dir().join("wit");
        let world = super::wit::write_proxy(&wit, RUNTIME_WASI_PATCH)?;
        ctx.log(&format!(
            "       Componentizing {entry} for {world} (componentize-js {COMPONENTIZE_JS})"
        ));
        let driver = ctx.deps_dir().join(DRIVER);
        std::fs::write(&driver, include_str!("componentize-js.mjs"))
            .map_err(|e| crate::io_error("writing", DRIVER, e))?;
        ctx.command("node", "componentize-js")
            .mount_ro(tool, TOOL_MOUNT)
            .arg(format!("{DEPS}/{}/{DRIVER}", ctx.index))
            .arg(format!(
                "{TOOL_MOUNT}/node_modules/@bytecodealliance/componentize-js/src/componentize.js"
            ))
            .arg(&entry)
            .arg(format!("{DEPS}/{}/wit", ctx.index))
            .args([world.as_str(), DROPLET_WASM])
            .run(ctx.log)?;
        super::components::save(ctx, &digest)
    }

    fn release(&self, _ctx: &Context) -> Result<ProcessTypes, StagingError> {
        Ok(ProcessTypes::from([(
            "web".to_string(),
            DROPLET_WASM.to_string(),
        )]))
    }
}

/// Whether `source` looks like a fetch-style handler module.
fn handles_fetch(source: &str) -> bool {
    (source.contains("addEventListener") && source.contains("fetch"))
        || source.contains("incomingHandler")
}

/// The app's entry module, relative to the app: `package.json`'s `main`, else the
/// first of [`ENTRIES`] there is.
fn entry_module(app_dir: &Path) -> Result<String, StagingError> {
    let manifest = app_dir.join("package.json");
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| crate::io_error("reading", "package.json", e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| StagingError::Staging(format!("package.json is not valid JSON: {e}")))?;
        if let Some(main) = json.get("main") {
            let main = main.as_str().ok_or_else(|| {
                StagingError::Staging("package.json: \"main\" is not a string".to_string())
            })?;
            let inside = Path::new(main)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside || !app_dir.join(main).is_file() {
                return Err(StagingError::Staging(format!(
                    "package.json: \"main\" ({main:?}) is not a file of the app"
                )));
            }
            return Ok(main.trim_start_matches("./").to_string());
        }
    }
    ENTRIES
        .iter()
        .find(|entry| app_dir.join(entry).is_file())
        .map(|entry| entry.to_string())
        .ok_or_else(|| {
            StagingError::Staging(
                "no entry module: package.json names no \"main\" and there is no index.js \
                 or app.js"
                    .to_string(),
            )
        })
}

/// Parses the entry module as an ES module with node (componentize-js only says that
/// parsing failed; node says where and why), from a copy beside a `package.json` that
/// makes `.js` an ES module.
fn check_syntax(ctx: &Context, entry: &str) -> Result<(), StagingError> {
    let copy = ctx.deps_dir().join("app");
    let target = copy.join(entry);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| crate::io_error("creating", "the syntax check's directory", e))?;
    }
    std::fs::copy(ctx.app_dir.join(entry), &target)
        .and_then(|_| std::fs::write(copy.join("package.json"), r#"{"type":"module"}"#))
        .map_err(|e| crate::io_error("copying", entry, e))?;
    let inside = format!("{DEPS}/{}/app/{entry}", ctx.index);
    let checked = ctx
        .command("node", format!("the syntax check of {entry}"))
        .args(["--check", &inside])
        .run(ctx.log);
    let _ = std::fs::remove_dir_all(&copy);
    checked.map_err(|_| StagingError::Staging(format!("{entry} is not a valid ES module")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_handlers_are_recognized() {
        assert!(handles_fetch(
            "addEventListener('fetch', e => e.respondWith(new Response('hi')));"
        ));
        assert!(handles_fetch(
            "export const incomingHandler = { handle() {} };"
        ));
        assert!(!handles_fetch("console.log('hello');"));
    }

    #[test]
    fn the_entry_is_main_or_index_or_app() {
        let dir = tempfile::tempdir().unwrap();
        assert!(entry_module(dir.path()).is_err());
        std::fs::write(dir.path().join("app.js"), "").unwrap();
        assert_eq!(entry_module(dir.path()).unwrap(), "app.js");
        std::fs::write(dir.path().join("index.js"), "").unwrap();
        assert_eq!(entry_module(dir.path()).unwrap(), "index.js");
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.js"), "").unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"main": "./src/main.js"}"#,
        )
        .unwrap();
        assert_eq!(entry_module(dir.path()).unwrap(), "src/main.js");
    }

    #[test]
    fn a_main_outside_the_app_or_missing_or_bad_json_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for manifest in [
            r#"{"main": "../etc/passwd"}"#,
            r#"{"main": "/etc/passwd"}"#,
            r#"{"main": "missing.js"}"#,
            r#"{"main": 3}"#,
            "{not json",
        ] {
            std::fs::write(dir.path().join("package.json"), manifest).unwrap();
            assert!(entry_module(dir.path()).is_err(), "{manifest}");
        }
    }
}
