//! Stacks (`/v3/stacks`): Wasmfoundry has one, `wasm` — droplets are WebAssembly and
//! run on any cell, whatever its operating system. Admins label and annotate it.

use axum::extract::{Path, State};
use serde_json::{json, Value};
use sqlx::any::AnyRow;

use super::{href, metadata, ok, paginated, ApiResult, Ctl, JsonBody, ListParams, STACK};
use crate::auth::User;
use crate::db::Record;
use crate::error::ApiError;
use crate::metadata::MetadataUpdate;
use crate::Controller;

/// The `wasm` stack's guid (fixed: there is only one, on every installation).
macro_rules! stack_guid {
    () => {
        "6f1a6b8e-2d4c-4b8a-9c53-7a9e0b1f2c3d"
    };
}
const STACK_GUID: &str = stack_guid!();
/// When the stack came to be (it has no record).
const STACK_CREATED: &str = "2026-01-01T00:00:00Z";

/// The stack as a one-row table, so that its list takes its filters and
/// `label_selector` in SQL like every other list.
struct StackRow;

impl Record for StackRow {
    const TABLE: &'static str = concat!(
        "(SELECT '",
        stack_guid!(),
        "' AS guid, 'wasm' AS name, '2026-01-01T00:00:00.000000Z' AS created_at, \
         '2026-01-01T00:00:00.000000Z' AS updated_at) AS stacks"
    );
    const COLUMNS: &'static str = "guid";
    fn from_row(_row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(StackRow)
    }
}

fn present(controller: &Controller) -> Value {
    json!({
        "guid": STACK_GUID,
        "created_at": STACK_CREATED,
        "updated_at": STACK_CREATED,
        "name": STACK,
        "description": "WebAssembly components and modules (WASI), run by wasmtime",
        "build_rootfs_image": STACK,
        "run_rootfs_image": STACK,
        "default": true,
        "state": "ACTIVE",
        "metadata": metadata(),
        "links": {"self": href(controller, &format!("/v3/stacks/{STACK_GUID}"))},
    })
}

/// The stack as CF shows it, with its labels and annotations.
async fn show_stack(controller: &Controller) -> Result<Value, ApiError> {
    Ok(crate::metadata::filled(&controller.db, "stacks", present(controller)).await?)
}

pub async fn list(State(controller): Ctl, _user: User, params: ListParams) -> ApiResult {
    let filter = params.filter(crate::db::Filter::new(), "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.label_selector(filter, "stacks")?;
    let (total, rows) = controller.db.list::<StackRow>(filter, &params.page).await?;
    let mut resources: Vec<Value> = rows.iter().map(|_| present(&controller)).collect();
    crate::metadata::fill(&controller.db, "stacks", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, _user: User, Path(guid): Path<String>) -> ApiResult {
    if guid != STACK_GUID {
        return Err(ApiError::not_found("Stack"));
    }
    Ok(ok(show_stack(&controller).await?))
}

/// `PATCH /v3/stacks/:guid` (admins): the stack's metadata.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    if guid != STACK_GUID {
        return Err(ApiError::not_found("Stack"));
    }
    user.require_admin()?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels.apply(&controller.db, "stacks", STACK_GUID).await?;
    Ok(ok(show_stack(&controller).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_table_is_the_stack() {
        assert!(StackRow::TABLE.contains(&format!("'{STACK_GUID}' AS guid")));
        assert!(StackRow::TABLE.contains(&format!("'{STACK}' AS name")));
    }
}
