//! The rep protocol: what the auctioneer and the BBS say to a cell's rep over HTTP.
//! The cell (`wf-host`) serves it; [`RepClient`] calls it.
//!
//! - `GET  /state` -> [`CellState`]
//! - `POST /work` with [`Work`] -> the [`Work`] the cell could not take
//! - `POST /v1/lrps/{process_guid}/instances/{instance_guid}/stop` -> 202
//! - `POST /v1/tasks/{task_guid}/cancel` -> 202
//! - `POST /evacuate` -> 202: the cell drains (hands its instances over) and exits
//! - `GET  /ping` -> 200

use serde::{Deserialize, Serialize};

use crate::models::{ActualLrpKey, DesiredLrp, Resources, Task};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpSummary {
    pub process_guid: String,
    pub index: u32,
    pub domain: String,
    pub instance_guid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellState {
    pub cell_id: String,
    pub rep_url: String,
    pub zone: String,
    pub available_resources: Resources,
    pub total_resources: Resources,
    pub lrps: Vec<LrpSummary>,
    /// Guids of the tasks the cell holds.
    pub tasks: Vec<String>,
    pub starting_container_count: u32,
    pub evacuating: bool,
    #[serde(default)]
    pub placement_tags: Vec<String>,
}

/// One LRP instance to start: the ActualLRP key, the instance guid the auctioneer
/// chose, and the DesiredLRP it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpWork {
    pub key: ActualLrpKey,
    pub instance_guid: String,
    pub desired: DesiredLrp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Work {
    #[serde(default)]
    pub lrps: Vec<LrpWork>,
    #[serde(default)]
    pub tasks: Vec<Task>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.lrps.is_empty() && self.tasks.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepError {
    #[error("rep at {url} unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("rep at {url} answered {status}")]
    Status { url: String, status: u16 },
}

/// Calls a rep's API; every call has a timeout.
#[derive(Clone)]
pub struct RepClient {
    http: reqwest::Client,
}

impl RepClient {
    /// A client whose calls time out after `timeout`; with `tls`, of reps serving
    /// mutual TLS (`https://` rep URLs).
    pub fn new(timeout: std::time::Duration, tls: Option<&crate::mtls::MutualTls>) -> Self {
        let builder = tls.map_or_else(
            reqwest::Client::builder,
            crate::mtls::MutualTls::client_builder,
        );
        let http = builder.timeout(timeout).build().unwrap_or_default();
        RepClient { http }
    }

    pub async fn state(&self, rep_url: &str) -> Result<CellState, RepError> {
        let url = format!("{rep_url}/state");
        let resp = self.send(self.http.get(&url), &url).await?;
        resp.json()
            .await
            .map_err(|source| RepError::Unreachable { url, source })
    }

    /// Offers work; answers what the cell refused.
    pub async fn perform(&self, rep_url: &str, work: &Work) -> Result<Work, RepError> {
        let url = format!("{rep_url}/work");
        let resp = self.send(self.http.post(&url).json(work), &url).await?;
        resp.json()
            .await
            .map_err(|source| RepError::Unreachable { url, source })
    }

    pub async fn stop_lrp_instance(
        &self,
        rep_url: &str,
        process_guid: &str,
        instance_guid: &str,
    ) -> Result<(), RepError> {
        let url = format!("{rep_url}/v1/lrps/{process_guid}/instances/{instance_guid}/stop");
        self.send(self.http.post(&url), &url).await.map(drop)
    }

    pub async fn cancel_task(&self, rep_url: &str, task_guid: &str) -> Result<(), RepError> {
        let url = format!("{rep_url}/v1/tasks/{task_guid}/cancel");
        self.send(self.http.post(&url), &url).await.map(drop)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, RepError> {
        let resp = req.send().await.map_err(|source| RepError::Unreachable {
            url: url.to_string(),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(RepError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        Ok(resp)
    }
}
