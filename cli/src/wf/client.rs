//! The V3 API client of `wf`: resolves paths against the API endpoint, sends the UAA
//! bearer token (refreshing it with the `refresh_token` grant when the API answers 401),
//! follows pagination and async jobs, and turns CF error bodies into [`ApiError`]s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION};
use reqwest::Method;
use serde_json::Value;

use super::config::{ClientCredentials, Config, ConfigError};

/// How long a single request may take (uploads included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `wf` waits for an async job (`/v3/jobs/...`) to finish.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stream (`wf logs`) may stay silent before it counts as lost: the RLP
/// gateway sends a heartbeat every 15 s.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(45);
/// The UAA client the cf CLI uses: public, empty secret.
const UAA_CLIENT: &str = "cf";

/// A CF API error: the HTTP status and the first entry of the `errors` array.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ApiError {
    pub status: u16,
    /// The CF error code (`10010`), 0 when the body carried none.
    pub code: u64,
    /// The CF error title (`CF-ResourceNotFound`), empty when the body carried none.
    pub title: String,
    pub detail: String,
}

impl ApiError {
    /// Parses a CF (`{"errors": [...]}`) or UAA (`{"error", "error_description"}`) error
    /// body; anything else becomes a generic error carrying the body.
    pub fn from_response(status: u16, body: &str) -> ApiError {
        let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        if let Some(first) = json["errors"].get(0) {
            return ApiError {
                status,
                code: first["code"].as_u64().unwrap_or_default(),
                title: first["title"].as_str().unwrap_or_default().to_string(),
                detail: first["detail"]
                    .as_str()
                    .or_else(|| first["title"].as_str())
                    .unwrap_or("Unknown error")
                    .to_string(),
            };
        }
        if let Some(error) = json["error"].as_str() {
            return ApiError {
                status,
                code: 0,
                title: error.to_string(),
                detail: json["error_description"]
                    .as_str()
                    .unwrap_or(error)
                    .to_string(),
            };
        }
        let body = body.trim();
        let detail = if body.is_empty() {
            format!("The server answered {status} with no details.")
        } else {
            format!("The server answered {status}: {body}")
        };
        ApiError {
            status,
            code: 0,
            title: String::new(),
            detail,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }
}

/// Why UAA refused a password with 401: a locked account (as the cf CLI, UAA's
/// `unauthorized` error whose description says so), else bad credentials.
fn password_rejected(body: &str) -> ClientError {
    let error: Value = serde_json::from_str(body).unwrap_or_default();
    match (error["error"].as_str(), error["error_description"].as_str()) {
        (Some("unauthorized"), Some(description)) if description.contains("locked") => {
            ClientError::AccountLocked(description.to_string())
        }
        _ => ClientError::BadCredentials,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("No API endpoint set. Use 'wf api' to set an endpoint.")]
    NoApi,
    #[error("Not logged in. Use 'wf auth' to log in.")]
    NotLoggedIn,
    #[error("Authentication has expired or was revoked. Use 'wf auth' to log in again.")]
    SessionExpired,
    #[error("Credentials were rejected, please try again.")]
    BadCredentials,
    /// UAA's lockout: too many failed logins; UAA's message.
    #[error("{0}")]
    AccountLocked(String),
    #[error("Request error: {message}\nTIP: Is the platform running, and is the API endpoint ('wf api') right?")]
    Connection { message: String },
    #[error("Invalid response from {url}: {message}")]
    BadResponse { url: String, message: String },
    #[error("Timed out after {seconds} s waiting for {what}.")]
    Timeout { what: String, seconds: u64 },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl ClientError {
    fn connection(e: reqwest::Error) -> ClientError {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ClientError::Connection { message }
    }

    /// The API error behind this error, if the API answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// A raw answer, as `wf curl` shows it.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// A JSON answer of the API.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    /// The `Location` header: the job of an async operation.
    pub location: Option<String>,
    pub json: Value,
}

/// What the API root (`GET /`) says about the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootInfo {
    pub uaa: Option<String>,
    pub log_cache: Option<String>,
    pub version: Option<String>,
}

impl RootInfo {
    pub fn from_json(root: &Value) -> RootInfo {
        let href = |link: &str| {
            root["links"][link]["href"]
                .as_str()
                .map(|s| s.trim_end_matches('/').to_string())
        };
        RootInfo {
            uaa: href("uaa").or_else(|| href("login")),
            log_cache: href("log_cache"),
            version: root["links"]["cloud_controller_v3"]["meta"]["version"]
                .as_str()
                .map(str::to_string),
        }
    }
}

/// The API client, owning the config so it can persist refreshed tokens and targets.
pub struct Client {
    http: reqwest::blocking::Client,
    config: Config,
    config_path: PathBuf,
}

impl Client {
    pub fn new(config: Config, config_path: PathBuf) -> Result<Client, ClientError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("wf/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::connection)?;
        Ok(Client {
            http,
            config,
            config_path,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    pub fn save_config(&self) -> Result<(), ClientError> {
        Ok(self.config.save(&self.config_path)?)
    }

    pub fn api_url(&self) -> Result<&str, ClientError> {
        self.config.api.as_deref().ok_or(ClientError::NoApi)
    }

    /// Fails unless an endpoint is set and a user is logged in.
    pub fn require_login(&self) -> Result<(), ClientError> {
        self.api_url()?;
        match self.config.access_token {
            Some(_) => Ok(()),
            None => Err(ClientError::NotLoggedIn),
        }
    }

    /// The logged-in user's name, read from the access token.
    pub fn user_name(&self) -> String {
        self.config
            .access_token
            .as_deref()
            .and_then(token_user_name)
            .unwrap_or_else(|| "unknown user".to_string())
    }

    /// `path` against the API endpoint; absolute URLs are kept.
    fn url(&self, path: &str) -> Result<String, ClientError> {
        if path.starts_with("http://") || path.starts_with("https://") {
            return Ok(path.to_string());
        }
        let api = self.api_url()?;
        let sep = if path.starts_with('/') { "" } else { "/" };
        Ok(format!("{api}{sep}{path}"))
    }

    /// The Log Cache URL: the root's `log_cache` link, else the API endpoint.
    pub fn log_cache_url(&self) -> Result<String, ClientError> {
        match &self.config.log_cache {
            Some(url) => Ok(url.clone()),
            None => Ok(self.api_url()?.to_string()),
        }
    }

    /// Reads the API root of `api_url` (no token needed).
    pub fn discover(&self, api_url: &str) -> Result<RootInfo, ClientError> {
        let resp = self
            .http
            .get(format!("{api_url}/"))
            .header("Accept", "application/json")
            .send()
            .map_err(ClientError::connection)?;
        let status = resp.status().as_u16();
        let body = resp.text().map_err(ClientError::connection)?;
        if !(200..300).contains(&status) {
            return Err(ApiError::from_response(status, &body).into());
        }
        let root: Value = serde_json::from_str(&body).map_err(|e| ClientError::BadResponse {
            url: api_url.to_string(),
            message: format!("{e}; is this a Cloud Foundry API endpoint?"),
        })?;
        Ok(RootInfo::from_json(&root))
    }

    /// The UAA URL: the root's `login` link, else the API endpoint.
    pub fn uaa_url(&self) -> Result<String, ClientError> {
        match &self.config.uaa {
            Some(url) => Ok(url.clone()),
            None => Ok(self.api_url()?.to_string()),
        }
    }

    /// Logs in with the `password` grant and stores the tokens.
    pub fn password_grant(&mut self, username: &str, password: &str) -> Result<(), ClientError> {
        let url = format!("{}/oauth/token", self.uaa_url()?);
        let resp = self
            .http
            .post(&url)
            .basic_auth(UAA_CLIENT, Some(""))
            .header("Accept", "application/json")
            .form(&[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ])
            .send()
            .map_err(ClientError::connection)?;
        let status = resp.status().as_u16();
        let body = resp.text().map_err(ClientError::connection)?;
        match status {
            200..=299 => self.store_tokens(&url, &body),
            401 => Err(password_rejected(&body)),
            _ => Err(ApiError::from_response(status, &body).into()),
        }
    }

    /// Logs in as an OAuth client with the `client_credentials` grant; the client is
    /// remembered so that its token can be fetched again when it expires.
    pub fn client_credentials_grant(
        &mut self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<(), ClientError> {
        let url = format!("{}/oauth/token", self.uaa_url()?);
        let resp = self
            .http
            .post(&url)
            .basic_auth(client_id, Some(client_secret))
            .header("Accept", "application/json")
            .form(&[("grant_type", "client_credentials")])
            .send()
            .map_err(ClientError::connection)?;
        let status = resp.status().as_u16();
        let body = resp.text().map_err(ClientError::connection)?;
        match status {
            200..=299 => {
                self.config.client_credentials = Some(ClientCredentials {
                    client_id: client_id.to_string(),
                    client_secret: client_secret.to_string(),
                });
                self.store_tokens(&url, &body)
            }
            401 => Err(ClientError::BadCredentials),
            _ => Err(ApiError::from_response(status, &body).into()),
        }
    }

    /// Whether an expired token can be renewed without the user.
    pub fn can_renew(&self) -> bool {
        self.config.refresh_token.is_some() || self.config.client_credentials.is_some()
    }

    /// Gets a new access token, with the `refresh_token` grant (or, for a client, its
    /// credentials again) and stores it.
    pub fn refresh(&mut self) -> Result<(), ClientError> {
        if let (None, Some(client)) = (
            &self.config.refresh_token,
            self.config.client_credentials.clone(),
        ) {
            return self
                .client_credentials_grant(&client.client_id, &client.client_secret)
                .map_err(|e| match e {
                    ClientError::BadCredentials => ClientError::SessionExpired,
                    e => e,
                });
        }
        let refresh_token = self
            .config
            .refresh_token
            .clone()
            .ok_or(ClientError::NotLoggedIn)?;
        let url = format!("{}/oauth/token", self.uaa_url()?);
        let resp = self
            .http
            .post(&url)
            .header("Accept", "application/json")
            .form(&[
                ("client_id", UAA_CLIENT),
                ("client_secret", ""),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
            ])
            .send()
            .map_err(ClientError::connection)?;
        let status = resp.status().as_u16();
        let body = resp.text().map_err(ClientError::connection)?;
        match status {
            200..=299 => self.store_tokens(&url, &body),
            400 | 401 => Err(ClientError::SessionExpired),
            _ => Err(ApiError::from_response(status, &body).into()),
        }
    }

    fn store_tokens(&mut self, url: &str, body: &str) -> Result<(), ClientError> {
        let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let access = json["access_token"]
            .as_str()
            .ok_or_else(|| ClientError::BadResponse {
                url: url.to_string(),
                message: "no access_token in the token response".to_string(),
            })?;
        self.config.access_token = Some(access.to_string());
        if let Some(refresh) = json["refresh_token"].as_str() {
            self.config.refresh_token = Some(refresh.to_string());
        }
        self.save_config()
    }

    /// Sends the request `build` makes with the bearer token; on 401 refreshes the token
    /// once and sends it again.
    fn send_authorized(
        &mut self,
        build: impl Fn(&reqwest::blocking::Client, &str) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let token = self
            .config
            .access_token
            .clone()
            .ok_or(ClientError::NotLoggedIn)?;
        let resp = build(&self.http, &format!("bearer {token}"))
            .send()
            .map_err(ClientError::connection)?;
        if resp.status().as_u16() != 401 || !self.can_renew() {
            return Ok(resp);
        }
        self.refresh()?;
        let token = self
            .config
            .access_token
            .clone()
            .ok_or(ClientError::NotLoggedIn)?;
        build(&self.http, &format!("bearer {token}"))
            .send()
            .map_err(ClientError::connection)
    }

    /// Any request, answered as is (`wf curl`).
    pub fn raw(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Option<String>,
    ) -> Result<RawResponse, ClientError> {
        let url = self.url(path)?;
        let resp = self.send_authorized(|http, auth| {
            let mut req = http
                .request(method.clone(), &url)
                .header(AUTHORIZATION, auth);
            let has_content_type = headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
            if body.is_some() && !has_content_type {
                req = req.header("Content-Type", "application/json");
            }
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(body) = &body {
                req = req.body(body.clone());
            }
            req
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().map_err(ClientError::connection)?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// A JSON request; non-2xx answers become [`ApiError`]s.
    pub fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse, ClientError> {
        let url = self.url(path)?;
        let resp = self.send_authorized(|http, auth| {
            let req = http
                .request(method.clone(), &url)
                .header(AUTHORIZATION, auth)
                .header("Accept", "application/json");
            match body {
                Some(body) => req.json(body),
                None => req,
            }
        })?;
        json_response(&url, resp)
    }

    pub fn get(&mut self, path: &str) -> Result<Value, ClientError> {
        Ok(self.call(Method::GET, path, None)?.json)
    }

    /// An authorized GET of `url` whose body is read as it arrives (Server-Sent Events):
    /// each read may wait [`STREAM_READ_TIMEOUT`], the whole response has no deadline.
    /// Non-2xx answers are [`ApiError`]s.
    pub fn get_stream(&mut self, url: &str) -> Result<Response, ClientError> {
        // The client-wide timeout of a blocking client bounds each read, not the whole
        // response, unlike a per-request timeout; so streams get a client of their own.
        let stream_http = reqwest::blocking::Client::builder()
            .timeout(STREAM_READ_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("wf/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::connection)?;
        let url = self.url(url)?;
        let resp = self.send_authorized(|_, auth| {
            stream_http
                .get(&url)
                .header(AUTHORIZATION, auth)
                .header("Accept", "text/event-stream")
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.text().map_err(ClientError::connection)?;
            return Err(ApiError::from_response(status, &body).into());
        }
        Ok(resp)
    }

    /// GET that answers `None` on 404.
    pub fn get_optional(&mut self, path: &str) -> Result<Option<Value>, ClientError> {
        match self.get(path) {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Api(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn patch(&mut self, path: &str, body: &Value) -> Result<Value, ClientError> {
        Ok(self.call(Method::PATCH, path, Some(body))?.json)
    }

    /// POST; when the API answers with a job, waits for it.
    pub fn post(&mut self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let resp = self.call(Method::POST, path, Some(body))?;
        if resp.status == 202 {
            if let Some(job) = &resp.location {
                self.wait_for_job(job)?;
            }
        }
        Ok(resp.json)
    }

    /// DELETE, waiting for the delete job to finish.
    pub fn delete(&mut self, path: &str) -> Result<(), ClientError> {
        let resp = self.call(Method::DELETE, path, None)?;
        if let Some(job) = resp.location.filter(|_| resp.status == 202) {
            self.wait_for_job(&job)?;
        }
        Ok(())
    }

    /// Polls a `/v3/jobs/...` resource until it is COMPLETE (or FAILED: its first error).
    pub fn wait_for_job(&mut self, job: &str) -> Result<(), ClientError> {
        let deadline = Instant::now() + JOB_TIMEOUT;
        let mut poll = Poll::new();
        loop {
            let job_json = self.get(job)?;
            match job_json["state"].as_str().unwrap_or_default() {
                "COMPLETE" => return Ok(()),
                "FAILED" => {
                    let body = serde_json::json!({"errors": job_json["errors"]}).to_string();
                    let mut err = ApiError::from_response(422, &body);
                    if err.title.is_empty() {
                        err.detail = format!("Job {} failed.", job_json["guid"]);
                    }
                    return Err(err.into());
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout {
                    what: format!("job {job}"),
                    seconds: JOB_TIMEOUT.as_secs(),
                });
            }
            poll.wait();
        }
    }

    /// Every resource of a list endpoint, following `pagination.next`.
    pub fn list(&mut self, path: &str) -> Result<Vec<Value>, ClientError> {
        let mut all = Vec::new();
        let mut next = Some(path.to_string());
        // Bounded so a server that loops its `next` links cannot hang the CLI.
        for _ in 0..1000 {
            let Some(page_path) = next.take() else { break };
            let page = self.get(&page_path)?;
            if let Some(resources) = page["resources"].as_array() {
                all.extend(resources.iter().cloned());
            }
            next = page["pagination"]["next"]["href"]
                .as_str()
                .map(str::to_string);
        }
        Ok(all)
    }

    /// The first resource of a list query, if any.
    pub fn first(&mut self, path: &str) -> Result<Option<Value>, ClientError> {
        let page = self.get(path)?;
        Ok(page["resources"].get(0).cloned())
    }

    /// Uploads `zip` as the bits of package `package_guid` (multipart field `bits`),
    /// with `resources`: the files the resource cache holds, left out of the zip.
    pub fn upload_bits(
        &mut self,
        package_guid: &str,
        zip: Vec<u8>,
        resources: &[Value],
    ) -> Result<Value, ClientError> {
        let path = format!("/v3/packages/{package_guid}/upload");
        let resources = Value::from(resources.to_vec()).to_string();
        Ok(self.upload_zip(&path, "app.zip", zip, &resources)?.json)
    }

    /// Uploads `zip` (named `filename`) as the bits of buildpack `guid`, waiting for
    /// the upload's job when the API answers with one.
    pub fn upload_buildpack(
        &mut self,
        guid: &str,
        filename: &str,
        zip: Vec<u8>,
    ) -> Result<Value, ClientError> {
        self.upload_with_job(&format!("/v3/buildpacks/{guid}/upload"), filename, zip)
    }

    /// Uploads the droplet tgz `tgz` as the bits of droplet `guid`, waiting for the
    /// upload's job.
    pub fn upload_droplet(&mut self, guid: &str, tgz: Vec<u8>) -> Result<Value, ClientError> {
        self.upload_with_job(&format!("/v3/droplets/{guid}/upload"), "droplet.tgz", tgz)
    }

    fn upload_with_job(
        &mut self,
        path: &str,
        filename: &str,
        bits: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let resp = self.upload_zip(path, filename, bits, "[]")?;
        if let Some(job) = resp.location.as_deref().filter(|_| resp.status == 202) {
            self.wait_for_job(job)?;
        }
        Ok(resp.json)
    }

    /// The bits `path` leads to (following the API's redirect to a signed link).
    pub fn download(&mut self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = self.url(path)?;
        let resp = self.send_authorized(|http, auth| http.get(&url).header(AUTHORIZATION, auth))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.text().map_err(ClientError::connection)?;
            return Err(ApiError::from_response(status, &body).into());
        }
        Ok(resp.bytes().map_err(ClientError::connection)?.to_vec())
    }

    /// POSTs `zip` to `path` as the multipart field `bits`, with the field `resources`
    /// (JSON).
    fn upload_zip(
        &mut self,
        path: &str,
        filename: &str,
        zip: Vec<u8>,
        resources: &str,
    ) -> Result<ApiResponse, ClientError> {
        let url = self.url(path)?;
        let resp = self.send_authorized(|http, auth| {
            let bits = reqwest::blocking::multipart::Part::bytes(zip.clone())
                .file_name(filename.to_string())
                .mime_str("application/zip")
                .unwrap_or_else(|_| reqwest::blocking::multipart::Part::bytes(zip.clone()));
            let form = reqwest::blocking::multipart::Form::new()
                .text("resources", resources.to_string())
                .part("bits", bits);
            http.post(&url)
                .header(AUTHORIZATION, auth)
                .header("Accept", "application/json")
                .multipart(form)
        })?;
        json_response(&url, resp)
    }
}

fn json_response(url: &str, resp: Response) -> Result<ApiResponse, ClientError> {
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().map_err(ClientError::connection)?;
    if !(200..300).contains(&status) {
        return Err(ApiError::from_response(status, &body).into());
    }
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).map_err(|e| ClientError::BadResponse {
            url: url.to_string(),
            message: e.to_string(),
        })?
    };
    Ok(ApiResponse {
        status,
        location,
        json,
    })
}

/// The `user_name` (else `client_id`) claim of a JWT, read without verifying it: only
/// for display.
pub fn token_user_name(token: &str) -> Option<String> {
    token_claim(token, "user_name").or_else(|| token_claim(token, "client_id"))
}

/// A string claim of a JWT, read without verifying it (the CLI only displays it).
pub fn token_claim(token: &str, claim: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims[claim].as_str().map(str::to_string)
}

/// Waits between polls of something the platform is doing: 25 ms at first, doubling up
/// to 500 ms, so quick operations return quickly and slow ones cost few requests.
pub(crate) struct Poll {
    next: Duration,
}

impl Poll {
    const FIRST: Duration = Duration::from_millis(25);
    const MAX: Duration = Duration::from_millis(500);

    pub(crate) fn new() -> Poll {
        Poll { next: Self::FIRST }
    }

    pub(crate) fn wait(&mut self) {
        std::thread::sleep(self.next);
        self.next = (self.next * 2).min(Self::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_account_is_told_apart_from_bad_credentials() {
        let locked = r#"{"error":"unauthorized","error_description":"Your account has been locked because of too many failed attempts to login."}"#;
        assert_eq!(
            password_rejected(locked).to_string(),
            "Your account has been locked because of too many failed attempts to login."
        );
        let bad = r#"{"error":"invalid_grant","error_description":"Bad credentials"}"#;
        assert!(matches!(
            password_rejected(bad),
            ClientError::BadCredentials
        ));
        assert!(matches!(
            password_rejected("not json"),
            ClientError::BadCredentials
        ));
    }

    #[test]
    fn parses_cf_errors() {
        let body =
            r#"{"errors":[{"code":10010,"title":"CF-ResourceNotFound","detail":"App not found"}]}"#;
        let e = ApiError::from_response(404, body);
        assert_eq!(
            e,
            ApiError {
                status: 404,
                code: 10010,
                title: "CF-ResourceNotFound".into(),
                detail: "App not found".into()
            }
        );
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "App not found");
    }

    #[test]
    fn parses_uaa_errors_and_junk() {
        let e = ApiError::from_response(
            401,
            r#"{"error":"unauthorized","error_description":"Bad credentials"}"#,
        );
        assert_eq!(
            (e.title.as_str(), e.detail.as_str()),
            ("unauthorized", "Bad credentials")
        );
        let e = ApiError::from_response(502, "upstream down");
        assert_eq!(
            (e.code, e.detail.as_str()),
            (0, "The server answered 502: upstream down")
        );
        let e = ApiError::from_response(500, "");
        assert!(e.detail.contains("500"), "{e}");
    }

    #[test]
    fn reads_the_root_links() {
        let root = serde_json::json!({"links": {
            "uaa": {"href": "http://uaa/"},
            "log_cache": {"href": "http://lc"},
            "cloud_controller_v3": {"href": "http://api/v3", "meta": {"version": "3.180.0"}}
        }});
        let info = RootInfo::from_json(&root);
        assert_eq!(info.uaa.as_deref(), Some("http://uaa"));
        assert_eq!(info.log_cache.as_deref(), Some("http://lc"));
        assert_eq!(info.version.as_deref(), Some("3.180.0"));
        let login_only = serde_json::json!({"links": {"login": {"href": "http://login"}}});
        assert_eq!(
            RootInfo::from_json(&login_only).uaa.as_deref(),
            Some("http://login")
        );
    }

    #[test]
    fn reads_the_user_from_a_token() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"user_name":"admin","client_id":"cf"}"#);
        assert_eq!(
            token_user_name(&format!("h.{payload}.s")).as_deref(),
            Some("admin")
        );
        assert_eq!(token_user_name("garbage"), None);
        assert_eq!(token_user_name("a.!!!.c"), None);
    }

    #[test]
    fn resolves_paths_against_the_endpoint() {
        let config = Config {
            api: Some("http://api".into()),
            ..Config::default()
        };
        let client = Client::new(config, PathBuf::from("/nonexistent")).unwrap();
        assert_eq!(client.url("/v3/apps").unwrap(), "http://api/v3/apps");
        assert_eq!(client.url("v3/apps").unwrap(), "http://api/v3/apps");
        assert_eq!(client.url("http://other/x").unwrap(), "http://other/x");
        let client = Client::new(Config::default(), PathBuf::from("/nonexistent")).unwrap();
        assert!(matches!(client.url("/v3"), Err(ClientError::NoApi)));
    }
}
