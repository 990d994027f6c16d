//! A blocking client of the director's API, for `wf bosh`: basic auth as `admin` (or
//! another user), BOSH's `{"code", "description"}` errors, and following a task to its
//! end while printing its log as it grows.

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::Value;

use super::db::Task;

/// How long a request may take (release uploads carry the `wfd` binary).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `wait_for_task` follows a task.
const TASK_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the director at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("director: {description} (HTTP {status})")]
    Api { status: u16, description: String },
    #[error("task {id} failed: {result}")]
    TaskFailed { id: i64, result: String },
    #[error("task {id} did not finish within {TASK_TIMEOUT:?}")]
    TaskTimeout { id: i64 },
}

pub struct DirectorClient {
    url: String,
    user: String,
    password: String,
    http: Client,
}

impl DirectorClient {
    pub fn new(url: &str, user: &str, password: &str) -> Result<DirectorClient, ClientError> {
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(DirectorClient {
            url: url.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password: password.to_string(),
            http,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .basic_auth(&self.user, Some(&self.password))
    }

    fn send(&self, request: RequestBuilder) -> Result<String, ClientError> {
        let response = request.send().map_err(|e| ClientError::Unreachable {
            url: self.url.clone(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let body = response.text().unwrap_or_default();
        if status >= 400 {
            let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let description = json["description"]
                .as_str()
                .map_or(body.clone(), str::to_string);
            return Err(ClientError::Api {
                status,
                description,
            });
        }
        Ok(body)
    }

    fn json(&self, request: RequestBuilder) -> Result<Value, ClientError> {
        let body = self.send(request)?;
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, path))
    }

    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        self.send(self.request(Method::GET, path))
    }

    /// Sends `body` (a tarball, YAML) with `method`; the JSON answer.
    pub fn send_body(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Value, ClientError> {
        self.json(
            self.request(method, path)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
    }

    /// A call that starts a task; its id.
    pub fn start_task(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<i64, ClientError> {
        let mut request = self.request(method, path);
        if let Some((content_type, body)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        let answer = self.json(request)?;
        answer["id"].as_i64().ok_or_else(|| ClientError::Api {
            status: 200,
            description: format!("no task id in {answer}"),
        })
    }

    /// Follows task `id` to its end, writing its log to `out` as it grows; the task, or
    /// its failure.
    pub fn wait_for_task(&self, id: i64, out: &mut dyn Write) -> Result<Task, ClientError> {
        let deadline = Instant::now() + TASK_TIMEOUT;
        let mut printed = 0;
        loop {
            let task: Task =
                serde_json::from_value(self.get(&format!("/tasks/{id}"))?).map_err(|e| {
                    ClientError::Api {
                        status: 200,
                        description: format!("invalid task: {e}"),
                    }
                })?;
            let log = self.get_text(&format!("/tasks/{id}/output"))?;
            if log.len() > printed {
                let _ = out.write_all(&log.as_bytes()[printed..]);
                let _ = out.flush();
                printed = log.len();
            }
            match task.state.as_str() {
                "processing" | "queued" => {}
                "done" => return Ok(task),
                _ => {
                    return Err(ClientError::TaskFailed {
                        id,
                        result: task.result.unwrap_or_default(),
                    })
                }
            }
            if Instant::now() > deadline {
                return Err(ClientError::TaskTimeout { id });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
