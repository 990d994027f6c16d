//! Isolation segments (`/v3/isolation_segments`): named sets of cells, the cells whose
//! placement tag is the segment's name. Admins create them and entitle orgs to them; an
//! org's managers pick the org's default segment and each space's segment among those
//! the org is entitled to. An app's instances, tasks and stagings run in its space's
//! segment, else its org's default, else on the untagged cells (CF's `shared` segment):
//! [`for_space`] is that choice, which nsync, tasks and staging turn into placement tags.
//!
//! Who may do what, after CF: admins create, rename, delete, entitle and revoke; users
//! see the segments entitled to their orgs or assigned to their spaces (admins and
//! global readers see all); org managers (and admins) set the org's default and their
//! spaces' segments.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cf_time, created, href, load_space, metadata, ok, paginated, relationship, to_many_guids,
    ApiResult, Ctl, JsonBody, ListParams,
};
use crate::auth::User;
use crate::db::{self, Arg, Filter, IsolationSegment, Org, SegmentEntitlement, Space};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::Controller;

/// The `shared` segment's guid, CF's: the untagged cells.
pub const SHARED_SEGMENT_GUID: &str = "933b4c58-120b-499a-b85d-4b6fc9e2903b";
/// The longest name (CC's string columns).
const MAX_NAME: usize = 255;

/// The segment whose cells run the apps of `space_guid`: the space's own, else its
/// org's default; `None` for the shared segment (untagged cells).
pub async fn for_space(
    controller: &Controller,
    space_guid: &str,
) -> Result<Option<IsolationSegment>, sqlx::Error> {
    let filter = Filter::new()
        .clause(
            "guid = (SELECT COALESCE(s.isolation_segment_guid, o.default_isolation_segment_guid) \
             FROM spaces s JOIN organizations o ON o.guid = s.organization_guid WHERE s.guid = ?)",
            vec![space_guid.into()],
        )
        .clause("guid <> ?", vec![SHARED_SEGMENT_GUID.into()]);
    Ok(controller
        .db
        .find::<IsolationSegment>(filter)
        .await?
        .into_iter()
        .next())
}

/// The placement tags of work in `segment`: its name, or none on the shared cells.
pub fn placement_tags(segment: Option<&IsolationSegment>) -> Vec<String> {
    segment.map(|s| s.name.clone()).into_iter().collect()
}

#[derive(Debug, Deserialize)]
pub struct SegmentBody {
    name: Option<Value>,
    metadata: Option<Value>,
}

fn valid_name(name: &Value) -> Result<String, ApiError> {
    let Some(name) = name.as_str() else {
        return Err(ApiError::unprocessable("Name must be a string"));
    };
    if name.trim().is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "Isolation Segment names can only contain non-blank unicode characters",
        ));
    }
    if name.chars().count() > MAX_NAME {
        return Err(ApiError::unprocessable(format!(
            "Name is too long (maximum is {MAX_NAME} characters)"
        )));
    }
    Ok(name.to_string())
}

fn name_taken() -> ApiError {
    ApiError::unprocessable("Isolation Segment names are case insensitive and must be unique")
}

/// Refuses `name` when another segment has it, whatever its case.
async fn check_name_free(
    controller: &Controller,
    name: &str,
    except: Option<&str>,
) -> Result<(), ApiError> {
    let same = Filter::new().clause("LOWER(name) = LOWER(?)", vec![name.into()]);
    let clash = controller.db.find::<IsolationSegment>(same).await?;
    if clash.iter().any(|s| Some(s.guid.as_str()) != except) {
        return Err(name_taken());
    }
    Ok(())
}

fn present(controller: &Controller, segment: &IsolationSegment) -> Value {
    let link = |suffix: &str| {
        href(
            controller,
            &format!("/v3/isolation_segments/{}{suffix}", segment.guid),
        )
    };
    json!({
        "guid": segment.guid,
        "created_at": cf_time(&segment.created_at),
        "updated_at": cf_time(&segment.updated_at),
        "name": segment.name,
        "metadata": metadata(),
        "links": {
            "self": link(""),
            "organizations": link("/organizations"),
        },
    })
}

async fn shown(controller: &Controller, segment: &IsolationSegment) -> Result<Value, ApiError> {
    let segment = present(controller, segment);
    Ok(metadata::filled(&controller.db, "isolation_segments", segment).await?)
}

/// A segment the user can see (else 404).
async fn load(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<IsolationSegment, ApiError> {
    let filter = user.scope_isolation_segments(Filter::new().eq("guid", guid));
    controller
        .db
        .find::<IsolationSegment>(filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Isolation segment"))
}

/// A segment for an admin's change: 403 for others, then 404 if it does not exist.
async fn load_to_change(
    controller: &Controller,
    user: &User,
    guid: &str,
) -> Result<IsolationSegment, ApiError> {
    user.require_admin()?;
    load(controller, user, guid).await
}

/// The orgs `segment` is entitled to.
async fn entitled_orgs(controller: &Controller, segment: &str) -> Result<Vec<String>, ApiError> {
    let filter = Filter::new().eq("isolation_segment_guid", segment);
    let mut orgs: Vec<String> = controller
        .db
        .select::<SegmentEntitlement>(filter)
        .await?
        .into_iter()
        .map(|e| e.organization_guid)
        .collect();
    orgs.sort();
    Ok(orgs)
}

async fn is_entitled(controller: &Controller, segment: &str, org: &str) -> Result<bool, ApiError> {
    Ok(entitled_orgs(controller, segment)
        .await?
        .iter()
        .any(|o| o == org))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = user.scope_isolation_segments(Filter::new());
    let filter = params.filter(filter, "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter_in(
        filter,
        "organization_guids",
        "guid",
        "SELECT isolation_segment_guid FROM isolation_segment_organizations \
         WHERE organization_guid IN ({})",
    );
    let filter = params.label_selector(filter, "isolation_segments")?;
    let (total, segments) = controller
        .db
        .list::<IsolationSegment>(filter, &params.page)
        .await?;
    let mut resources: Vec<Value> = segments.iter().map(|s| present(&controller, s)).collect();
    metadata::fill(&controller.db, "isolation_segments", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let segment = load(&controller, &user, &guid).await?;
    Ok(ok(shown(&controller, &segment).await?))
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<SegmentBody>,
) -> ApiResult {
    user.require_admin()?;
    let name = match &body.name {
        None => return Err(ApiError::unprocessable("Name can't be blank")),
        Some(name) => valid_name(name)?,
    };
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    check_name_free(&controller, &name, None).await?;
    let guid = db::new_guid();
    let now = db::now();
    let inserted = controller
        .db
        .insert(
            "isolation_segments",
            vec![
                ("guid", guid.clone().into()),
                ("name", name.into()),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => return Err(name_taken()),
        other => other?,
    }
    labels
        .apply(&controller.db, "isolation_segments", &guid)
        .await?;
    let segment = load(&controller, &user, &guid).await?;
    Ok(created(shown(&controller, &segment).await?))
}

pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<SegmentBody>,
) -> ApiResult {
    let segment = load_to_change(&controller, &user, &guid).await?;
    if segment.guid == SHARED_SEGMENT_GUID {
        return Err(ApiError::unprocessable(format!(
            "Cannot update the {} Isolation Segment",
            segment.name
        )));
    }
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    if let Some(name) = &body.name {
        let name = valid_name(name)?;
        check_name_free(&controller, &name, Some(&segment.guid)).await?;
        match controller
            .db
            .update(
                "isolation_segments",
                &segment.guid,
                vec![("name", name.into())],
            )
            .await
        {
            Err(e) if db::is_unique_violation(&e) => return Err(name_taken()),
            other => other?,
        };
    }
    labels
        .apply(&controller.db, "isolation_segments", &segment.guid)
        .await?;
    let segment = load(&controller, &user, &guid).await?;
    Ok(ok(shown(&controller, &segment).await?))
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let segment = load_to_change(&controller, &user, &guid).await?;
    if segment.guid == SHARED_SEGMENT_GUID {
        return Err(ApiError::unprocessable(format!(
            "Cannot delete the {} Isolation Segment",
            segment.name
        )));
    }
    let spaces = controller
        .db
        .find::<Space>(Filter::new().eq("isolation_segment_guid", &segment.guid))
        .await?;
    if !spaces.is_empty() || !entitled_orgs(&controller, &segment.guid).await?.is_empty() {
        return Err(ApiError::unprocessable(
            "Revoke the Organization entitlements for your Isolation Segment.",
        ));
    }
    controller
        .db
        .delete_resources(
            "isolation_segments",
            Filter::new().eq("guid", &segment.guid),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn orgs_path(segment: &str) -> String {
    format!("/v3/isolation_segments/{segment}/relationships/organizations")
}

/// The entitled orgs the user sees, as a to-many relationship.
async fn orgs_relationship(
    controller: &Controller,
    user: &User,
    segment: &str,
) -> Result<Value, ApiError> {
    let entitled = entitled_orgs(controller, segment).await?;
    let visible: Vec<String> = entitled
        .into_iter()
        .filter(|org| user.can_see_org(org))
        .collect();
    let mut shown = relationship(controller, &orgs_path(segment), &visible);
    shown["links"]["related"] = href(
        controller,
        &format!("/v3/isolation_segments/{segment}/organizations"),
    );
    Ok(shown)
}

pub async fn organizations(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let segment = load(&controller, &user, &guid).await?;
    Ok(ok(
        orgs_relationship(&controller, &user, &segment.guid).await?
    ))
}

/// `GET /v3/isolation_segments/:guid/organizations`: the entitled orgs, as a list of
/// orgs (with the orgs list's filters).
pub async fn list_organizations(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult {
    let segment = load(&controller, &user, &guid).await?;
    let entitled = Filter::new().in_select(
        "guid",
        "SELECT organization_guid FROM isolation_segment_organizations \
         WHERE isolation_segment_guid IN ({})",
        &[segment.guid],
    );
    super::orgs::orgs_page(&controller, &user, &params, entitled).await
}

pub async fn entitle(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let segment = load_to_change(&controller, &user, &guid).await?;
    let guids = to_many_guids(&body)?;
    let found = controller
        .db
        .find::<Org>(Filter::new().any_of("guid", &guids))
        .await?;
    let missing: Vec<&String> = guids
        .iter()
        .filter(|g| !found.iter().any(|o| &o.guid == *g))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::NotFound(format!(
            "Organization guids: {missing:?} cannot be found"
        )));
    }
    let already = entitled_orgs(&controller, &segment.guid).await?;
    for org in found.iter().filter(|o| !already.contains(&o.guid)) {
        let inserted = controller
            .db
            .insert(
                "isolation_segment_organizations",
                vec![
                    ("isolation_segment_guid", segment.guid.clone().into()),
                    ("organization_guid", org.guid.clone().into()),
                    ("created_at", db::now().into()),
                ],
            )
            .await;
        match inserted {
            // Entitled by a concurrent request.
            Err(e) if db::is_unique_violation(&e) => {}
            other => other?,
        }
        // As CF: the shared segment becomes the default of an org that has none.
        if segment.guid == SHARED_SEGMENT_GUID && org.default_isolation_segment_guid.is_none() {
            controller
                .db
                .update(
                    "organizations",
                    &org.guid,
                    vec![("default_isolation_segment_guid", SHARED_SEGMENT_GUID.into())],
                )
                .await?;
        }
    }
    Ok(ok(
        orgs_relationship(&controller, &user, &segment.guid).await?
    ))
}

pub async fn revoke(
    State(controller): Ctl,
    user: User,
    Path((guid, org_guid)): Path<(String, String)>,
) -> ApiResult {
    let segment = load_to_change(&controller, &user, &guid).await?;
    let org = controller
        .db
        .get::<Org>(&org_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Organization"))?;
    if org.default_isolation_segment_guid.as_deref() == Some(segment.guid.as_str()) {
        return Err(ApiError::unprocessable(
            "Cannot remove the entitlement while this Isolation Segment is assigned as the \
             Default Isolation Segment for the Organization.",
        ));
    }
    let assigned = Filter::new()
        .eq("isolation_segment_guid", &segment.guid)
        .eq("organization_guid", &org.guid);
    let spaces = controller.db.find::<Space>(assigned).await?;
    if !spaces.is_empty() {
        let names: Vec<String> = spaces.iter().map(|s| format!("'{}'", s.name)).collect();
        return Err(ApiError::unprocessable(format!(
            "Cannot remove the entitlement while this Isolation Segment is assigned to any \
             Spaces. Currently assigned to: {}",
            names.join(", ")
        )));
    }
    let entitlement = Filter::new()
        .eq("isolation_segment_guid", &segment.guid)
        .eq("organization_guid", &org.guid);
    controller
        .db
        .delete_where("isolation_segment_organizations", entitlement)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn spaces(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let segment = load(&controller, &user, &guid).await?;
    let assigned = user.scope_spaces(
        Filter::new().eq("isolation_segment_guid", &segment.guid),
        "guid",
    );
    let spaces: Vec<String> = controller
        .db
        .find::<Space>(assigned)
        .await?
        .into_iter()
        .map(|s| s.guid)
        .collect();
    let path = format!(
        "/v3/isolation_segments/{}/relationships/spaces",
        segment.guid
    );
    Ok(ok(relationship(&controller, &path, &spaces)))
}

// --- the org's default and the space's segment ---

/// A to-one relationship to a segment, as CF shows it.
fn to_one_segment(controller: &Controller, path: &str, segment: Option<&str>) -> Value {
    let mut links = json!({"self": href(controller, path)});
    if let Some(segment) = segment {
        links["related"] = href(controller, &format!("/v3/isolation_segments/{segment}"));
    }
    json!({"data": segment.map(|guid| json!({"guid": guid})), "links": links})
}

/// The `data.guid` of a to-one relationship body (`null` unsets it).
fn to_one_guid(body: &Value) -> Result<Option<String>, ApiError> {
    match body.get("data") {
        Some(Value::Null) => Ok(None),
        Some(data) => match data.get("guid").and_then(Value::as_str) {
            Some(guid) => Ok(Some(guid.to_string())),
            None => Err(ApiError::unprocessable(
                "Data must be an object with a guid",
            )),
        },
        None => Err(ApiError::unprocessable(
            "Data must be an object with a guid",
        )),
    }
}

fn default_path(org: &str) -> String {
    format!("/v3/organizations/{org}/relationships/default_isolation_segment")
}

fn space_path(space: &str) -> String {
    format!("/v3/spaces/{space}/relationships/isolation_segment")
}

/// An org the user can see (else 404).
async fn load_org(controller: &Controller, user: &User, guid: &str) -> Result<Org, ApiError> {
    controller
        .db
        .get::<Org>(guid)
        .await?
        .filter(|org| user.can_see_org(&org.guid))
        .ok_or_else(|| ApiError::not_found("Organization"))
}

pub async fn show_org_default(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let org = load_org(&controller, &user, &guid).await?;
    let segment = org.default_isolation_segment_guid.as_deref();
    Ok(ok(to_one_segment(
        &controller,
        &default_path(&org.guid),
        segment,
    )))
}

pub async fn set_org_default(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let org = load_org(&controller, &user, &guid).await?;
    if !user.can_manage_org(&org.guid) {
        return Err(ApiError::not_authorized());
    }
    let segment = to_one_guid(&body)?;
    if let Some(segment) = &segment {
        if !is_entitled(&controller, segment, &org.guid).await? {
            return Err(ApiError::unprocessable(format!(
                "Unable to assign isolation segment with guid '{segment}'. Ensure it has been \
                 entitled to the organization."
            )));
        }
    }
    controller
        .db
        .update(
            "organizations",
            &org.guid,
            vec![("default_isolation_segment_guid", Arg::from(segment.clone()))],
        )
        .await?;
    Ok(ok(to_one_segment(
        &controller,
        &default_path(&org.guid),
        segment.as_deref(),
    )))
}

pub async fn show_space_segment(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
) -> ApiResult {
    let space = load_space(&controller, &user, &guid).await?;
    let segment = space.isolation_segment_guid.as_deref();
    Ok(ok(to_one_segment(
        &controller,
        &space_path(&space.guid),
        segment,
    )))
}

pub async fn set_space_segment(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let space = load_space(&controller, &user, &guid).await?;
    if !user.can_manage_org(&space.organization_guid) {
        return Err(ApiError::not_authorized());
    }
    let segment = to_one_guid(&body)?;
    if let Some(segment) = &segment {
        if !is_entitled(&controller, segment, &space.organization_guid).await? {
            return Err(ApiError::unprocessable(format!(
                "Unable to assign isolation segment with guid '{segment}'. Ensure it has been \
                 entitled to the organization that this space belongs to."
            )));
        }
    }
    controller
        .db
        .update(
            "spaces",
            &space.guid,
            vec![("isolation_segment_guid", Arg::from(segment.clone()))],
        )
        .await?;
    Ok(ok(to_one_segment(
        &controller,
        &space_path(&space.guid),
        segment.as_deref(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_as_cf_checks_them() {
        assert_eq!(valid_name(&json!("iso-1")).unwrap(), "iso-1");
        let detail = |v: Value| valid_name(&v).unwrap_err().to_string();
        assert_eq!(detail(json!(" ")), "Name can't be blank");
        assert_eq!(detail(json!(3)), "Name must be a string");
        assert_eq!(
            detail(json!("a\tb")),
            "Isolation Segment names can only contain non-blank unicode characters"
        );
        assert!(detail(json!("x".repeat(256))).contains("too long"));
    }

    #[test]
    fn to_one_bodies_set_or_unset() {
        assert_eq!(
            to_one_guid(&json!({"data": {"guid": "g"}})).unwrap(),
            Some("g".to_string())
        );
        assert_eq!(to_one_guid(&json!({"data": null})).unwrap(), None);
        assert!(to_one_guid(&json!({})).is_err());
        assert!(to_one_guid(&json!({"data": {}})).is_err());
    }

    #[test]
    fn only_a_segment_gives_placement_tags() {
        assert!(placement_tags(None).is_empty());
        let segment = IsolationSegment {
            guid: "g".into(),
            name: "iso1".into(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        assert_eq!(placement_tags(Some(&segment)), ["iso1"]);
    }
}
