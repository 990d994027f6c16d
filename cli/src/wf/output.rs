//! cf-like terminal output: aligned tables and key/value blocks, byte sizes, and the
//! memory sizes users type (`256M`, `1G`).

/// Columns separated by three spaces, each as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(len),
                None => widths.push(len),
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 3));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `key:   value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| {
            let key = format!("{k}:");
            format!("{key:<width$}   {v}").trim_end().to_string() + "\n"
        })
        .collect()
}

/// A byte count the way the cf CLI shows it: `0`, `512K`, `12.3M`, `1G`.
pub fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            let value = format!("{:.1}", n as f64 / size as f64);
            let value = value.strip_suffix(".0").unwrap_or(&value);
            return format!("{value}{unit}");
        }
    }
    if n == 0 {
        "0".to_string()
    } else {
        format!("{n}B")
    }
}

/// Sizes as CF writes them (`256M`, `1G`), in MB: the manifest parser's rule.
pub use wf_controller::manifest::megabytes as parse_megabytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["name", "state"],
            &[
                vec!["hello".into(), "started".into()],
                vec!["a".into(), "stopped".into()],
            ],
        );
        assert_eq!(out, "name    state\nhello   started\na       stopped\n");
    }

    #[test]
    fn key_values_align_values() {
        let out = key_values(&[
            ("name", "hello".into()),
            ("requested state", "started".into()),
        ]);
        assert_eq!(
            out,
            "name:              hello\nrequested state:   started\n"
        );
    }

    #[test]
    fn formats_bytes_like_cf() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(256 << 20), "256M");
        assert_eq!(bytes((12 << 20) + (300 << 10)), "12.3M");
        assert_eq!(bytes(1 << 30), "1G");
    }
}
