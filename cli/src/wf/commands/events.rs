//! `wf events APP`: the app's recent audit events (`/v3/audit_events`), newest first,
//! as the cf CLI shows them.

use serde_json::Value;

use super::{app_by_name, query_value, space_target, text};
use crate::wf::client::Client;
use crate::wf::output::table;
use crate::wf::Error;

/// How many events `wf events` shows (the cf CLI shows 50).
const SHOWN: usize = 50;

pub fn events(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = app_by_name(client, &target, name)?;
    println!(
        "Getting events for app {name} in {}...\n",
        target.describe()
    );
    let page = client.get(&format!(
        "/v3/audit_events?target_guids={}&order_by=-created_at&per_page={SHOWN}",
        query_value(text(&app, "guid"))
    ))?;
    let rows: Vec<Vec<String>> = page["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                text(e, "created_at").to_string(),
                text(e, "type").to_string(),
                e["actor"]["name"].as_str().unwrap_or_default().to_string(),
                describe(&e["data"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("No events found.");
    } else {
        print!(
            "{}",
            table(&["time", "event", "actor", "description"], &rows)
        );
    }
    Ok(())
}

/// An event's data as `key: value` pairs: the request's fields, or the data's own
/// (crashes), without guids.
fn describe(data: &Value) -> String {
    let fields = data
        .get("request")
        .and_then(Value::as_object)
        .or_else(|| data.as_object());
    let Some(fields) = fields else {
        return String::new();
    };
    fields
        .iter()
        .filter(|(k, v)| !k.ends_with("guid") && !v.is_null() && *v != "")
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descriptions_show_the_request_without_guids() {
        let scale = json!({"process_guid": "p", "request": {"instances": 3, "memory_in_mb": 64}});
        assert_eq!(describe(&scale), "instances: 3, memory_in_mb: 64");
        let crash =
            json!({"index": 0, "instance": "", "reason": "CRASHED", "exit_description": "exit 1"});
        assert_eq!(
            describe(&crash),
            "exit_description: exit 1, index: 0, reason: CRASHED"
        );
        assert_eq!(describe(&json!({})), "");
    }
}
