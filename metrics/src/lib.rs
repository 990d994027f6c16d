//! Prometheus' text exposition format (version 0.0.4), written and merged: the one
//! writer every component's `/metrics` renders with ([`Exposition`]), and the merge of
//! several scraped expositions under extra labels ([`Merger`]) that the metrics
//! collector view uses. It owns the format only (HELP/TYPE lines, label escaping,
//! sample values); which metrics exist is each component's business.

use std::collections::HashMap;
use std::fmt::Write as _;

/// The `Content-Type` of an exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value, written as Prometheus reads it (`+Inf`, `-Inf`, `NaN`).
pub trait Value {
    fn write_to(&self, out: &mut String);
}

macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write_to(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_value!(u64, u32, usize, i64, i32);

impl Value for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// An exposition being written: families in the order they are started, each a
/// HELP and a TYPE line followed by its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts the family `name`: its HELP and TYPE lines. Samples follow with [`sample`].
    ///
    /// [`sample`]: Exposition::sample
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let _ = write!(self.out, "# HELP {name} ");
        escape_help(help, &mut self.out);
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample of the current family (`name` is the family's, or its `_bucket`,
    /// `_sum` or `_count` for a histogram).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) -> &mut Self {
        self.out.push_str(name);
        write_labels(labels.iter().copied(), &mut self.out);
        self.out.push(' ');
        value.write_to(&mut self.out);
        self.out.push('\n');
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Value) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_labels<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>, out: &mut String) {
    let mut first = true;
    for (name, value) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(value, out);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// Several expositions merged into one, each sample given extra labels (the collector's
/// `component` and `instance`). Families keep the order they were first seen in and
/// gather the samples of every source, so each family's HELP and TYPE appear once, as
/// the format requires.
#[derive(Debug, Default)]
pub struct Merger {
    families: Vec<MergedFamily>,
    by_name: HashMap<String, usize>,
}

#[derive(Debug)]
struct MergedFamily {
    name: String,
    help: Option<String>,
    kind: Option<String>,
    samples: String,
}

impl Merger {
    pub fn new() -> Merger {
        Merger::default()
    }

    /// Adds every sample of `text` with `labels` first in its label set. Lines that are
    /// neither comments nor well-formed samples are skipped; comments other than HELP and
    /// TYPE are dropped.
    pub fn add(&mut self, text: &str, labels: &[(&str, &str)]) {
        let mut prefix = String::new();
        write_labels(labels.iter().copied(), &mut prefix);
        // `{a="b"` without the closing brace, to prepend to a sample's own labels.
        let open = prefix.strip_suffix('}').unwrap_or(&prefix).to_string();
        let mut current: Option<usize> = None;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                let (Some(keyword), Some(name)) = (words.next(), words.next()) else {
                    continue;
                };
                let rest = words.next().unwrap_or("").to_string();
                let i = self.family_index(name);
                match keyword {
                    "HELP" => {
                        self.families[i].help.get_or_insert(rest);
                    }
                    "TYPE" => {
                        self.families[i].kind.get_or_insert(rest);
                    }
                    _ => continue,
                }
                current = Some(i);
                continue;
            }
            let Some((name, own_labels, value)) = split_sample(line) else {
                continue;
            };
            let i = match current {
                Some(i) if belongs_to(name, &self.families[i].name) => i,
                _ => {
                    let i = self.family_index(name);
                    current = Some(i);
                    i
                }
            };
            let samples = &mut self.families[i].samples;
            samples.push_str(name);
            match (open.is_empty(), own_labels) {
                (true, Some(own)) => {
                    let _ = write!(samples, "{{{own}}}");
                }
                (true, None) => {}
                (false, Some(own)) if !own.trim().is_empty() => {
                    let _ = write!(samples, "{open},{own}}}");
                }
                (false, _) => samples.push_str(&prefix),
            }
            samples.push(' ');
            samples.push_str(value);
            samples.push('\n');
        }
    }

    /// The merged exposition.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for family in self.families {
            if let Some(help) = &family.help {
                let _ = writeln!(out, "# HELP {} {help}", family.name);
            }
            if let Some(kind) = &family.kind {
                let _ = writeln!(out, "# TYPE {} {kind}", family.name);
            }
            out.push_str(&family.samples);
        }
        out
    }

    fn family_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.by_name.get(name) {
            return *i;
        }
        self.families.push(MergedFamily {
            name: name.to_string(),
            help: None,
            kind: None,
            samples: String::new(),
        });
        self.by_name
            .insert(name.to_string(), self.families.len() - 1);
        self.families.len() - 1
    }
}

/// Whether the sample `name` is one of `family`'s (a histogram's or summary's
/// `_bucket`, `_sum` and `_count` are).
fn belongs_to(name: &str, family: &str) -> bool {
    name == family
        || name
            .strip_prefix(family)
            .is_some_and(|suffix| matches!(suffix, "_bucket" | "_sum" | "_count"))
}

/// A sample line's name, the text inside its braces if any, and the value with its
/// optional timestamp; `None` if the line is malformed.
fn split_sample(line: &str) -> Option<(&str, Option<&str>, &str)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let rest = &line[name_end..];
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => {
            let close = closing_brace(inner)?;
            (Some(&inner[..close]), &inner[close + 1..])
        }
        None => (None, rest),
    };
    let value = rest.trim();
    if value.is_empty() {
        return None;
    }
    Some((name, labels, value))
}

/// The index of the `}` that ends a label set, skipping quoted values.
fn closing_brace(labels: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_escaped_labels() {
        let mut e = Exposition::new();
        e.family("wf_x_total", Kind::Counter, "Things\\done\nhere.")
            .sample("wf_x_total", &[("path", "a\"b\\c\nd"), ("k", "v")], 3u64)
            .sample("wf_x_total", &[], 4u64);
        e.single("wf_up", Kind::Gauge, "Up.", 1.5f64);
        e.single("wf_inf", Kind::Gauge, "Inf.", f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP wf_x_total Things\\\\done\\nhere.\n\
             # TYPE wf_x_total counter\n\
             wf_x_total{path=\"a\\\"b\\\\c\\nd\",k=\"v\"} 3\n\
             wf_x_total 4\n\
             # HELP wf_up Up.\n# TYPE wf_up gauge\nwf_up 1.5\n\
             # HELP wf_inf Inf.\n# TYPE wf_inf gauge\nwf_inf +Inf\n"
        );
    }

    #[test]
    fn merge_labels_every_sample_and_groups_families() {
        let a = "# HELP m_total M.\n# TYPE m_total counter\nm_total 1\n\
                 # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
        let b = "# HELP m_total M.\n# TYPE m_total counter\nm_total{x=\"}\\\"{\"} 7 1700000000\n\
                 garbage{unterminated 1\nbare_value\n";
        let mut m = Merger::new();
        m.add(a, &[("component", "bbs")]);
        m.add(b, &[("component", "rep"), ("instance", "c\"1")]);
        m.add("m_total 9\n", &[]);
        assert_eq!(
            m.finish(),
            "# HELP m_total M.\n# TYPE m_total counter\n\
             m_total{component=\"bbs\"} 1\n\
             m_total{component=\"rep\",instance=\"c\\\"1\",x=\"}\\\"{\"} 7 1700000000\n\
             m_total 9\n\
             # TYPE h histogram\n\
             h_bucket{component=\"bbs\",le=\"+Inf\"} 2\n\
             h_sum{component=\"bbs\"} 0.5\n\
             h_count{component=\"bbs\"} 2\n"
        );
    }
}
