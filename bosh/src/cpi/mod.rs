//! The BOSH Cloud Provider Interface, API v2, as it is on the wire: the director runs
//! a CPI executable once per call with a JSON [`Request`] (method, arguments, context,
//! api_version) on its standard input and reads one JSON [`Response`] (result, error
//! {type, message, ok_to_retry}, log) from its standard output. [`Cpi`] is the
//! director's side (any executable that speaks the protocol plugs in); [`serve_stdio`]
//! is the executable's side, which the built-in [`local`] CPI uses (with [`netns`], its
//! VMs get network namespaces of their own).

pub mod local;
pub mod netns;

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;

/// The CPI API version this director speaks.
pub const API_VERSION: u32 = 2;
/// How long one CPI call may take before the director gives up on it (and kills it).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// BOSH's error types, which the director tells apart.
pub const CLOUD_ERROR: &str = "Bosh::Clouds::CloudError";
pub const VM_NOT_FOUND: &str = "Bosh::Clouds::VMNotFound";
pub const DISK_NOT_FOUND: &str = "Bosh::Clouds::DiskNotFound";
pub const NOT_IMPLEMENTED: &str = "Bosh::Clouds::NotImplemented";
pub const VM_CREATION_FAILED: &str = "Bosh::Clouds::VMCreationFailed";

/// What the director writes to the CPI's standard input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    pub arguments: Vec<Value>,
    /// `director_uuid`, `request_id`, and for v2 the VM's context.
    #[serde(default)]
    pub context: Value,
    #[serde(default = "default_api_version")]
    pub api_version: u32,
}

fn default_api_version() -> u32 {
    1
}

/// What the CPI prints on its standard output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub result: Value,
    pub error: Option<CloudError>,
    #[serde(default)]
    pub log: String,
}

impl Response {
    pub fn ok(result: Value) -> Response {
        Response {
            result,
            error: None,
            log: String::new(),
        }
    }

    pub fn error(kind: &str, message: impl Into<String>) -> Response {
        Response {
            result: Value::Null,
            error: Some(CloudError {
                kind: kind.to_string(),
                message: message.into(),
                ok_to_retry: false,
            }),
            log: String::new(),
        }
    }
}

/// The `error` of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub ok_to_retry: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CpiError {
    #[error("cannot start the CPI {command:?}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the CPI did not answer {method} within {timeout:?} (killed)")]
    Timeout { method: String, timeout: Duration },
    #[error("the CPI exited ({status}) without answering {method}; stderr: {stderr}")]
    Crashed {
        method: String,
        status: String,
        stderr: String,
    },
    #[error("the CPI answered {method} with something that is not a CPI response ({reason}): {output:?}")]
    Garbage {
        method: String,
        reason: String,
        output: String,
    },
    #[error("CPI {method} failed: {} {}", error.kind, error.message)]
    Cloud { method: String, error: CloudError },
    #[error("CPI {method} returned {result}, expected {expected}")]
    UnexpectedResult {
        method: String,
        result: Value,
        expected: &'static str,
    },
}

impl CpiError {
    /// The BOSH error type when the CPI reported one (`Bosh::Clouds::VMNotFound`, ...).
    pub fn cloud_kind(&self) -> Option<&str> {
        match self {
            CpiError::Cloud { error, .. } => Some(&error.kind),
            _ => None,
        }
    }

    /// Whether the CPI said the VM or disk does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.cloud_kind(), Some(VM_NOT_FOUND | DISK_NOT_FOUND))
    }
}

/// The director's handle on a CPI executable: a command line run once per call.
#[derive(Debug, Clone)]
pub struct Cpi {
    command: Vec<String>,
    director_uuid: String,
    timeout: Duration,
}

impl Cpi {
    /// `command` is the executable and its arguments (`["wfd", "cpi", "local", ...]`).
    pub fn new(command: Vec<String>, director_uuid: &str) -> Cpi {
        Cpi {
            command,
            director_uuid: director_uuid.to_string(),
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Cpi {
        self.timeout = timeout;
        self
    }

    /// Runs one call; the result, or the CPI's error.
    pub async fn call(&self, method: &str, arguments: Vec<Value>) -> Result<Value, CpiError> {
        let request = Request {
            method: method.to_string(),
            arguments,
            context: json!({
                "director_uuid": self.director_uuid,
                "request_id": uuid::Uuid::new_v4().to_string(),
            }),
            api_version: API_VERSION,
        };
        let input = serde_json::to_vec(&request).expect("a request serializes");
        let (program, args) = self.command.split_first().ok_or_else(|| CpiError::Spawn {
            command: String::new(),
            source: std::io::Error::other("empty CPI command"),
        })?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| CpiError::Spawn {
                command: self.command.join(" "),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let run = async move {
            // A CPI that exits without reading its input is judged by its output.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            child.wait_with_output().await
        };
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| CpiError::Timeout {
                method: method.to_string(),
                timeout: self.timeout,
            })?
            .map_err(|source| CpiError::Spawn {
                command: self.command.join(" "),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout.trim().is_empty() {
            return Err(CpiError::Crashed {
                method: method.to_string(),
                status: output.status.to_string(),
                stderr: tail(&String::from_utf8_lossy(&output.stderr)),
            });
        }
        let response: Response =
            serde_json::from_str(stdout.trim()).map_err(|e| CpiError::Garbage {
                method: method.to_string(),
                reason: e.to_string(),
                output: tail(&stdout),
            })?;
        if !response.log.is_empty() {
            tracing::debug!(method, log = %response.log, "CPI log");
        }
        match response.error {
            Some(error) => Err(CpiError::Cloud {
                method: method.to_string(),
                error,
            }),
            None => Ok(response.result),
        }
    }

    pub async fn info(&self) -> Result<Value, CpiError> {
        self.call("info", vec![]).await
    }

    /// Returns the stemcell's cid.
    pub async fn create_stemcell(
        &self,
        image_path: &str,
        cloud_properties: &Value,
    ) -> Result<String, CpiError> {
        let result = self
            .call(
                "create_stemcell",
                vec![json!(image_path), cloud_properties.clone()],
            )
            .await?;
        self.string("create_stemcell", result)
    }

    pub async fn delete_stemcell(&self, cid: &str) -> Result<(), CpiError> {
        self.call("delete_stemcell", vec![json!(cid)])
            .await
            .map(drop)
    }

    /// Returns the VM's cid and its networks (API v2's `[vm_cid, networks]`).
    pub async fn create_vm(
        &self,
        agent_id: &str,
        stemcell_cid: &str,
        cloud_properties: &Value,
        networks: &Value,
        disk_cids: &[String],
        env: &Value,
    ) -> Result<(String, Value), CpiError> {
        let result = self
            .call(
                "create_vm",
                vec![
                    json!(agent_id),
                    json!(stemcell_cid),
                    cloud_properties.clone(),
                    networks.clone(),
                    json!(disk_cids),
                    env.clone(),
                ],
            )
            .await?;
        // API v1 CPIs answer the cid alone.
        match &result {
            Value::String(cid) => Ok((cid.clone(), networks.clone())),
            Value::Array(items) if items.first().is_some_and(Value::is_string) => Ok((
                items[0].as_str().unwrap_or_default().to_string(),
                items.get(1).cloned().unwrap_or_else(|| networks.clone()),
            )),
            _ => Err(CpiError::UnexpectedResult {
                method: "create_vm".into(),
                result,
                expected: "[vm_cid, networks]",
            }),
        }
    }

    pub async fn delete_vm(&self, cid: &str) -> Result<(), CpiError> {
        self.call("delete_vm", vec![json!(cid)]).await.map(drop)
    }

    pub async fn has_vm(&self, cid: &str) -> Result<bool, CpiError> {
        let result = self.call("has_vm", vec![json!(cid)]).await?;
        self.bool("has_vm", result)
    }

    pub async fn reboot_vm(&self, cid: &str) -> Result<(), CpiError> {
        self.call("reboot_vm", vec![json!(cid)]).await.map(drop)
    }

    pub async fn set_vm_metadata(&self, cid: &str, metadata: &Value) -> Result<(), CpiError> {
        self.call("set_vm_metadata", vec![json!(cid), metadata.clone()])
            .await
            .map(drop)
    }

    /// `size` in MiB; returns the disk's cid.
    pub async fn create_disk(
        &self,
        size: u64,
        cloud_properties: &Value,
        vm_cid: Option<&str>,
    ) -> Result<String, CpiError> {
        let result = self
            .call(
                "create_disk",
                vec![json!(size), cloud_properties.clone(), json!(vm_cid)],
            )
            .await?;
        self.string("create_disk", result)
    }

    /// Returns the disk hint (API v2).
    pub async fn attach_disk(&self, vm_cid: &str, disk_cid: &str) -> Result<Value, CpiError> {
        self.call("attach_disk", vec![json!(vm_cid), json!(disk_cid)])
            .await
    }

    pub async fn detach_disk(&self, vm_cid: &str, disk_cid: &str) -> Result<(), CpiError> {
        self.call("detach_disk", vec![json!(vm_cid), json!(disk_cid)])
            .await
            .map(drop)
    }

    pub async fn delete_disk(&self, cid: &str) -> Result<(), CpiError> {
        self.call("delete_disk", vec![json!(cid)]).await.map(drop)
    }

    pub async fn has_disk(&self, cid: &str) -> Result<bool, CpiError> {
        let result = self.call("has_disk", vec![json!(cid)]).await?;
        self.bool("has_disk", result)
    }

    pub async fn get_disks(&self, vm_cid: &str) -> Result<Vec<String>, CpiError> {
        let result = self.call("get_disks", vec![json!(vm_cid)]).await?;
        serde_json::from_value(result.clone()).map_err(|_| CpiError::UnexpectedResult {
            method: "get_disks".into(),
            result,
            expected: "a list of disk cids",
        })
    }

    fn string(&self, method: &str, result: Value) -> Result<String, CpiError> {
        match result {
            Value::String(s) if !s.is_empty() => Ok(s),
            result => Err(CpiError::UnexpectedResult {
                method: method.into(),
                result,
                expected: "a cid",
            }),
        }
    }

    fn bool(&self, method: &str, result: Value) -> Result<bool, CpiError> {
        result.as_bool().ok_or_else(|| CpiError::UnexpectedResult {
            method: method.into(),
            result,
            expected: "true or false",
        })
    }
}

/// The last 2,000 characters of a CPI's output, for error messages.
fn tail(text: &str) -> String {
    let text = text.trim();
    let start = text.char_indices().rev().nth(2000).map_or(0, |(i, _)| i);
    text[start..].to_string()
}

/// The executable's side: reads one request from standard input, answers it with
/// `handle`, and prints the response on standard output. A request that does not parse
/// is answered with a `CloudError`.
pub fn serve_stdio(handle: impl FnOnce(Request) -> Response) -> std::io::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let response = match serde_json::from_str::<Request>(&input) {
        Ok(request) => handle(request),
        Err(e) => Response::error(CLOUD_ERROR, format!("invalid CPI request: {e}")),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &response)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Cpi {
        Cpi::new(
            vec!["/bin/sh".into(), "-c".into(), script.into()],
            "director-1",
        )
        .with_timeout(Duration::from_secs(5))
    }

    #[test]
    fn request_and_response_match_the_v2_wire_format() {
        let request: Request = serde_json::from_str(
            r#"{"method":"create_vm","arguments":["agent-1","sc-1",{},{},[],{}],
                "context":{"director_uuid":"d","request_id":"r"},"api_version":2}"#,
        )
        .unwrap();
        assert_eq!(request.method, "create_vm");
        assert_eq!(request.arguments.len(), 6);
        assert_eq!(request.api_version, 2);
        let error = Response::error(VM_NOT_FOUND, "no vm-1");
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            json!({"result": null, "error": {"type": "Bosh::Clouds::VMNotFound",
                   "message": "no vm-1", "ok_to_retry": false}, "log": ""})
        );
        let back: Response = serde_json::from_value(serde_json::to_value(&error).unwrap()).unwrap();
        assert_eq!(back, error);
    }

    #[tokio::test]
    async fn a_call_sends_the_request_on_stdin_and_reads_the_result() {
        // The CPI echoes the method it read back as its result.
        let cpi = sh(
            r#"read req; m=$(echo "$req" | sed 's/.*"method":"\([a-z_]*\)".*/\1/'); printf '{"result":["vm-%s",{"n":{}}],"error":null,"log":"ok"}' "$m""#,
        );
        let (cid, networks) = cpi
            .create_vm("a", "sc", &json!({}), &json!({"n": {}}), &[], &json!({}))
            .await
            .unwrap();
        assert_eq!(cid, "vm-create_vm");
        assert_eq!(networks, json!({"n": {}}));
    }

    #[tokio::test]
    async fn cloud_errors_come_back_typed() {
        let cpi = sh(
            r#"cat >/dev/null; echo '{"result":null,"error":{"type":"Bosh::Clouds::VMNotFound","message":"gone","ok_to_retry":false},"log":""}'"#,
        );
        let err = cpi.delete_vm("vm-1").await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("gone"), "{err}");
    }

    #[tokio::test]
    async fn garbage_crashes_hangs_and_wrong_results_are_clear_errors() {
        let err = sh("cat >/dev/null; echo 'hello, I am not JSON'")
            .has_vm("vm-1")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CpiError::Garbage { output, .. } if output.contains("not JSON")),
            "{err}"
        );
        let err = sh("echo boom >&2; exit 3")
            .has_vm("vm-1")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CpiError::Crashed { stderr, .. } if stderr == "boom"),
            "{err}"
        );
        let started = std::time::Instant::now();
        let err = sh("exec sleep 30")
            .with_timeout(Duration::from_millis(300))
            .has_vm("vm-1")
            .await
            .unwrap_err();
        assert!(matches!(err, CpiError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = sh(r#"cat >/dev/null; echo '{"result":"yes","error":null}'"#)
            .has_vm("vm-1")
            .await
            .unwrap_err();
        assert!(matches!(err, CpiError::UnexpectedResult { .. }), "{err}");
        let err = Cpi::new(vec!["/nonexistent/cpi".into()], "d")
            .info()
            .await
            .unwrap_err();
        assert!(matches!(err, CpiError::Spawn { .. }), "{err}");
    }
}
