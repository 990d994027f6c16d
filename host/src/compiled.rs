//! The cell's cache of compiled apps on disk: each droplet's wasm (a component, or a
//! core module for WASI preview1 apps) is compiled once per engine configuration and
//! kept as `<dir>/<compatibility hash>/<wasm sha256>.cwasm`,
//! so a second instance, a restarted cell or a scaled-to-zero handler app maps machine
//! code from the page cache instead of compiling again.
//!
//! The directory name is [`Engine::precompile_compatibility_hash`]: an artifact is only
//! ever loaded by an engine whose settings (and wasmtime version) produced it, and a
//! change of settings simply misses. Only this cell writes there, from its own
//! compilations, which is what makes loading the files (an `unsafe` operation) sound.
//! The calls here block (compilation, file I/O): run them on a blocking thread.

use std::hash::{Hash as _, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module, Precompiled};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Compile(String),
}

/// A compiled app.
#[derive(Clone)]
pub enum Compiled {
    Component(Component),
    /// A core module: a WASI preview1 app.
    Module(Module),
}

impl Compiled {
    /// Compiles `bytes` (binary wasm, or text for a component) as what they are.
    fn precompile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        if is_core_module(bytes) {
            engine.precompile_module(bytes)
        } else {
            engine.precompile_component(bytes)
        }
    }

    /// # Safety
    /// As [`Component::deserialize`]: `artifact` must come from `precompile` of an
    /// engine with `engine`'s settings.
    unsafe fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Compiled> {
        Ok(match Engine::detect_precompiled(artifact) {
            Some(Precompiled::Module) => Compiled::Module(Module::deserialize(engine, artifact)?),
            _ => Compiled::Component(Component::deserialize(engine, artifact)?),
        })
    }

    /// # Safety
    /// As [`Component::deserialize_file`]: the file must be an artifact this cell
    /// wrote from `precompile` of an engine with `engine`'s settings.
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> wasmtime::Result<Compiled> {
        Ok(match Engine::detect_precompiled_file(path)? {
            Some(Precompiled::Module) => Compiled::Module(Module::deserialize_file(engine, path)?),
            _ => Compiled::Component(Component::deserialize_file(engine, path)?),
        })
    }
}

/// Whether `bytes` are a binary core module: wasm's header with version 1 (a
/// component's header carries its layer and version 0x0d there).
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm") && bytes.get(4..8) == Some(&[1, 0, 0, 0])
}

/// Where a compiled app came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Mapped from an artifact this cell compiled earlier.
    Cached,
    /// Compiled now (and stored, if the cache directory is writable).
    Compiled,
}

/// Compiled artifacts of one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    /// `<root>/<compatibility hash>`.
    dir: PathBuf,
}

impl ArtifactCache {
    /// The cache of `engine`'s artifacts under `root`.
    pub fn new(root: &Path, engine: &Engine) -> ArtifactCache {
        ArtifactCache {
            dir: root.join(compatibility_hash(engine)),
        }
    }

    /// The directory of this engine's artifacts.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact of the wasm with hex `sha256` lives; `None` if `sha256` is
    /// not a hex sha256 (it never becomes a path then).
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        is_sha256(sha256).then(|| self.dir.join(format!("{sha256}.cwasm")))
    }

    /// The compiled `wasm` (whose hex sha256 is `sha256`): mapped from its artifact
    /// if there is one, otherwise compiled and stored (atomically) for next time. A
    /// cache that cannot be written only costs the next compilation, so write errors
    /// are logged, not returned.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &Path,
    ) -> Result<(Compiled, Origin), CompileError> {
        let Some(path) = self.path(sha256) else {
            return compile(engine, wasm).map(|c| (c, Origin::Compiled));
        };
        if path.is_file() {
            // SAFETY: `deserialize_file` trusts the file to be a wasmtime artifact for
            // this engine. Files under `self.dir` are written only by `store` below
            // from `Engine::precompile_component` of this cell, renamed into place only
            // once complete, and keyed by the engine's compatibility hash; the
            // directory lives in the cell's private data dir, which apps cannot reach
            // (they see only their own preopened directories).
            match unsafe { Compiled::deserialize_file(engine, &path) } {
                Ok(compiled) => return Ok((compiled, Origin::Cached)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                        "compiled artifact unusable; compiling again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let bytes = std::fs::read(wasm).map_err(|source| CompileError::Read {
            path: wasm.to_path_buf(),
            source,
        })?;
        let artifact = Compiled::precompile(engine, &bytes)
            .map_err(|e| CompileError::Compile(format!("{e:#}")))?;
        match self.store(&path, &artifact) {
            // SAFETY: as above; the file was just written from `artifact`.
            Ok(()) => match unsafe { Compiled::deserialize_file(engine, &path) } {
                Ok(compiled) => return Ok((compiled, Origin::Compiled)),
                Err(e) => tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                    "loading a freshly written artifact failed"),
            },
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "storing the compiled artifact failed"),
        }
        // SAFETY: `artifact` comes from `precompile` on this very engine.
        let compiled = unsafe { Compiled::deserialize(engine, &artifact) }
            .map_err(|e| CompileError::Compile(format!("{e:#}")))?;
        Ok((compiled, Origin::Compiled))
    }

    /// Writes `artifact` to `path` through a temporary file and a rename, so that
    /// readers never see half an artifact.
    fn store(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".cwasm-")
            .tempfile_in(&self.dir)?;
        tmp.write_all(artifact)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Compiles `wasm` without storing it.
pub fn compile(engine: &Engine, wasm: &Path) -> Result<Compiled, CompileError> {
    let bytes = std::fs::read(wasm).map_err(|source| CompileError::Read {
        path: wasm.to_path_buf(),
        source,
    })?;
    let compiled = if is_core_module(&bytes) {
        Module::new(engine, &bytes).map(Compiled::Module)
    } else {
        Component::new(engine, &bytes).map(Compiled::Component)
    };
    compiled.map_err(|e| CompileError::Compile(format!("{e:#}")))
}

/// [`Engine::precompile_compatibility_hash`] as 32 hex digits (sha256-based, so stable
/// across runs and Rust versions, unlike `DefaultHasher`).
pub fn compatibility_hash(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Feeds a [`Hash`](std::hash::Hash) into sha256.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(component (core module (func (export "f"))))"#;

    fn engine(epochs: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(epochs);
        Engine::new(&config).unwrap()
    }

    /// A component on disk and its sha256.
    fn wasm_file(dir: &Path) -> (PathBuf, String) {
        // The engine's `wat` feature compiles the text format too.
        let path = dir.join("app.wasm");
        std::fs::write(&path, WAT).unwrap();
        (path, hex::encode(Sha256::digest(WAT)))
    }

    #[test]
    fn the_second_load_maps_the_stored_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, sha) = wasm_file(dir.path());
        let engine = engine(true);
        let root = dir.path().join("compiled");

        let cache = ArtifactCache::new(&root, &engine);
        let (_, origin) = cache.load_or_compile(&engine, &sha, &wasm).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let artifact = cache.path(&sha).unwrap();
        assert!(artifact.is_file());
        assert_eq!(
            artifact.parent().unwrap(),
            root.join(compatibility_hash(&engine))
        );
        // Only the artifact is left: the temporary file was renamed into place.
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 1);

        // A new cache (a restarted cell) finds it, even with the wasm gone.
        std::fs::remove_file(&wasm).unwrap();
        let again = ArtifactCache::new(&root, &engine);
        let (_, origin) = again.load_or_compile(&engine, &sha, &wasm).unwrap();
        assert_eq!(origin, Origin::Cached);
    }

    #[test]
    fn a_changed_compatibility_hash_misses() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, sha) = wasm_file(dir.path());
        let root = dir.path().join("compiled");
        let (with_epochs, without) = (engine(true), engine(false));
        assert_ne!(
            compatibility_hash(&with_epochs),
            compatibility_hash(&without)
        );
        assert_eq!(
            compatibility_hash(&with_epochs),
            compatibility_hash(&engine(true))
        );

        let first = ArtifactCache::new(&root, &with_epochs);
        first.load_or_compile(&with_epochs, &sha, &wasm).unwrap();
        let other = ArtifactCache::new(&root, &without);
        let (_, origin) = other.load_or_compile(&without, &sha, &wasm).unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert_ne!(first.path(&sha), other.path(&sha));
    }

    #[test]
    fn a_corrupt_artifact_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, sha) = wasm_file(dir.path());
        let engine = engine(true);
        let cache = ArtifactCache::new(&dir.path().join("compiled"), &engine);
        std::fs::create_dir_all(cache.dir()).unwrap();
        std::fs::write(cache.path(&sha).unwrap(), b"not an artifact").unwrap();
        let (_, origin) = cache.load_or_compile(&engine, &sha, &wasm).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let (_, origin) = cache.load_or_compile(&engine, &sha, &wasm).unwrap();
        assert_eq!(origin, Origin::Cached);
    }

    #[test]
    fn core_modules_are_compiled_and_cached_as_modules() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(true);
        // `(module (func (export "_start")))` in the binary format.
        let module: &[u8] = &[
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header, version 1
            0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
            0x03, 0x02, 0x01, 0x00, // function 0 of type 0
            0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // export
            0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: an empty body
        ];
        assert!(is_core_module(module));
        let path = dir.path().join("app.wasm");
        std::fs::write(&path, module).unwrap();
        let sha = hex::encode(Sha256::digest(module));
        let cache = ArtifactCache::new(&dir.path().join("compiled"), &engine);
        for expected in [Origin::Compiled, Origin::Cached] {
            let (compiled, origin) = cache.load_or_compile(&engine, &sha, &path).unwrap();
            assert_eq!(origin, expected);
            assert!(matches!(compiled, Compiled::Module(_)));
        }
        assert!(matches!(compile(&engine, &path), Ok(Compiled::Module(_))));
    }

    #[test]
    fn keys_that_are_not_sha256_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, _) = wasm_file(dir.path());
        let engine = engine(true);
        let cache = ArtifactCache::new(&dir.path().join("compiled"), &engine);
        assert_eq!(cache.path("../../etc/passwd"), None);
        let (_, origin) = cache.load_or_compile(&engine, "../x", &wasm).unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert!(!cache.dir().exists());
    }
}
