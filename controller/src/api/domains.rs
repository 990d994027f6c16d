//! Domains (`/v3/domains`): shared domains (every org's; admins create and delete them)
//! and private domains (one org's; its managers create and delete them, under the
//! `private_domain_creation` flag). A private domain is seen only by those who see its
//! org, and routes on it are made only in its org's spaces. Deleting a domain deletes
//! its routes.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::routes::delete_route;
use super::{
    cf_time, created, finished_job, href, metadata, ok, paginated, relationship_guid, ApiResult,
    Ctl, JsonBody, ListParams,
};
use crate::auth::User;
use crate::db::{self, Arg, Domain, Filter, Org, Route};
use crate::error::ApiError;
use crate::metadata::{self, MetadataUpdate};
use crate::Controller;

fn present(controller: &Controller, domain: &Domain) -> Value {
    json!({
        "guid": domain.guid,
        "created_at": cf_time(&domain.created_at),
        "updated_at": cf_time(&domain.updated_at),
        "name": domain.name,
        "internal": domain.internal,
        "router_group": null,
        "supported_protocols": ["http"],
        "relationships": {
            "organization": {"data": domain.organization_guid.as_ref().map(|g| json!({"guid": g}))},
            "shared_organizations": {"data": []},
        },
        "metadata": metadata(),
        "links": {
            "self": href(controller, &format!("/v3/domains/{}", domain.guid)),
            "route_reservations": href(controller, &format!("/v3/domains/{}/route_reservations", domain.guid)),
        },
    })
}

/// Shared domains and the private domains of orgs the user sees.
fn visible(user: &User, filter: Filter) -> Filter {
    if user.sees_everything() {
        return filter;
    }
    filter.null_or_any_of("organization_guid", &user.visible_org_guids())
}

async fn load(controller: &Controller, user: &User, guid: &str) -> Result<Domain, ApiError> {
    controller
        .db
        .find::<Domain>(visible(user, Filter::new().eq("guid", guid)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Domain"))
}

pub async fn list(State(controller): Ctl, user: User, params: ListParams) -> ApiResult {
    let filter = params.filter(visible(&user, Filter::new()), "names", "name");
    let filter = params.filter(filter, "guids", "guid");
    let filter = params.filter(filter, "organization_guids", "organization_guid");
    let filter = params.label_selector(filter, "domains")?;
    let (total, domains) = controller.db.list::<Domain>(filter, &params.page).await?;
    let mut resources: Vec<Value> = domains.iter().map(|d| present(&controller, d)).collect();
    metadata::fill(&controller.db, "domains", &mut resources).await?;
    Ok(paginated(&controller, &params, total, resources))
}

/// The domain `guid` as CF shows it, with its labels and annotations.
async fn show_domain(controller: &Controller, user: &User, guid: &str) -> Result<Value, ApiError> {
    let domain = present(controller, &load(controller, user, guid).await?);
    Ok(metadata::filled(&controller.db, "domains", domain).await?)
}

pub async fn show(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    Ok(ok(show_domain(&controller, &user, &guid).await?))
}

/// `PATCH /v3/domains/:guid`: a domain's metadata, by those who may delete it.
pub async fn update(
    State(controller): Ctl,
    user: User,
    Path(guid): Path<String>,
    JsonBody(body): JsonBody<super::MetadataBody>,
) -> ApiResult {
    let domain = load(&controller, &user, &guid).await?;
    require_owner(&user, &domain)?;
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    labels
        .apply(&controller.db, "domains", &domain.guid)
        .await?;
    Ok(ok(show_domain(&controller, &user, &guid).await?))
}

/// Admins own shared domains, an org's managers its private ones.
fn require_owner(user: &User, domain: &Domain) -> Result<(), ApiError> {
    match &domain.organization_guid {
        None => user.require_admin(),
        Some(org) if user.can_manage_org(org) => Ok(()),
        Some(_) => Err(ApiError::not_authorized()),
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateDomain {
    name: Option<String>,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    relationships: Value,
    metadata: Option<Value>,
}

/// A domain name as CF accepts it: dot-separated DNS labels, at least two.
fn valid_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

pub async fn create(
    State(controller): Ctl,
    user: User,
    JsonBody(body): JsonBody<CreateDomain>,
) -> ApiResult {
    let name = body.name.unwrap_or_default().trim().to_ascii_lowercase();
    let org_guid = relationship_guid(
        &json!({"relationships": body.relationships}),
        "organization",
    );
    match &org_guid {
        None => user.require_admin()?,
        Some(org) => {
            let visible = user.can_see_org(org) && controller.db.get::<Org>(org).await?.is_some();
            if !visible {
                return Err(ApiError::unprocessable(
                    "Invalid organization. Ensure the organization exists and you have access to it.",
                ));
            }
            if !user.can_manage_org(org) {
                return Err(ApiError::not_authorized());
            }
            super::feature_flags::require(&controller, &user, "private_domain_creation").await?;
        }
    }
    let labels = MetadataUpdate::parse(body.metadata.as_ref())?;
    if !valid_name(&name) {
        return Err(ApiError::unprocessable(format!(
            "Name '{name}' must be a domain: two or more dot-separated labels of lowercase letters, digits and dashes."
        )));
    }
    if body.internal && org_guid.is_some() {
        return Err(ApiError::unprocessable(
            "Cannot associate an internal domain with an organization",
        ));
    }
    let taken = || ApiError::unprocessable(format!("The domain name \"{name}\" is already in use"));
    if !controller
        .db
        .find::<Domain>(Filter::new().eq("name", &name))
        .await?
        .is_empty()
    {
        return Err(taken());
    }
    let guid = db::new_guid();
    let now = db::now();
    let inserted = controller
        .db
        .insert(
            "domains",
            vec![
                ("guid", guid.clone().into()),
                ("name", name.clone().into()),
                ("internal", Arg::Int(i64::from(body.internal))),
                ("organization_guid", org_guid.map_or(Arg::Null, Arg::Text)),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await;
    match inserted {
        Err(e) if db::is_unique_violation(&e) => return Err(taken()),
        other => other?,
    }
    labels.apply(&controller.db, "domains", &guid).await?;
    Ok(created(show_domain(&controller, &user, &guid).await?))
}

pub async fn delete(State(controller): Ctl, user: User, Path(guid): Path<String>) -> ApiResult {
    let domain = load(&controller, &user, &guid).await?;
    require_owner(&user, &domain)?;
    for route in controller
        .db
        .find::<Route>(Filter::new().eq("domain_guid", &domain.guid))
        .await?
    {
        delete_route(&controller, &route).await?;
    }
    controller
        .db
        .delete_resources("domains", Filter::new().eq("guid", &domain.guid))
        .await?;
    finished_job(&controller, "domain.delete").await
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn domain_names_are_dns_names() {
        assert!(valid_name("apps.example.com"));
        assert!(valid_name("my-org.io"));
        for bad in [
            "localhost",
            "a..b",
            "-a.b",
            "a-.b",
            "UPPER.case",
            "a b.c",
            "",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
