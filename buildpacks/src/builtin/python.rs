//! `python_buildpack`: a Python module defining componentize-py's `wasi:http` handler
//! (`class IncomingHandler(exports.IncomingHandler)` with `handle(self, request,
//! response_out)`) becomes a handler component, built by `componentize-py` (PyPI; the
//! CPython interpreter with the app and its pure-Python dependencies pre-initialized),
//! which it installs once per cell.

use std::path::Path;

use crate::lifecycle::{Buildpack, Context, ProcessTypes};
use crate::sandbox::{CACHE, DEPS};
use crate::{StagingError, DROPLET_WASM};

/// The pinned componentize-py release.
const COMPONENTIZE_PY: &str = "0.25.1";
/// The CPython release that componentize-py embeds, for which dependencies are chosen.
const EMBEDDED_PYTHON: &str = "3.14";
/// Where the tool is inside the sandbox.
const TOOL_MOUNT: &str = "/tmp/tools/componentize-py";
/// What marks the module that holds the handler.
const HANDLER_CLASS: &str = "class IncomingHandler";

/// The buildpack's name, as apps and builds list it.
pub const NAME: &str = "python_buildpack";

pub struct PythonBuildpack;

impl Buildpack for PythonBuildpack {
    fn name(&self) -> &str {
        NAME
    }

    fn detect(&self, ctx: &Context) -> Result<bool, StagingError> {
        Ok(handler_module(ctx.app_dir)?.is_some())
    }

    fn finalize(&self, ctx: &Context) -> Result<(), StagingError> {
        ctx.log("-----> Python Buildpack");
        let module = handler_module(ctx.app_dir)?.ok_or_else(|| {
            StagingError::Staging(format!(
                "no handler module: app.py, or a top-level .py next to requirements.txt, \
                 must define `{HANDLER_CLASS}(exports.IncomingHandler)`"
            ))
        })?;
        ctx.log(&format!("       Handler module: {module}"));
        let toolchain = format!(
            "componentize-py {COMPONENTIZE_PY} {module} wasi 0.2.{}",
            super::wit::WASI_PATCH
        );
        let digest = super::components::digest(ctx, &toolchain)?;
        if super::components::restore(ctx, &digest)? {
            ctx.log("       Reusing the component built from the same sources (buildpack cache)");
            return Ok(());
        }

        let tool =
            crate::tools::ensure(ctx, &format!("componentize-py-{COMPONENTIZE_PY}"), |dir| {
                ctx.command("python3", "pip install of componentize-py")
                    .mount_rw(dir, TOOL_MOUNT)
                    .args(pip_install(TOOL_MOUNT))
                    .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
                    .run(ctx.log)
            })?;

        let mut python_path = vec![".".to_string()];
        if has_requirements(ctx.app_dir)? {
            let packages = format!("{DEPS}/{}/site-packages", ctx.index);
            ctx.log("       Installing requirements.txt (pure-Python wheels)");
            ctx.command("python3", "pip install -r requirements.txt")
                .env("PIP_CACHE_DIR", format!("{CACHE}/pip"))
                .args(pip_install(&packages))
                .args([
                    "--only-binary=:all:",
                    "--platform",
                    "any",
                    "--implementation",
                    "py",
                ])
                .args([
                    "--python-version",
                    EMBEDDED_PYTHON,
                    "-r",
                    "requirements.txt",
                ])
                .run(ctx.log)?;
            python_path.push(packages);
        }

        let wit = ctx.deps_dir().join("wit");
        let world = super::wit::write_proxy(&wit, super::wit::WASI_PATCH)?;
        ctx.log(&format!(
            "       Componentizing {module} for {world} (componentize-py {COMPONENTIZE_PY})"
        ));
        let mut command = ctx
            .command("python3", "componentize-py")
            .mount_ro(tool, TOOL_MOUNT)
            .env("PYTHONPATH", TOOL_MOUNT)
            .arg(format!("{TOOL_MOUNT}/bin/componentize-py"))
            .arg("--wit-path")
            .arg(format!("{DEPS}/{}/wit", ctx.index))
            .args(["--world", &world, "componentize", &module]);
        for dir in &python_path {
            command = command.args(["--python-path", dir]);
        }
        command.args(["--output", DROPLET_WASM]).run(ctx.log)?;
        super::components::save(ctx, &digest)
    }

    fn release(&self, _ctx: &Context) -> Result<ProcessTypes, StagingError> {
        Ok(ProcessTypes::from([(
            "web".to_string(),
            DROPLET_WASM.to_string(),
        )]))
    }
}

/// `python3 -m pip install` into `target` (a sandbox path), quietly and without prompts.
fn pip_install(target: &str) -> [&str; 8] {
    [
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--target",
        target,
    ]
}

/// The module holding the handler: `app` when `app.py` defines it, else (with a
/// `requirements.txt`) the first top-level `.py` that does.
fn handler_module(app_dir: &Path) -> Result<Option<String>, StagingError> {
    let defines_handler =
        |path: &Path| std::fs::read_to_string(path).is_ok_and(|text| text.contains(HANDLER_CLASS));
    if defines_handler(&app_dir.join("app.py")) {
        return Ok(Some("app".to_string()));
    }
    if !app_dir.join("requirements.txt").is_file() {
        return Ok(None);
    }
    let entries =
        std::fs::read_dir(app_dir).map_err(|e| crate::io_error("listing", "the app", e))?;
    let mut modules: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| defines_handler(&entry.path()))
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            Some(name.strip_suffix(".py")?.to_string())
        })
        .collect();
    modules.sort();
    Ok(modules.into_iter().next())
}

/// Whether the app lists dependencies in `requirements.txt`.
fn has_requirements(app_dir: &Path) -> Result<bool, StagingError> {
    let path = app_dir.join("requirements.txt");
    if !path.is_file() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| crate::io_error("reading", "requirements.txt", e))?;
    Ok(text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDLER: &str = "class IncomingHandler(exports.IncomingHandler):\n    pass\n";

    #[test]
    fn app_py_with_a_handler_is_the_module() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(handler_module(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("app.py"), "print('not a handler')\n").unwrap();
        assert_eq!(handler_module(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("app.py"), HANDLER).unwrap();
        assert_eq!(handler_module(dir.path()).unwrap().as_deref(), Some("app"));
    }

    #[test]
    fn with_requirements_any_top_level_module_may_hold_the_handler() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.py"), HANDLER).unwrap();
        std::fs::write(dir.path().join("util.py"), "X = 1\n").unwrap();
        assert_eq!(handler_module(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("requirements.txt"), "# none yet\n").unwrap();
        assert_eq!(
            handler_module(dir.path()).unwrap().as_deref(),
            Some("server")
        );
        assert!(!has_requirements(dir.path()).unwrap());
        std::fs::write(dir.path().join("requirements.txt"), "six==1.16.0\n").unwrap();
        assert!(has_requirements(dir.path()).unwrap());
    }
}
