//! Content types by file extension, and which of them are worth compressing.

/// The `Content-Type` of a file named `path`: by its extension, case-insensitive;
/// `application/octet-stream` for anything else.
pub fn content_type(path: &str) -> &'static str {
    match extension(path).as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        Some("pdf") => "application/pdf",
        Some("xml") => "application/xml",
        _ => "application/octet-stream",
    }
}

/// Whether gzip usually shrinks files like `path` (text formats and wasm; images,
/// fonts and PDFs are compressed already).
pub fn compressible(path: &str) -> bool {
    matches!(
        extension(path).as_deref(),
        Some(
            "html"
                | "htm"
                | "css"
                | "js"
                | "mjs"
                | "json"
                | "map"
                | "svg"
                | "ico"
                | "wasm"
                | "txt"
                | "xml"
        )
    )
}

/// Files served with `Cache-Control: no-cache` (always revalidated with the ETag):
/// pages, whose URLs stay the same when the site changes. Other files may be cached
/// for an hour.
pub fn cache_control(path: &str) -> &'static str {
    match extension(path).as_deref() {
        Some("html" | "htm") => "no-cache",
        _ => "public, max-age=3600",
    }
}

fn extension(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/b/style.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("app.mjs"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("logo.svg"), "image/svg+xml");
        assert_eq!(content_type("photo.jpeg"), "image/jpeg");
        assert_eq!(content_type("font.woff2"), "font/woff2");
        assert_eq!(content_type("app.wasm"), "application/wasm");
        assert_eq!(content_type("Makefile"), "application/octet-stream");
        assert_eq!(content_type("dir.d/README"), "application/octet-stream");
        assert_eq!(content_type(".html"), "application/octet-stream");
    }

    #[test]
    fn text_is_compressible_and_images_are_not() {
        assert!(compressible("a.css"));
        assert!(compressible("sub/index.html"));
        assert!(!compressible("a.png"));
        assert!(!compressible("a.woff2"));
        assert_eq!(cache_control("index.html"), "no-cache");
        assert_eq!(cache_control("a.css"), "public, max-age=3600");
    }
}
