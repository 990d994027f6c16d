//! The site's config, written by the buildpack at staging as [`CONFIG_FILE`] in the
//! app's root and read by the server on every request: the Staticfile options and
//! every servable file with its ETag and whether a gzip copy sits beside it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The config's file name, at the top of the app's files (a dotfile: never served).
pub const CONFIG_FILE: &str = ".wf-static.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The directory served, relative to the app's files (`public`); empty for all of
    /// them (the Staticfile's `root`).
    #[serde(default)]
    pub root: String,
    /// A directory without `index.html` answers with a listing (`directory: visible`).
    #[serde(default)]
    pub directory_listing: bool,
    /// Paths that match no file serve the root's `index.html` (`pushstate: enabled`).
    #[serde(default)]
    pub pushstate: bool,
    /// Every file the server may serve, by its `/`-separated path under the root.
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// A digest of the content (hex), computed at staging: the ETag's value.
    pub etag: String,
    /// `<path>.gz` holds the content gzipped.
    #[serde(default)]
    pub gzip: bool,
}
