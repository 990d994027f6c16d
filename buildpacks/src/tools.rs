//! The cell's build tools: compilers and packagers that built-in buildpacks install
//! on first use (pinned versions, from the package registries) into the cell's tools
//! directory and reuse for every later staging. An install happens once per cell even
//! when stagings race: it runs under a lock, into a temporary directory that is renamed
//! into place only when it succeeded.

use std::path::{Path, PathBuf};

use crate::lifecycle::Context;
use crate::StagingError;

/// The directory of tool `name` (a name with its version, such as `ziglang-0.13.0`),
/// installed by `install` into the (host) directory it is given if not there yet.
pub fn ensure(
    ctx: &Context,
    name: &str,
    install: impl FnOnce(&Path) -> Result<(), StagingError>,
) -> Result<PathBuf, StagingError> {
    let dir = ctx.tools_dir.join(name);
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(ctx.tools_dir)
        .map_err(|e| crate::io_error("creating", "the tools directory", e))?;
    let lock = std::fs::File::create(ctx.tools_dir.join(format!("{name}.lock")))
        .map_err(|e| crate::io_error("locking", name, e))?;
    lock.lock()
        .map_err(|e| crate::io_error("locking", name, e))?;
    if dir.is_dir() {
        return Ok(dir);
    }
    ctx.log(&format!("       Installing {name} (once per cell)"));
    let partial = ctx.tools_dir.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| crate::io_error("creating", name, e))?;
    install(&partial)?;
    std::fs::rename(&partial, &dir).map_err(|e| crate::io_error("installing", name, e))?;
    Ok(dir)
}
