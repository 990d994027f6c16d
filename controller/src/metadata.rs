//! Metadata: the labels and annotations of V3 resources (CF's `metadata` object). This
//! module owns their validation (CF's rules and messages), their storage (the
//! `resource_metadata` table, rows keyed by resource type and guid), how resources show
//! them, and the `label_selector` grammar; the SQL of a selector is
//! [`Filter::label_selector`](crate::db::Filter::label_selector).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sqlx::any::AnyRow;

use crate::db::{Arg, Db, Filter, Record};
use crate::error::ApiError;

/// Longest key name and label value (CF's `MAX_METADATA_KEY_SIZE`, `MAX_LABEL_VALUE_SIZE`).
const MAX_NAME: usize = 63;
/// Longest key prefix, a DNS subdomain.
const MAX_PREFIX: usize = 253;
/// Longest annotation value.
const MAX_ANNOTATION_VALUE: usize = 5000;
/// The prefix Cloud Foundry keeps for itself.
const RESERVED_PREFIX: &str = "cloudfoundry.org";

/// Labels (selectable) or annotations (not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Label,
    Annotation,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Label => "label",
            Kind::Annotation => "annotation",
        }
    }
}

/// A metadata key: `[prefix/]name`; no prefix is the empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub prefix: String,
    pub name: String,
}

impl Key {
    /// Splits and checks a key; the error is CF's (`key cannot be empty string`, ...).
    pub fn parse(key: &str) -> Result<Key, String> {
        if key.is_empty() {
            return Err("key cannot be empty string".into());
        }
        let (prefix, name) = match key.split_once('/') {
            Some(_) if key.matches('/').count() > 1 => {
                return Err("key has more than one '/'".into())
            }
            Some((prefix, name)) => (prefix, name),
            None => ("", key),
        };
        if key.contains('/') {
            if !is_dns_name(prefix) {
                return Err(format!("prefix '{prefix}' must be in valid dns format"));
            }
            if prefix.len() > MAX_PREFIX {
                return Err(format!(
                    "prefix '{}...' is greater than {MAX_PREFIX} characters",
                    head(prefix)
                ));
            }
            if prefix.eq_ignore_ascii_case(RESERVED_PREFIX) {
                return Err(format!("prefix '{RESERVED_PREFIX}' is reserved"));
            }
        }
        if name.is_empty() {
            return Err("key cannot be empty string".into());
        }
        check_word(name)?;
        Ok(Key {
            prefix: prefix.to_string(),
            name: name.to_string(),
        })
    }

    /// The key as clients write it.
    pub fn full(&self) -> String {
        if self.prefix.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.prefix, self.name)
        }
    }
}

/// Checks a label value (empty is allowed); the error is CF's.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        check_word(value)
    }
}

/// A key name or label value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn check_word(word: &str) -> Result<(), String> {
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("'{word}' contains invalid characters"));
    }
    if !alphanumeric(word.chars().next()) || !alphanumeric(word.chars().last()) {
        return Err(format!("'{word}' starts or ends with invalid characters"));
    }
    if word.len() > MAX_NAME {
        return Err(format!(
            "'{}...' is greater than {MAX_NAME} characters",
            head(word)
        ));
    }
    Ok(())
}

/// DNS format: dot-separated labels of `[A-Za-z0-9-]`, alphanumeric at both ends, at
/// most 63 characters each.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The first 8 characters, as CF quotes long keys and values.
fn head(s: &str) -> String {
    s.chars().take(8).collect()
}

/// What a create or update body asks for: keys to set, and keys to delete (`null`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataUpdate {
    changes: Vec<(Kind, Key, Option<String>)>,
}

impl MetadataUpdate {
    /// The `metadata` of a request body, checked as CF does: every problem is reported,
    /// joined, in one CF-UnprocessableEntity (`Metadata label key error: ...`).
    pub fn parse(metadata: Option<&Value>) -> Result<MetadataUpdate, ApiError> {
        let Some(metadata) = metadata.filter(|m| !m.is_null()) else {
            return Ok(MetadataUpdate::default());
        };
        let Some(object) = metadata.as_object() else {
            return Err(ApiError::unprocessable("Metadata must be an object"));
        };
        let mut errors = Vec::new();
        let unexpected: Vec<String> = object
            .keys()
            .filter(|k| *k != "labels" && *k != "annotations")
            .map(|k| format!("'{k}'"))
            .collect();
        if !unexpected.is_empty() {
            errors.push(format!(
                "Metadata has unexpected field(s): {}",
                unexpected.join(" ")
            ));
        }
        let mut changes = Vec::new();
        for kind in [Kind::Label, Kind::Annotation] {
            let field = format!("{}s", kind.as_str());
            let entries = match object.get(&field) {
                None | Some(Value::Null) => continue,
                Some(Value::Object(entries)) => entries,
                Some(_) => {
                    errors.push(format!("Metadata '{field}' is not an object"));
                    continue;
                }
            };
            for (key, value) in entries {
                let value = match value {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => {
                        errors.push(format!(
                            "Metadata {} value error: '{key}' must be a string or null",
                            kind.as_str()
                        ));
                        continue;
                    }
                };
                match check_entry(kind, key, value.as_deref()) {
                    Ok(parsed) => changes.push((kind, parsed, value)),
                    // CF checks an annotation's key only when it sets one: deleting a
                    // key that cannot exist changes nothing.
                    Err(_) if kind == Kind::Annotation && value.is_none() => {}
                    Err(mut problems) => errors.append(&mut problems),
                }
            }
        }
        if errors.is_empty() {
            Ok(MetadataUpdate { changes })
        } else {
            Err(ApiError::unprocessable(errors.join(", ")))
        }
    }

    /// Applies the update to resource `guid` of `resource_type` (its table): keys merge
    /// into what it has, `null` deletes one.
    pub async fn apply(&self, db: &Db, resource_type: &str, guid: &str) -> Result<(), sqlx::Error> {
        // One statement a key, so that concurrent updates of a key never collide.
        let upsert = format!(
            "INSERT INTO {} (resource_type, resource_guid, kind, key_prefix, key_name, value) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT \
             (resource_type, resource_guid, kind, key_prefix, key_name) \
             DO UPDATE SET value = excluded.value",
            MetadataEntry::TABLE
        );
        for (kind, key, value) in &self.changes {
            match value {
                Some(value) => {
                    let args = vec![
                        resource_type.into(),
                        guid.into(),
                        kind.as_str().into(),
                        key.prefix.as_str().into(),
                        key.name.as_str().into(),
                        value.into(),
                    ];
                    db.exec(&upsert, args).await?;
                }
                None => {
                    let row = Filter::new()
                        .eq("resource_type", resource_type)
                        .eq("resource_guid", guid)
                        .eq("kind", kind.as_str())
                        .eq("key_prefix", &key.prefix)
                        .eq("key_name", &key.name);
                    db.delete_where(MetadataEntry::TABLE, row).await?;
                }
            }
        }
        Ok(())
    }
}

/// Checks one key and value; every problem, in CF's words.
fn check_entry(kind: Kind, key: &str, value: Option<&str>) -> Result<Key, Vec<String>> {
    let what = kind.as_str();
    let mut errors = Vec::new();
    let parsed = Key::parse(key).map_err(|e| format!("Metadata {what} key error: {e}"));
    let value_error = match (kind, value) {
        (_, None) => None,
        (Kind::Label, Some(value)) => check_label_value(value).err(),
        (Kind::Annotation, Some(value)) => {
            (value.chars().count() > MAX_ANNOTATION_VALUE).then(|| {
                format!(
                    "'{}...' is greater than {MAX_ANNOTATION_VALUE} characters",
                    head(value)
                )
            })
        }
    };
    if let Err(e) = &parsed {
        errors.push(e.clone());
    }
    if let Some(e) = value_error {
        errors.push(format!("Metadata {what} value error: {e}"));
    }
    match parsed {
        Ok(key) if errors.is_empty() => Ok(key),
        _ => Err(errors),
    }
}

/// One stored label or annotation.
#[derive(Debug, Clone)]
pub struct MetadataEntry {
    resource_guid: String,
    kind: Kind,
    key: Key,
    value: String,
}

impl Record for MetadataEntry {
    const TABLE: &'static str = "resource_metadata";
    const COLUMNS: &'static str = "resource_guid, kind, key_prefix, key_name, value";
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row as _;
        Ok(MetadataEntry {
            resource_guid: row.try_get("resource_guid")?,
            kind: match row.try_get::<String, _>("kind")?.as_str() {
                "label" => Kind::Label,
                "annotation" => Kind::Annotation,
                other => {
                    return Err(sqlx::Error::ColumnDecode {
                        index: "kind".into(),
                        source: format!("unknown metadata kind {other:?}").into(),
                    })
                }
            },
            key: Key {
                prefix: row.try_get("key_prefix")?,
                name: row.try_get("key_name")?,
            },
            value: row.try_get("value")?,
        })
    }
}

/// Sets the `metadata` of each presented resource of `resource_type` (by its `guid`)
/// to its labels and annotations, read in one query for them all.
pub async fn fill(
    db: &Db,
    resource_type: &str,
    resources: &mut [Value],
) -> Result<(), sqlx::Error> {
    let guids: Vec<String> = resources
        .iter()
        .filter_map(|r| r["guid"].as_str().map(str::to_string))
        .collect();
    if guids.is_empty() {
        return Ok(());
    }
    let filter = Filter::new()
        .eq("resource_type", resource_type)
        .any_of("resource_guid", &guids);
    let mut by_guid: BTreeMap<String, (Map<String, Value>, Map<String, Value>)> = BTreeMap::new();
    for entry in db.select::<MetadataEntry>(filter).await? {
        let (labels, annotations) = by_guid.entry(entry.resource_guid).or_default();
        let map = match entry.kind {
            Kind::Label => labels,
            Kind::Annotation => annotations,
        };
        map.insert(entry.key.full(), Value::String(entry.value));
    }
    for resource in resources {
        let (labels, annotations) = resource["guid"]
            .as_str()
            .and_then(|guid| by_guid.remove(guid))
            .unwrap_or_default();
        resource["metadata"] = serde_json::json!({"labels": labels, "annotations": annotations});
    }
    Ok(())
}

/// [`fill`] for one resource.
pub async fn filled(
    db: &Db,
    resource_type: &str,
    mut resource: Value,
) -> Result<Value, sqlx::Error> {
    fill(db, resource_type, std::slice::from_mut(&mut resource)).await?;
    Ok(resource)
}

/// The `{labels, annotations}` of one resource, leaving out an empty half; `None`
/// when it has neither.
pub async fn of(db: &Db, resource_type: &str, guid: &str) -> Result<Option<Value>, sqlx::Error> {
    let mut shown = filled(db, resource_type, serde_json::json!({"guid": guid})).await?;
    let mut metadata = shown["metadata"].take();
    if let Some(halves) = metadata.as_object_mut() {
        halves.retain(|_, entries| entries.as_object().is_some_and(|e| !e.is_empty()));
    }
    Ok(metadata
        .as_object()
        .is_some_and(|m| !m.is_empty())
        .then_some(metadata))
}

/// A `label_selector` requirement: a label key and what its value must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: Key,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `key=value`, `key==value`, `key in (a,b)`: the key has one of the values.
    In(Vec<String>),
    /// `key!=value`, `key notin (a,b)`: the key is missing or has none of them.
    NotIn(Vec<String>),
    /// `key`.
    Exists,
    /// `!key`.
    NotExists,
}

const INVALID_SELECTOR: &str = "Invalid label_selector value";

/// Parses a `label_selector` (requirements joined by commas, all of which must hold);
/// the error is the CF-BadQueryParameter detail.
pub fn parse_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    if selector.trim().is_empty() {
        return Err("Missing label_selector value".into());
    }
    split_requirements(selector)?
        .into_iter()
        .map(parse_requirement)
        .collect()
}

/// Splits at the commas outside parentheses.
fn split_requirements(selector: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            ')' if depth == 1 => depth = 0,
            '(' | ')' => return Err(INVALID_SELECTOR.into()),
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(INVALID_SELECTOR.into());
    }
    parts.push(&selector[start..]);
    Ok(parts)
}

fn parse_requirement(text: &str) -> Result<Requirement, String> {
    let text = text.trim();
    let invalid = || INVALID_SELECTOR.to_string();
    let (key, op) = if let Some(key) = text.strip_prefix('!') {
        (key, Op::NotExists)
    } else if let Some((key, value)) = text.split_once("!=") {
        (key, Op::NotIn(vec![single_value(value)?]))
    } else if let Some((key, value)) = text.split_once("==") {
        (key, Op::In(vec![single_value(value)?]))
    } else if let Some((key, value)) = text.split_once('=') {
        (key, Op::In(vec![single_value(value)?]))
    } else if let Some((key, rest)) = set_operator(text, "notin") {
        (key, Op::NotIn(value_set(rest)?))
    } else if let Some((key, rest)) = set_operator(text, "in") {
        (key, Op::In(value_set(rest)?))
    } else {
        (text, Op::Exists)
    };
    let key = key.trim();
    if key.is_empty() || key.contains(|c: char| c.is_whitespace() || "!=()".contains(c)) {
        return Err(invalid());
    }
    let key = Key::parse(key)?;
    Ok(Requirement { key, op })
}

/// `key <operator> (...)`: the key and what follows the operator.
fn set_operator<'a>(text: &'a str, operator: &str) -> Option<(&'a str, &'a str)> {
    let (key, rest) = text.split_once(char::is_whitespace)?;
    let rest = rest.trim_start().strip_prefix(operator)?;
    rest.trim_start().starts_with('(').then_some((key, rest))
}

fn single_value(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.contains(|c: char| c.is_whitespace() || "!=(),".contains(c)) {
        return Err(INVALID_SELECTOR.into());
    }
    check_label_value(value)?;
    Ok(value.to_string())
}

/// `(a, b)`: at least one value.
fn value_set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| INVALID_SELECTOR.to_string())?;
    if inner.trim().is_empty() {
        return Err(INVALID_SELECTOR.into());
    }
    inner.split(',').map(single_value).collect()
}

/// The SQL of one requirement on `column` (a resource guid) of `resource_type`: a
/// template with `?` marks, and its arguments.
pub(crate) fn requirement_sql(
    column: &str,
    resource_type: &str,
    requirement: &Requirement,
) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = vec![
        resource_type.into(),
        Kind::Label.as_str().into(),
        requirement.key.prefix.as_str().into(),
        requirement.key.name.as_str().into(),
    ];
    let (negated, values) = match &requirement.op {
        Op::In(values) => (false, Some(values)),
        Op::NotIn(values) => (true, Some(values)),
        Op::Exists => (false, None),
        Op::NotExists => (true, None),
    };
    let mut select = format!(
        "SELECT resource_guid FROM {} WHERE resource_type = ? AND kind = ? \
         AND key_prefix = ? AND key_name = ?",
        MetadataEntry::TABLE
    );
    if let Some(values) = values {
        select.push_str(&format!(
            " AND value IN ({})",
            vec!["?"; values.len()].join(", ")
        ));
        args.extend(values.iter().map(Arg::from));
    }
    let not = if negated { "NOT " } else { "" };
    (format!("{column} {not}IN ({select})"), args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(prefix: &str, name: &str) -> Key {
        Key {
            prefix: prefix.into(),
            name: name.into(),
        }
    }

    #[test]
    fn keys_follow_cf_rules() {
        assert_eq!(Key::parse("env").unwrap(), key("", "env"));
        assert_eq!(
            Key::parse("example.com/tier-1").unwrap(),
            key("example.com", "tier-1")
        );
        assert_eq!(Key::parse("a.b_c-d9").unwrap(), key("", "a.b_c-d9"));
        let err = |k: &str| Key::parse(k).unwrap_err();
        assert_eq!(err(""), "key cannot be empty string");
        assert_eq!(err("example.com/"), "key cannot be empty string");
        assert_eq!(err("a/b/c"), "key has more than one '/'");
        assert_eq!(
            err("-x.com/a"),
            "prefix '-x.com' must be in valid dns format"
        );
        assert_eq!(err("/a"), "prefix '' must be in valid dns format");
        assert_eq!(
            err("CloudFoundry.org/a"),
            "prefix 'cloudfoundry.org' is reserved"
        );
        let long_prefix = vec!["abcdefghij"; 24].join(".");
        assert!(long_prefix.len() > MAX_PREFIX);
        assert_eq!(
            err(&format!("{long_prefix}/a")),
            "prefix 'abcdefgh...' is greater than 253 characters"
        );
        assert_eq!(
            err("invalid*key"),
            "'invalid*key' contains invalid characters"
        );
        assert_eq!(err("-key"), "'-key' starts or ends with invalid characters");
        assert_eq!(err("key_"), "'key_' starts or ends with invalid characters");
        assert!(Key::parse(&"k".repeat(63)).is_ok());
        assert_eq!(
            err(&"k".repeat(64)),
            "'kkkkkkkk...' is greater than 63 characters"
        );
        assert_eq!(key("p.io", "n").full(), "p.io/n");
        assert_eq!(key("", "n").full(), "n");
    }

    #[test]
    fn label_values_follow_cf_rules() {
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_3-x").is_ok());
        assert!(check_label_value(&"v".repeat(63)).is_ok());
        assert_eq!(
            check_label_value(&"v".repeat(64)).unwrap_err(),
            "'vvvvvvvv...' is greater than 63 characters"
        );
        assert_eq!(
            check_label_value("108&eb90d734").unwrap_err(),
            "'108&eb90d734' contains invalid characters"
        );
        assert_eq!(
            check_label_value(".x").unwrap_err(),
            "'.x' starts or ends with invalid characters"
        );
    }

    #[test]
    fn updates_are_checked_with_cf_messages() {
        let update = MetadataUpdate::parse(Some(&json!({
            "labels": {"env": "prod", "example.com/gone": null, "empty": ""},
            "annotations": {"note": "x".repeat(5000), "old": null},
        })))
        .unwrap();
        assert_eq!(update.changes.len(), 5);
        assert!(update
            .changes
            .contains(&(Kind::Label, key("example.com", "gone"), None)));
        assert_eq!(
            MetadataUpdate::parse(None).unwrap(),
            MetadataUpdate::default()
        );
        assert_eq!(
            MetadataUpdate::parse(Some(&Value::Null)).unwrap(),
            MetadataUpdate::default()
        );

        let detail = |body: Value| match MetadataUpdate::parse(Some(&body)).unwrap_err() {
            ApiError::Unprocessable(detail) => detail,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            detail(json!({"labels": {"": "test", "sha2": "108&eb90d734"}})),
            "Metadata label key error: key cannot be empty string, \
             Metadata label value error: '108&eb90d734' contains invalid characters"
        );
        assert_eq!(
            detail(json!({"labels": {"cloudfoundry.org/release": "stable"}})),
            "Metadata label key error: prefix 'cloudfoundry.org' is reserved"
        );
        assert_eq!(
            detail(json!({"annotations": {"note": "y".repeat(5001)}})),
            "Metadata annotation value error: 'yyyyyyyy...' is greater than 5000 characters"
        );
        assert_eq!(
            detail(json!({"annotations": {"a b": "v"}})),
            "Metadata annotation key error: 'a b' contains invalid characters"
        );
        assert_eq!(
            detail(json!({"labels": {"n": 3}})),
            "Metadata label value error: 'n' must be a string or null"
        );
        assert_eq!(
            detail(json!({"labels": [], "other": 1})),
            "Metadata has unexpected field(s): 'other', Metadata 'labels' is not an object"
        );
        assert_eq!(detail(json!("x")), "Metadata must be an object");
    }

    fn req(prefix: &str, name: &str, op: Op) -> Requirement {
        Requirement {
            key: key(prefix, name),
            op,
        }
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn selectors_parse_every_form() {
        assert_eq!(
            parse_selector("env=prod").unwrap(),
            [req("", "env", Op::In(strings(&["prod"])))]
        );
        assert_eq!(
            parse_selector("example.com/env==prod").unwrap(),
            [req("example.com", "env", Op::In(strings(&["prod"])))]
        );
        assert_eq!(
            parse_selector("env!=prod").unwrap(),
            [req("", "env", Op::NotIn(strings(&["prod"])))]
        );
        assert_eq!(
            parse_selector("env in (prod, dev),tier notin (web),ok,!gone").unwrap(),
            [
                req("", "env", Op::In(strings(&["prod", "dev"]))),
                req("", "tier", Op::NotIn(strings(&["web"]))),
                req("", "ok", Op::Exists),
                req("", "gone", Op::NotExists),
            ]
        );
        assert_eq!(
            parse_selector("env=").unwrap(),
            [req("", "env", Op::In(strings(&[""])))]
        );
        assert_eq!(
            parse_selector(" a = b , c ").unwrap(),
            [
                req("", "a", Op::In(strings(&["b"]))),
                req("", "c", Op::Exists)
            ]
        );
    }

    #[test]
    fn malformed_selectors_are_refused() {
        assert_eq!(
            parse_selector("").unwrap_err(),
            "Missing label_selector value"
        );
        for bad in [
            "env in (a,b",
            "env in a,b)",
            "env in ()",
            "env in (a,(b))",
            "=prod",
            "!",
            "env=a=b",
            "a,,b",
            "env prod",
            "env in",
            "env notin (a b)",
            "!env=prod",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            parse_selector("env=a&b").unwrap_err(),
            "'a&b' contains invalid characters"
        );
        assert_eq!(
            parse_selector("cloudfoundry.org/x").unwrap_err(),
            "prefix 'cloudfoundry.org' is reserved"
        );
    }

    #[test]
    fn requirements_become_subqueries() {
        let (sql, args) = requirement_sql(
            "guid",
            "apps",
            &req("p.io", "env", Op::NotIn(strings(&["a", "b"]))),
        );
        assert_eq!(
            sql,
            "guid NOT IN (SELECT resource_guid FROM resource_metadata WHERE resource_type = ? \
             AND kind = ? AND key_prefix = ? AND key_name = ? AND value IN (?, ?))"
        );
        assert_eq!(args.len(), 6);
        let (sql, args) = requirement_sql("guid", "apps", &req("", "env", Op::Exists));
        assert!(sql.starts_with("guid IN (SELECT") && !sql.contains("value"));
        assert_eq!(args.len(), 4);
    }
}
