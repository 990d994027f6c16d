//! Admin buildpacks (`/v3/buildpacks`): the ordered list staging detects with, and the
//! bits of custom buildpacks. Everyone signed in reads them; only admins write.
//!
//! Positions are CF's: 1..n without gaps; creating at a position (or moving to one)
//! shifts the buildpacks from there down one, deleting closes the gap, and a position
//! past the end means last. The built-in buildpacks (`wf_buildpacks::BUILT_IN`, which
//! cells implement by name) are seeded at start ([`crate::db::Db::ensure_built_in_buildpacks`]);
//! admins may move, disable, lock or delete them like any other. Uploading bits to a
//! built-in buildpack is allowed (as CF lets admins replace a system buildpack's bits):
//! from then on it is a custom buildpack of that name, fetched by cells from its zip.
//!
//! The app side lives here too: the names an app or build asks for must be existing
//! buildpacks ([`check_names`]), and [`for_staging`] picks what a staging runs.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    accepted_with, cf_time, created, finished_job, href, metadata, ok, paginated, ApiResult, Ctl,
    JsonBody, ListParams, STACK,
};
use crate::auth::User;
use crate::blobstore::{self, BitsError};
use crate::db::{self, Arg, Buildpack, BuildpackState, Filter};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::Controller;

/// The longest buildpack name CF accepts.
const MAX_NAME_LEN: usize = 250;

fn present(controller: &Controller, buildpack: &Buildpack) -> Value {
    let path = format!("/v3/buildpacks/{}", buildpack.guid);
    json!({
        "guid": buildpack.guid,
        "created_at": cf_time(&buildpack.created_at),
        "updated_at": cf_time(&buildpack.updated_at),
        "name": buildpack.name,
        "stack": buildpack.stack,
        "state": buildpack.state.as_str(),
        "filename": buildpack.filename,
        "position": buildpack.position,
        "enabled": buildpack.enabled,
        "locked": buildpack.locked,
        "lifecycle": "buildpack",
        "metadata": metadata(),
        "links": {
            "self": href(controller, &path),
            "upload": {"href": format!("{}{path}/upload", controller.base_url), "method": "POST"},
        },
    })
}

/// Buildpack `guid` as CF shows it, with its labels and annotations.
async fn show_buildpack(controller: &Controller, guid: &str) -> Result<Value, ApiError> {
    let shown = present(controller, &load(controller, guid).await?);
    Ok(metadata::filled(&controller.db, "buildpacks", shown).await?)
}

async fn load(controller: &Controller, guid: &str) -> Result<Buildpack, ApiError> {
    controller
        .db
        .get(guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Buildpack"))
}

/// Every buildpack, by position.
async fn all_by_position(controller: &Controller) -> Result<Vec<Buildpack>, ApiError> {
    let mut all: Vec<Buildpack> = controller.db.find(Filter::new()).await?;
    all.sort_by_key(|b| b.position);
    Ok(all)
}

pub async fn list(State(controller): Ctl, _user: User, params: ListParams) -> ApiResult {
    let filter = params.filter(Filter::new(), "names", "name");
    let filter = params.filter(filter, "stacks", "stack");
    let filter = params.label_selector(filter, "buildpacks")?;
    let mut page = params.page.clone();
    if params.values("order_by").is_none() {
        page.order_by = "position".into();
    }
    let (total, buildpacks) = controller.db.list::<Buildpack>(filter, &page).await?;
    let mut resources: Vec<Value> = buildpacks.iter().map(|b| present(&controller, b)).collect();
    metadata::fill(&controller.db, "buildpacks", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, _user: User, Path(guid): Path<String>) -> ApiResult {
    Ok(ok(show_buildpack(&controller, &guid).await?))
}

#[derive(Debug, Deserialize)]
pub struct CreateBuildpack {
    name: Option<String>,
    stack: Option<String>,
    position: Option<i64>,
    enabled: Option<bool>,
    locked: Option<bool>,
    metadata: Option<Value>,
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::unprocessable(format!(
            "Name is too long (maximum is {MAX_NAME_LEN} characters)"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::unprocessable(
            "Name can only contain alphanumeric characters, '_' and '-'",
        ));
    }
    Ok(())
}

fn validate_position(position: i64) -> Result<(), ApiError> {
    if position < 1 {
        return Err(ApiError::unprocessable(
            "Position must be greater than or equal to 1",
        ));
    }
    Ok(())
}

fn already_exists(name: &str, stack: Option<&str>) -> ApiError {
    ApiError::unprocessable(match stack {
        Some(stack) => format!("Buildpack with name '{name}' and stack '{stack}' already exists"),
        None => format!("Buildpack with name '{name}' and an unassigned stack already exists"),
    })
}

/// Whether another buildpack than `guid` has `name` on `stack`.
async fn name_taken(
    controller: &Controller,
    name: &str,
    stack: Option<&str>,
    guid: Option<&str>,
) -> Result<bool, ApiError> {
    let same_name: Vec<Buildpack> = controller.db.find(Filter::new().eq("name", name)).await?;
    Ok(same_name
        .iter()
        .any(|b| b.stack.as_deref() == stack && Some(b.guid.as_str()) != guid))
}

/// `order` (guids by position) with `guid` moved to, or inserted at, the 1-based
/// `position`; a position past the end is the end.
fn placed(order: &[String], guid: &str, position: i64) -> Vec<String> {
    let mut order: Vec<String> = order.iter().filter(|g| *g != guid).cloned().collect();
    let index = usize::try_from(position.saturating_sub(1))
        .unwrap_or(0)
        .min(order.len());
    order.insert(index, guid.to_string());
    order
}

/// Gives the buildpacks in `order` positions 1..n, writing only those that change.
async fn renumber(
    controller: &Controller,
    before: &[Buildpack],
    order: &[String],
) -> Result<(), ApiError> {
    for (index, guid) in order.iter().enumerate() {
        let position = i64::try_from(index + 1).unwrap_or(i64::MAX);
        let unchanged = before
            .iter()
            .any(|b| &b.guid == guid && b.position == position);
        if !unchanged {
            controller
                .db
                .update("buildpacks", guid, vec![("position", Arg::Int(position))])
                .await?;
        }
    }
    Ok(())
}

fn guids(buildpacks: &[Buildpack]) -> Vec<String> {
    buildpacks.iter().map(|b| b.guid.clone()).collect()
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateBuildpack>,
) -> ApiResult {
    user.require_admin()?;
    let name = body.name.unwrap_or_default();
    validate_name(&name)?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let stack = body.stack.filter(|s| !s.is_empty());
    if let Some(stack) = stack.as_deref().filter(|s| *s != STACK) {
        return Err(ApiError::unprocessable(format!(
            "Stack '{stack}' does not exist"
        )));
    }
    if let Some(position) = body.position {
        validate_position(position)?;
    }
    let _positions = controller.buildpack_positions.lock().await;
    if name_taken(&controller, &name, stack.as_deref(), None).await? {
        return Err(already_exists(&name, stack.as_deref()));
    }
    let before = all_by_position(&controller).await?;
    let guid = db::new_guid();
    let order = placed(&guids(&before), &guid, body.position.unwrap_or(i64::MAX));
    let position = order
        .iter()
        .position(|g| *g == guid)
        .unwrap_or(before.len())
        + 1;
    let now = db::now();
    let inserted = controller
        .db
        .insert(
            "buildpacks",
            vec![
                ("guid", guid.clone().into()),
                ("name", name.clone().into()),
                ("stack", stack.clone().into()),
                (
                    "position",
                    Arg::Int(i64::try_from(position).unwrap_or(i64::MAX)),
                ),
                ("enabled", Arg::Int(i64::from(body.enabled.unwrap_or(true)))),
                ("locked", Arg::Int(i64::from(body.locked.unwrap_or(false)))),
                ("state", BuildpackState::AwaitingUpload.into()),
                ("filename", Arg::Null),
                ("checksum", Arg::Null),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => {
            return Err(already_exists(&name, stack.as_deref()))
        }
        other => other?,
    }
    renumber(&controller, &before, &order).await?;
    labels.apply(&controller.db, "buildpacks", &guid).await?;
    Ok(created(show_buildpack(&controller, &guid).await?))
}

#[derive(Debug, Deserialize)]
pub struct UpdateBuildpack {
    name: Option<String>,
    position: Option<i64>,
    enabled: Option<bool>,
    locked: Option<bool>,
    metadata: Option<Value>,
}

pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<UpdateBuildpack>,
) -> ApiResult {
    user.require_admin()?;
    let _positions = controller.buildpack_positions.lock().await;
    let buildpack = load(&controller, &guid).await?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    let mut changes = Vec::new();
    if let Some(name) = body.name.filter(|n| *n != buildpack.name) {
        validate_name(&name)?;
        let stack = buildpack.stack.as_deref();
        if name_taken(&controller, &name, stack, Some(&guid)).await? {
            return Err(already_exists(&name, stack));
        }
        changes.push(("name", Arg::from(name)));
    }
    if let Some(enabled) = body.enabled {
        changes.push(("enabled", Arg::Int(i64::from(enabled))));
    }
    if let Some(locked) = body.locked {
        changes.push(("locked", Arg::Int(i64::from(locked))));
    }
    if let Some(position) = body.position {
        validate_position(position)?;
    }
    if !changes.is_empty() {
        let updated = controller.db.update("buildpacks", &guid, changes).await;
        match updated {
            Err(e) if db::is_unique_violation(&e) => {
                let stack = buildpack.stack.as_deref();
                return Err(already_exists(&buildpack.name, stack));
            }
            other => other?,
        };
    }
    if let Some(position) = body.position {
        let before = all_by_position(&controller).await?;
        let order = placed(&guids(&before), &guid, position);
        renumber(&controller, &before, &order).await?;
    }
    labels.apply(&controller.db, "buildpacks", &guid).await?;
    Ok(ok(show_buildpack(&controller, &guid).await?))
}

/// `DELETE /v3/buildpacks/:guid`: the record (closing the gap in the positions) and
/// its zip; answers a job, as CF does.
pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    user.require_admin()?;
    let _positions = controller.buildpack_positions.lock().await;
    let buildpack = load(&controller, &guid).await?;
    controller
        .db
        .delete_resources("buildpacks", Filter::new().eq("guid", &buildpack.guid))
        .await?;
    let rest = all_by_position(&controller).await?;
    renumber(&controller, &rest, &guids(&rest)).await?;
    controller
        .blobs
        .delete(&controller.blobs.buildpack_key(&buildpack.guid))
        .await?;
    finished_job(&controller, "buildpack.delete").await
}

/// `POST /v3/buildpacks/:guid/upload`: multipart with `bits`, a buildpack zip. The
/// bits are checked and stored before the answer, a `202` with a finished job (CF's
/// shape) and the READY buildpack.
pub async fn upload(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    user.require_admin()?;
    let buildpack = load(&controller, &guid).await?;
    if buildpack.locked {
        return Err(ApiError::unprocessable(format!(
            "Buildpack '{}' is locked: unlock it before uploading new bits.",
            buildpack.name
        )));
    }
    let mut multipart = multipart.map_err(|e| ApiError::MessageParse(e.body_text()))?;
    let tmp = controller.blobs.temp_path();
    let received = super::packages::receive_bits(&controller, &mut multipart, &tmp).await;
    let result = match received {
        Ok(Some((filename, sha256))) => store(&controller, &guid, &tmp, filename, sha256).await,
        Ok(None) => Err(ApiError::unprocessable(
            "Upload must include bits: the 'bits' field is missing.",
        )),
        Err(e) => Err(e),
    };
    if let Err(e) = controller.blobs.remove_temp(&tmp).await {
        tracing::warn!(path = %tmp.display(), error = %e, "cannot remove an upload's scratch file");
    }
    result?;
    let buildpack = show_buildpack(&controller, &guid).await?;
    accepted_with(&controller, "buildpack.upload", buildpack).await
}

/// Checks the zip at `upload` and puts it under the buildpack's key; the buildpack is
/// READY with its file name and checksum.
async fn store(
    controller: &Controller,
    guid: &str,
    upload: &std::path::Path,
    filename: String,
    sha256: String,
) -> Result<(), ApiError> {
    let (path, name) = (upload.to_path_buf(), filename.clone());
    tokio::task::spawn_blocking(move || blobstore::validate_buildpack(&path, &name))
        .await
        .map_err(|e| ApiError::Internal(format!("buildpack check: {e}")))?
        .map_err(|e| match e {
            BitsError::Io(cause) => ApiError::Internal(cause),
            refused => ApiError::unprocessable(refused.to_string()),
        })?;
    controller
        .blobs
        .put_file(upload, &controller.blobs.buildpack_key(guid), &sha256)
        .await?;
    controller
        .db
        .update(
            "buildpacks",
            guid,
            vec![
                ("state", BuildpackState::Ready.into()),
                ("filename", filename.into()),
                ("checksum", sha256.into()),
            ],
        )
        .await?;
    Ok(())
}

/// The buildpack `name` stands for: the one on the `wasm` stack, else the one for any
/// stack.
fn named<'a>(all: &'a [Buildpack], name: &str) -> Option<&'a Buildpack> {
    let mut candidates: Vec<&Buildpack> = all.iter().filter(|b| b.name == name).collect();
    candidates.sort_by_key(|b| b.stack.is_none());
    candidates.into_iter().next()
}

fn unknown(name: &str) -> ApiError {
    ApiError::unprocessable(format!(
        "Buildpack \"{name}\" must be an existing admin buildpack or a valid git URI"
    ))
}

/// Checks that every name an app's or a build's lifecycle asks for is an admin
/// buildpack (git URIs are not fetched here, so they are refused too).
pub async fn check_names(controller: &Controller, names: &[String]) -> Result<(), ApiError> {
    if names.is_empty() {
        return Ok(());
    }
    let all: Vec<Buildpack> = controller
        .db
        .find(Filter::new().any_of("name", names))
        .await?;
    match names.iter().find(|n| named(&all, n).is_none()) {
        Some(name) => Err(unknown(name)),
        None => Ok(()),
    }
}

/// What a staging runs, and whether detect is skipped: the `names` the build asks for,
/// in order (each must exist, be enabled and have bits), or else every enabled READY
/// buildpack by position.
pub async fn for_staging(
    controller: &Controller,
    names: &[String],
) -> Result<(Vec<Buildpack>, bool), ApiError> {
    let all = all_by_position(controller).await?;
    if names.is_empty() {
        let usable = all
            .into_iter()
            .filter(|b| b.enabled && b.state == BuildpackState::Ready)
            .collect();
        return Ok((usable, false));
    }
    let mut chosen = Vec::with_capacity(names.len());
    for name in names {
        let buildpack = named(&all, name).ok_or_else(|| unknown(name))?;
        if !buildpack.enabled {
            return Err(ApiError::unprocessable(format!(
                "Buildpack \"{name}\" is disabled: an admin must enable it before apps stage with it."
            )));
        }
        if buildpack.state != BuildpackState::Ready {
            return Err(ApiError::unprocessable(format!(
                "Buildpack \"{name}\" has no bits: an admin must upload them before apps stage with it."
            )));
        }
        chosen.push(buildpack.clone());
    }
    Ok((chosen, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(guids: &[&str]) -> Vec<String> {
        guids.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn placing_shifts_the_others_down() {
        let abc = order(&["a", "b", "c"]);
        // A new one: at its position, or last when past the end.
        assert_eq!(placed(&abc, "n", 1), order(&["n", "a", "b", "c"]));
        assert_eq!(placed(&abc, "n", 2), order(&["a", "n", "b", "c"]));
        assert_eq!(placed(&abc, "n", 4), order(&["a", "b", "c", "n"]));
        assert_eq!(placed(&abc, "n", i64::MAX), order(&["a", "b", "c", "n"]));
        // A move up or down, or past the end.
        assert_eq!(placed(&abc, "c", 1), order(&["c", "a", "b"]));
        assert_eq!(placed(&abc, "a", 2), order(&["b", "a", "c"]));
        assert_eq!(placed(&abc, "a", 3), order(&["b", "c", "a"]));
        assert_eq!(placed(&abc, "a", 99), order(&["b", "c", "a"]));
        assert_eq!(placed(&abc, "b", 2), abc);
        assert_eq!(placed(&[], "n", 5), order(&["n"]));
    }

    #[test]
    fn buildpack_names_are_words() {
        assert!(validate_name("my_buildpack-2").is_ok());
        for bad in ["", "has space", "a/b", "é", &"x".repeat(251)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_position(0).is_err());
        assert!(validate_position(1).is_ok());
    }

    #[test]
    fn a_name_means_the_wasm_stack_one_first() {
        let buildpack = |guid: &str, stack: Option<&str>| Buildpack {
            guid: guid.into(),
            name: "bp".into(),
            stack: stack.map(str::to_string),
            position: 1,
            enabled: true,
            locked: false,
            state: BuildpackState::Ready,
            filename: None,
            checksum: None,
            created_at: String::new(),
            updated_at: String::new(),
        };
        let all = [buildpack("any", None), buildpack("wasm", Some(STACK))];
        assert_eq!(named(&all, "bp").map(|b| b.guid.as_str()), Some("wasm"));
        assert_eq!(named(&all[..1], "bp").map(|b| b.guid.as_str()), Some("any"));
        assert!(named(&all, "other").is_none());
    }
}
