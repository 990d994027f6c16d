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

/// Megabytes of a memory or disk size as typed on the command line: `256M`, `256MB`,
/// `1G`, `1GB`, or a bare number of megabytes.
pub fn parse_megabytes(input: &str) -> Result<u64, String> {
    let upper = input.trim().to_ascii_uppercase();
    let (digits, factor) =
        if let Some(n) = upper.strip_suffix("GB").or_else(|| upper.strip_suffix('G')) {
            (n, 1024)
        } else if let Some(n) = upper.strip_suffix("MB").or_else(|| upper.strip_suffix('M')) {
            (n, 1)
        } else {
            (upper.as_str(), 1)
        };
    match digits.trim().parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(factor)
            .ok_or_else(|| format!("Memory size '{input}' is too large.")),
        _ => Err(format!(
            "Invalid memory size '{input}': use a positive number with M or G, e.g. 256M or 1G."
        )),
    }
}

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

    #[test]
    fn parses_memory_sizes() {
        assert_eq!(parse_megabytes("256M"), Ok(256));
        assert_eq!(parse_megabytes("256mb"), Ok(256));
        assert_eq!(parse_megabytes("1G"), Ok(1024));
        assert_eq!(parse_megabytes("512"), Ok(512));
        assert!(parse_megabytes("0M").is_err());
        assert!(parse_megabytes("lots").is_err());
        assert!(parse_megabytes("-1G").is_err());
    }
}
