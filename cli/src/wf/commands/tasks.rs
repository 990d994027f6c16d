//! Task commands: `run-task`, `tasks`, `terminate-task` (cf CLI v7+ behaviour).

use serde_json::{json, Value};

use super::{app_by_name, space_target, text};
use crate::wf::client::Client;
use crate::wf::output::{parse_megabytes, table};
use crate::wf::Error;

/// `wf run-task APP [--command CMD] [--name NAME] [-m MEM] [-k DISK]`.
pub fn run_task(
    client: &mut Client,
    name: &str,
    command: Option<String>,
    task_name: Option<String>,
    memory: Option<String>,
    disk: Option<String>,
) -> Result<(), Error> {
    let target = space_target(client)?;
    let memory = memory
        .as_deref()
        .map(parse_megabytes)
        .transpose()
        .map_err(Error::Failed)?;
    let disk = disk
        .as_deref()
        .map(parse_megabytes)
        .transpose()
        .map_err(Error::Failed)?;
    let app = app_by_name(client, &target, name)?;
    println!("Creating task for app {name} in {}...", target.describe());
    let mut body = serde_json::Map::new();
    if let Some(command) = command {
        body.insert("command".into(), json!(command));
    }
    if let Some(task_name) = task_name {
        body.insert("name".into(), json!(task_name));
    }
    if let Some(mb) = memory {
        body.insert("memory_in_mb".into(), json!(mb));
    }
    if let Some(mb) = disk {
        body.insert("disk_in_mb".into(), json!(mb));
    }
    let task = client.post(
        &format!("/v3/apps/{}/tasks", text(&app, "guid")),
        &Value::Object(body),
    )?;
    println!("Task has been submitted successfully for execution.");
    println!("OK\n");
    println!("task name:   {}", text(&task, "name"));
    println!("task id:     {}", task["sequence_id"]);
    Ok(())
}

/// The rows of `wf tasks`, newest first, as the cf CLI shows them.
fn task_rows(tasks: &[Value]) -> Vec<Vec<String>> {
    let mut tasks: Vec<&Value> = tasks.iter().collect();
    tasks.sort_by_key(|t| std::cmp::Reverse(t["sequence_id"].as_i64().unwrap_or_default()));
    tasks
        .iter()
        .map(|t| {
            vec![
                t["sequence_id"].to_string(),
                text(t, "name").to_string(),
                text(t, "state").to_string(),
                text(t, "created_at").to_string(),
                text(t, "command").to_string(),
            ]
        })
        .collect()
}

/// `wf tasks APP`.
pub fn tasks(client: &mut Client, name: &str) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = app_by_name(client, &target, name)?;
    println!("Getting tasks for app {name} in {}...\n", target.describe());
    let tasks = client.list(&format!("/v3/apps/{}/tasks", text(&app, "guid")))?;
    if tasks.is_empty() {
        println!("No tasks found");
        return Ok(());
    }
    print!(
        "{}",
        table(
            &["id", "name", "state", "start time", "command"],
            &task_rows(&tasks)
        )
    );
    Ok(())
}

/// `wf terminate-task APP ID` (ID: the task's sequence id, as `wf tasks` shows).
pub fn terminate_task(client: &mut Client, name: &str, id: u64) -> Result<(), Error> {
    let target = space_target(client)?;
    let app = app_by_name(client, &target, name)?;
    println!(
        "Terminating task {id} of app {name} in {}...",
        target.describe()
    );
    let tasks = client.list(&format!("/v3/apps/{}/tasks", text(&app, "guid")))?;
    let task = tasks
        .iter()
        .find(|t| t["sequence_id"].as_u64() == Some(id))
        .ok_or_else(|| Error::Failed(format!("Task sequence ID {id} not found.")))?;
    client.post(
        &format!("/v3/tasks/{}/actions/cancel", text(task, "guid")),
        &json!({}),
    )?;
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_newest_first() {
        let tasks = vec![
            json!({"sequence_id": 1, "name": "a", "state": "SUCCEEDED", "created_at": "t1", "command": "x"}),
            json!({"sequence_id": 2, "name": "b", "state": "RUNNING", "created_at": "t2", "command": "y"}),
        ];
        let rows = task_rows(&tasks);
        assert_eq!(rows[0], vec!["2", "b", "RUNNING", "t2", "y"]);
        assert_eq!(rows[1][0], "1");
    }
}
