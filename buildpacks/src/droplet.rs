//! The droplet format: a gzipped tar of `app.wasm`, the app's other files under
//! `app/`, and `droplet.json`; writing it after staging, checking one a user uploads,
//! and unpacking it on a cell.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::{DropletMetadata, StagingError, DROPLET_APP_DIR, DROPLET_METADATA, DROPLET_WASM};

/// The largest `app.wasm` a droplet may hold: a cell reads it whole to check and compile
/// it, and a sparse tar entry makes a huge one out of a few bytes.
pub const MAX_WASM_BYTES: u64 = 512 << 20;

/// Writes the droplet of the app in `app_dir` (whose wasm is `wasm_name`); returns its size.
pub fn write(
    droplet: &Path,
    app_dir: &Path,
    wasm_name: &str,
    metadata: &DropletMetadata,
) -> Result<u64, StagingError> {
    let fail = |e: std::io::Error| crate::io_error("writing", "the droplet", e);
    let file = File::create(droplet).map_err(fail)?;
    let mut tar = tar::Builder::new(GzEncoder::new(
        BufWriter::new(file),
        flate2::Compression::fast(),
    ));
    tar.follow_symlinks(false);
    tar.append_path_with_name(app_dir.join(wasm_name), DROPLET_WASM)
        .map_err(fail)?;
    append_dir(
        &mut tar,
        app_dir,
        Path::new(DROPLET_APP_DIR),
        Some(wasm_name),
    )
    .map_err(fail)?;
    let json = serde_json::to_vec_pretty(metadata)
        .map_err(|e| StagingError::Staging(format!("encoding droplet.json: {e}")))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, DROPLET_METADATA, json.as_slice())
        .map_err(fail)?;
    let gz = tar.into_inner().map_err(fail)?;
    let writer = gz.finish().map_err(fail)?;
    writer
        .into_inner()
        .map_err(|e| fail(e.into_error()))?
        .sync_all()
        .map_err(fail)?;
    Ok(std::fs::metadata(droplet).map_err(fail)?.len())
}

/// Adds the regular files and directories under `dir` as `prefix/...`, leaving out
/// `skip` at the top level (the wasm, stored once as `app.wasm`).
fn append_dir<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    skip: Option<&str>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if skip.is_some_and(|s| name == s) {
            continue;
        }
        let kind = entry.file_type()?;
        let inner = prefix.join(&name);
        if kind.is_dir() {
            tar.append_dir(&inner, entry.path())?;
            append_dir(tar, &entry.path(), &inner, None)?;
        } else if kind.is_file() {
            tar.append_path_with_name(entry.path(), &inner)?;
        }
    }
    Ok(())
}

/// Unpacks `droplet` into `dest` and returns its metadata, checking that it holds
/// only files and directories inside `dest` and that `app.wasm` matches its sha256.
pub fn unpack(droplet: &Path, dest: &Path) -> Result<DropletMetadata, StagingError> {
    let invalid = |what: String| StagingError::InvalidPackage(format!("invalid droplet: {what}"));
    unpack_tgz(droplet, dest).map_err(invalid)?;
    let json = std::fs::read(dest.join(DROPLET_METADATA))
        .map_err(|e| invalid(format!("{DROPLET_METADATA}: {e}")))?;
    let metadata: DropletMetadata =
        serde_json::from_slice(&json).map_err(|e| invalid(format!("{DROPLET_METADATA}: {e}")))?;
    if metadata.wasm != DROPLET_WASM {
        return Err(invalid(format!(
            "its wasm is {:?}, not {DROPLET_WASM}",
            metadata.wasm
        )));
    }
    let wasm_error = |e: std::io::Error| invalid(format!("{}: {e}", metadata.wasm));
    let mut wasm = File::open(dest.join(DROPLET_WASM)).map_err(wasm_error)?;
    if wasm.metadata().map_err(wasm_error)?.len() > MAX_WASM_BYTES {
        return Err(invalid(format!(
            "{DROPLET_WASM} is larger than {MAX_WASM_BYTES} bytes"
        )));
    }
    let mut hasher = Sha256::new();
    std::io::copy(&mut wasm, &mut hasher).map_err(wasm_error)?;
    if hex::encode(hasher.finalize()) != metadata.wasm_sha256 {
        return Err(invalid(format!(
            "{} does not match its sha256",
            metadata.wasm
        )));
    }
    Ok(metadata)
}

/// Checks the droplet `tgz` without unpacking it, as a cell would unpack it: only files
/// and directories at relative paths, at most `max_unpacked_bytes` in all, a
/// `droplet.json` naming `app.wasm` with that wasm's sha256; returns its metadata.
pub fn inspect(tgz: &Path, max_unpacked_bytes: u64) -> Result<DropletMetadata, StagingError> {
    let invalid = |what: String| StagingError::InvalidPackage(format!("invalid droplet: {what}"));
    let file = File::open(tgz).map_err(|e| invalid(e.to_string()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(std::io::BufReader::new(file)));
    let (mut metadata, mut wasm_sha256, mut unpacked) = (None, None, 0u64);
    for entry in archive.entries().map_err(|e| invalid(e.to_string()))? {
        let mut entry = entry.map_err(|e| invalid(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| invalid(e.to_string()))?
            .into_owned();
        check_entry(&entry, &path).map_err(invalid)?;
        unpacked = unpacked.saturating_add(entry.size());
        if unpacked > max_unpacked_bytes {
            return Err(invalid(format!(
                "it unpacks to more than {max_unpacked_bytes} bytes"
            )));
        }
        let name: std::path::PathBuf = path
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        if name == Path::new(DROPLET_METADATA) {
            let mut json = Vec::new();
            entry
                .read_to_end(&mut json)
                .map_err(|e| invalid(format!("{DROPLET_METADATA}: {e}")))?;
            let parsed: DropletMetadata = serde_json::from_slice(&json)
                .map_err(|e| invalid(format!("{DROPLET_METADATA}: {e}")))?;
            metadata = Some(parsed);
        } else if name == Path::new(DROPLET_WASM) {
            if entry.size() > MAX_WASM_BYTES {
                return Err(invalid(format!(
                    "{DROPLET_WASM} is larger than {MAX_WASM_BYTES} bytes"
                )));
            }
            let mut hasher = Sha256::new();
            std::io::copy(&mut entry, &mut hasher)
                .map_err(|e| invalid(format!("{DROPLET_WASM}: {e}")))?;
            wasm_sha256 = Some(hex::encode(hasher.finalize()));
        }
    }
    let metadata = metadata.ok_or_else(|| invalid(format!("it has no {DROPLET_METADATA}")))?;
    if metadata.wasm != DROPLET_WASM {
        return Err(invalid(format!(
            "its wasm is {:?}, not {DROPLET_WASM}",
            metadata.wasm
        )));
    }
    match wasm_sha256 {
        None => Err(invalid(format!("it has no {DROPLET_WASM}"))),
        Some(sha256) if sha256 != metadata.wasm_sha256 => {
            Err(invalid(format!("{DROPLET_WASM} does not match its sha256")))
        }
        Some(_) => Ok(metadata),
    }
}

/// Refuses an archive entry that is neither a file nor a directory, or whose path is
/// absolute or climbs out with `..`.
fn check_entry<R: Read>(entry: &tar::Entry<R>, path: &Path) -> Result<(), String> {
    let kind = entry.header().entry_type();
    // The tar builder stores files with holes (linkers write some) as GNU sparse
    // entries, which unpack to regular files.
    if !(kind.is_file() || kind.is_gnu_sparse() || kind.is_dir()) {
        return Err(format!(
            "entry {:?} is neither a file nor a directory",
            path.display().to_string()
        ));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err("an entry points outside the archive's directory".to_string());
    }
    Ok(())
}

/// Unpacks the gzipped tar `tgz` into `dest` (created), refusing anything but files and
/// directories inside `dest`; the error says why.
fn unpack_tgz(tgz: &Path, dest: &Path) -> Result<(), String> {
    let file = File::open(tgz).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(std::io::BufReader::new(file)));
    archive.set_preserve_permissions(false);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        check_entry(&entry, &path)?;
        // `unpack_in` refuses entries that would land outside `dest` too.
        if !entry.unpack_in(dest).map_err(|e| e.to_string())? {
            return Err("an entry points outside the archive's directory".to_string());
        }
    }
    Ok(())
}

/// Packs the files and directories under `dir` into the gzipped tar `tgz` (an app's
/// buildpack cache); returns its size.
pub fn pack_cache(dir: &Path, tgz: &Path) -> std::io::Result<u64> {
    let file = File::create(tgz)?;
    let mut tar = tar::Builder::new(GzEncoder::new(
        BufWriter::new(file),
        flate2::Compression::fast(),
    ));
    tar.follow_symlinks(false);
    append_dir(&mut tar, dir, Path::new(""), None)?;
    tar.into_inner()?
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(std::fs::metadata(tgz)?.len())
}

/// Unpacks a tgz written by [`pack_cache`] into `dir`.
pub fn unpack_cache(tgz: &Path, dir: &Path) -> Result<(), StagingError> {
    unpack_tgz(tgz, dir).map_err(|e| StagingError::Staging(format!("invalid buildpack cache: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found from the `droplet_tgz` fuzz target's sparse seed: a 266-byte droplet whose
    /// `app.wasm` is a GNU sparse entry of 3 GiB passed the controller's check (under
    /// its 4 GiB bound) and made a cell read 3 GiB into memory. Both now refuse it
    /// without reading it.
    #[test]
    fn a_droplet_with_a_huge_sparse_wasm_is_refused() {
        let real_size: u64 = 3 << 30;
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNUSparse);
        header.set_path(DROPLET_WASM).unwrap();
        header.set_mode(0o644);
        header.set_size(512);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(real_size - 512);
        gnu.sparse[0].set_length(512);
        gnu.set_real_size(real_size);
        header.set_cksum();
        tar.append(&header, &[1u8; 512][..]).unwrap();
        let json = serde_json::to_vec(&DropletMetadata {
            kind: crate::AppKind::Server,
            wasm: DROPLET_WASM.into(),
            wasm_sha256: "0".repeat(64),
            buildpack: "wasm_buildpack".into(),
            buildpacks: Vec::new(),
            process_types: Default::default(),
        })
        .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, DROPLET_METADATA, &json[..])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("droplet.tgz");
        let mut gz = GzEncoder::new(File::create(&tgz).unwrap(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        gz.finish().unwrap();

        let err = inspect(&tgz, 4 << 30).unwrap_err().to_string();
        assert!(err.contains("app.wasm is larger than"), "{err}");
        let err = unpack(&tgz, &dir.path().join("out"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("app.wasm is larger than"), "{err}");
    }

    #[test]
    fn a_cache_with_sparse_files_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(cache.join("target")).unwrap();
        // A file with a hole, as lld leaves some shared objects.
        let sparse = cache.join("target/libmacro.so");
        let file = File::create(&sparse).unwrap();
        file.set_len(1 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&file, b"end", (1 << 20) - 3).unwrap();
        drop(file);
        let tgz = dir.path().join("cache.tgz");
        pack_cache(&cache, &tgz).unwrap();
        let restored = dir.path().join("restored");
        unpack_cache(&tgz, &restored).unwrap();
        let bytes = std::fs::read(restored.join("target/libmacro.so")).unwrap();
        assert_eq!(bytes.len(), 1 << 20);
        assert!(bytes.ends_with(b"end") && bytes[..1000].iter().all(|b| *b == 0));
    }
}
