//! Audit events: who did what to which resource, with CF's event types
//! (`audit.app.create`, `audit.app.start`, `audit.route.create`, ...), recorded by the
//! handlers that act, and `app.crash` recorded by the crash watcher (CF's tps-watcher)
//! from the BBS's crash events. Listing them is [`crate::api`]'s `audit_events`.
//!
//! An event is written after its action succeeded; failing to write it is logged and
//! does not undo or fail the action.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use wf_bbs::{BbsEvent, CF_APPS_DOMAIN};

use crate::auth::User;
use crate::db::{self, App, Process, Space};
use crate::Controller;

/// Who acted.
#[derive(Debug, Clone)]
pub struct Actor {
    pub guid: String,
    pub kind: &'static str,
    pub name: String,
}

impl Actor {
    /// The caller of an API request: a user, or an OAuth client acting for itself.
    pub fn of(user: &User) -> Actor {
        let claims = &user.claims;
        if claims.is_user() {
            Actor {
                guid: claims.user_id.clone(),
                kind: "user",
                name: claims.user_name.clone(),
            }
        } else {
            Actor {
                guid: claims.client_id.clone(),
                kind: "user",
                name: claims.client_id.clone(),
            }
        }
    }
}

/// What was acted on.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: &'a str,
    pub guid: &'a str,
    pub name: &'a str,
}

impl<'a> Target<'a> {
    pub fn app(app: &'a App) -> Target<'a> {
        Target {
            kind: "app",
            guid: &app.guid,
            name: &app.name,
        }
    }
}

/// Records `event` by the caller of a request.
pub async fn record(
    controller: &Controller,
    user: &User,
    event: &str,
    target: Target<'_>,
    space_guid: Option<&str>,
    data: Value,
) {
    record_as(
        controller,
        &Actor::of(user),
        event,
        target,
        space_guid,
        data,
    )
    .await;
}

/// Records `event` of `app` (its target, in its space) by the caller of a request.
pub async fn record_app(controller: &Controller, user: &User, event: &str, app: &App, data: Value) {
    record(
        controller,
        user,
        event,
        Target::app(app),
        Some(&app.space_guid),
        data,
    )
    .await;
}

/// Records `event` by `actor`; the org is the space's.
pub async fn record_as(
    controller: &Controller,
    actor: &Actor,
    event: &str,
    target: Target<'_>,
    space_guid: Option<&str>,
    data: Value,
) {
    let org_guid = match space_guid {
        Some(guid) => match controller.db.get::<Space>(guid).await {
            Ok(space) => space.map(|s| s.organization_guid),
            Err(e) => {
                tracing::error!(event, error = %e, "cannot record an audit event");
                return;
            }
        },
        // An org's own events name the org as their target.
        None if target.kind == "organization" => Some(target.guid.to_string()),
        None => None,
    };
    let scope = (space_guid, org_guid.as_deref());
    if let Err(e) = insert(controller, actor, event, target, scope, data).await {
        tracing::error!(event, target = target.guid, error = %e, "cannot record an audit event");
    }
}

/// Records an event of a space in its org: the space may be gone by now.
pub async fn record_space_event(controller: &Controller, user: &User, event: &str, space: &Space) {
    let target = Target {
        kind: "space",
        guid: &space.guid,
        name: &space.name,
    };
    let scope = (
        Some(space.guid.as_str()),
        Some(space.organization_guid.as_str()),
    );
    let actor = Actor::of(user);
    if let Err(e) = insert(controller, &actor, event, target, scope, json!({})).await {
        tracing::error!(event, target = target.guid, error = %e, "cannot record an audit event");
    }
}

async fn insert(
    controller: &Controller,
    actor: &Actor,
    event: &str,
    target: Target<'_>,
    (space_guid, org_guid): (Option<&str>, Option<&str>),
    data: Value,
) -> Result<(), sqlx::Error> {
    let now = db::now();
    let opt = |v: Option<String>| v.map_or(db::Arg::Null, db::Arg::Text);
    controller
        .db
        .insert(
            "audit_events",
            vec![
                ("guid", db::new_guid().into()),
                ("type", event.into()),
                ("actor_guid", actor.guid.clone().into()),
                ("actor_type", actor.kind.into()),
                ("actor_name", actor.name.clone().into()),
                ("target_guid", target.guid.into()),
                ("target_type", target.kind.into()),
                ("target_name", target.name.into()),
                ("data", data.to_string().into()),
                ("space_guid", opt(space_guid.map(str::to_string))),
                ("organization_guid", opt(org_guid.map(str::to_string))),
                ("created_at", now.clone().into()),
                ("updated_at", now.into()),
            ],
        )
        .await
}

/// CF's tps-watcher: records `app.crash` for every crash of an app instance the BBS
/// reports, until cancelled.
pub async fn watch_crashes(controller: Arc<Controller>, cancel: CancellationToken) {
    let mut events = controller.bbs.subscribe();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(BbsEvent::ActualLrpCrashed { actual_lrp })
                if actual_lrp.key.domain == CF_APPS_DOMAIN =>
            {
                if let Err(e) = record_crash(&controller, &actual_lrp).await {
                    tracing::warn!(error = %e, "cannot record an app crash");
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "the crash watcher lagged behind the BBS events");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn record_crash(controller: &Controller, lrp: &wf_bbs::ActualLrp) -> Result<(), sqlx::Error> {
    let process_guid = crate::nsync::process_guid_of(&lrp.key.process_guid);
    let Some(process) = controller.db.get::<Process>(process_guid).await? else {
        return Ok(());
    };
    let Some(app) = controller.db.get::<App>(&process.app_guid).await? else {
        return Ok(());
    };
    let actor = Actor {
        guid: app.guid.clone(),
        kind: "app",
        name: app.name.clone(),
    };
    let data = json!({
        "index": lrp.key.index,
        "instance": lrp.instance_key.instance_guid,
        "cell_id": lrp.instance_key.cell_id,
        "exit_description": lrp.crash_reason,
        "crash_count": lrp.crash_count,
        "crash_timestamp": lrp.since,
        "reason": "CRASHED",
        "process_type": process.process_type,
    });
    record_as(
        controller,
        &actor,
        "app.crash",
        Target::app(&app),
        Some(&app.space_guid),
        data,
    )
    .await;
    Ok(())
}
