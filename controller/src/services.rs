//! What an app's service bindings give it: `VCAP_SERVICES` in CF's shape (offering
//! label -> bound instances, with the broker's credentials for a managed instance's
//! binding; user-provided instances under `user-provided`), and the syslog drains its
//! logs go to. Drains follow bindings at once: every bind, unbind,
//! drain URL change and controller start hands the app's drains to loggregator.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::api::service_instances::{instance_credentials, MANAGED};
use crate::db::{
    App, Filter, Org, Revision, ServiceBinding, ServiceBroker, ServiceInstance, Space,
};
use crate::error::ApiError;
use crate::service_operations::{decrypt_object, PlanContext};
use crate::Controller;

/// The app's bindings with their instances, oldest first (bindings of managed
/// instances once the broker has bound them).
async fn bound_instances(
    controller: &Controller,
    app_guid: &str,
) -> Result<Vec<(ServiceBinding, ServiceInstance)>, sqlx::Error> {
    let bindings: Vec<ServiceBinding> = controller
        .db
        .find(Filter::new().eq("app_guid", app_guid))
        .await?;
    let guids: Vec<String> = bindings
        .iter()
        .map(|b| b.service_instance_guid.clone())
        .collect();
    let instances: BTreeMap<String, ServiceInstance> = controller
        .db
        .find::<ServiceInstance>(Filter::new().any_of("guid", &guids))
        .await?
        .into_iter()
        .map(|i| (i.guid.clone(), i))
        .collect();
    Ok(bindings
        .into_iter()
        .filter(|b| b.credentials.is_some() || b.operation.kind.is_none())
        .filter_map(|b| {
            let instance = instances.get(&b.service_instance_guid)?.clone();
            Some((b, instance))
        })
        .collect())
}

/// `VCAP_SERVICES` of the app.
pub async fn vcap_services(controller: &Controller, app_guid: &str) -> Result<Value, sqlx::Error> {
    let mut services: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (binding, instance) in bound_instances(controller, app_guid).await? {
        let entry = if instance.kind == MANAGED {
            managed_entry(controller, &binding, &instance).await
        } else {
            user_provided_entry(controller, &binding, &instance)
        };
        let (label, entry) = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // Not fatal for the app, but never silent: a key is missing or wrong.
                tracing::error!(binding = %binding.guid, error = ?e, "leaving a binding out of VCAP_SERVICES");
                continue;
            }
        };
        services.entry(label).or_default().push(entry);
    }
    Ok(json!(services))
}

/// A user-provided instance's entry: its own credentials and drain.
fn user_provided_entry(
    controller: &Controller,
    binding: &ServiceBinding,
    instance: &ServiceInstance,
) -> Result<(String, Value), ApiError> {
    let credentials = instance_credentials(controller, instance)?;
    Ok((
        instance.kind.clone(),
        json!({
            "label": instance.kind,
            "name": binding.name.clone().unwrap_or_else(|| instance.name.clone()),
            "tags": instance.tags,
            "instance_guid": instance.guid,
            "instance_name": instance.name,
            "binding_guid": binding.guid,
            "binding_name": binding.name,
            "credentials": credentials,
            "syslog_drain_url": instance.syslog_drain_url,
            "volume_mounts": [],
        }),
    ))
}

/// A managed instance's entry: labelled with its offering, with its plan, the
/// offering's and the instance's tags, and the binding's credentials and drain.
async fn managed_entry(
    controller: &Controller,
    binding: &ServiceBinding,
    instance: &ServiceInstance,
) -> Result<(String, Value), ApiError> {
    let plan = PlanContext::load(
        controller,
        instance.service_plan_guid.as_deref().unwrap_or_default(),
    )
    .await?;
    let credentials =
        decrypt_object(controller, binding.credentials.as_deref())?.unwrap_or_default();
    let mut tags = plan.offering.tags.clone();
    tags.extend(instance.tags.iter().cloned());
    Ok((
        plan.offering.name.clone(),
        json!({
            "label": plan.offering.name,
            "provider": null,
            "plan": plan.plan.name,
            "name": binding.name.clone().unwrap_or_else(|| instance.name.clone()),
            "tags": tags,
            "instance_guid": instance.guid,
            "instance_name": instance.name,
            "binding_guid": binding.guid,
            "binding_name": binding.name,
            "credentials": credentials,
            "syslog_drain_url": binding.syslog_drain_url,
            "volume_mounts": [],
        }),
    ))
}

/// Hands loggregator the app's current syslog drains (none once it has no bindings
/// with a drain, or is gone).
pub async fn sync_app_drains(controller: &Controller, app_guid: &str) -> Result<(), ApiError> {
    let mut urls = Vec::new();
    let mut hostname = String::new();
    if let Some(app) = controller.db.get::<App>(app_guid).await? {
        for (binding, instance) in bound_instances(controller, app_guid).await? {
            let drain = if instance.kind == MANAGED {
                &binding.syslog_drain_url
            } else {
                &instance.syslog_drain_url
            };
            let Some(url) = drain else {
                continue;
            };
            match url.parse::<wf_loggregator::DrainUrl>() {
                Ok(url) => urls.push(url),
                Err(e) => {
                    tracing::warn!(instance = %instance.guid, error = %e, "skipping an invalid syslog drain")
                }
            }
        }
        hostname = drain_hostname(controller, &app).await?;
    }
    controller.drains.set(app_guid, &hostname, urls);
    Ok(())
}

/// Re-syncs the drains of every app bound to the instance.
pub async fn sync_instance_drains(
    controller: &Controller,
    instance_guid: &str,
) -> Result<(), ApiError> {
    let bindings: Vec<ServiceBinding> = controller
        .db
        .find(Filter::new().eq("service_instance_guid", instance_guid))
        .await?;
    for app_guid in bindings.iter().filter_map(|b| b.app_guid.as_deref()) {
        sync_app_drains(controller, app_guid).await?;
    }
    Ok(())
}

/// Hands loggregator the drains of every bound app (at controller start).
pub async fn sync_all_drains(controller: &Controller) -> Result<(), ApiError> {
    let instances: Vec<ServiceInstance> = controller
        .db
        .find(Filter::new().clause("syslog_drain_url IS NOT NULL", vec![]))
        .await?;
    for instance in instances {
        sync_instance_drains(controller, &instance.guid).await?;
    }
    let bindings: Vec<ServiceBinding> = controller
        .db
        .find(Filter::new().clause("syslog_drain_url IS NOT NULL", vec![]))
        .await?;
    for app_guid in bindings.iter().filter_map(|b| b.app_guid.as_deref()) {
        sync_app_drains(controller, app_guid).await?;
    }
    Ok(())
}

/// CF's drain hostname: `org.space.app`.
async fn drain_hostname(controller: &Controller, app: &App) -> Result<String, sqlx::Error> {
    let space = controller.db.get::<Space>(&app.space_guid).await?;
    let org = match &space {
        Some(space) => controller.db.get::<Org>(&space.organization_guid).await?,
        None => None,
    };
    Ok(format!(
        "{}.{}.{}",
        org.map(|o| o.name).unwrap_or_default(),
        space.map(|s| s.name).unwrap_or_default(),
        app.name
    ))
}

/// Re-encrypts, under the current key, the secrets stored under an older one (after a
/// key rotation): instances' credentials and parameters, bindings' credentials and
/// parameters, brokers' credentials, revisions' environment variables. A value no
/// configured key opens is left for an operator to fix.
pub async fn rotate_credentials(controller: &Controller) -> Result<(), ApiError> {
    let mut sealed: Vec<(&str, &str, String, String)> = Vec::new();
    for instance in controller.db.find::<ServiceInstance>(Filter::new()).await? {
        for (column, value) in [
            ("credentials", instance.credentials),
            ("parameters", instance.parameters),
        ] {
            if let Some(value) = value {
                sealed.push(("service_instances", column, instance.guid.clone(), value));
            }
        }
    }
    for binding in controller.db.find::<ServiceBinding>(Filter::new()).await? {
        for (column, value) in [
            ("credentials", binding.credentials),
            ("parameters", binding.parameters),
        ] {
            if let Some(value) = value {
                sealed.push((
                    "service_credential_bindings",
                    column,
                    binding.guid.clone(),
                    value,
                ));
            }
        }
    }
    for broker in controller.db.find::<ServiceBroker>(Filter::new()).await? {
        sealed.push((
            "service_brokers",
            "authentication",
            broker.guid,
            broker.authentication,
        ));
    }
    for revision in controller.db.find::<Revision>(Filter::new()).await? {
        sealed.push((
            "revisions",
            "environment_variables",
            revision.guid,
            revision.environment_variables,
        ));
    }
    for (table, column, guid, stored) in sealed {
        if !controller.crypto.needs_rotation(&stored) {
            continue;
        }
        let resealed = controller
            .crypto
            .decrypt(&stored)
            .and_then(|plain| controller.crypto.encrypt(&plain));
        match resealed {
            Ok(value) => {
                controller
                    .db
                    .update(table, &guid, vec![(column, value.into())])
                    .await?;
            }
            Err(e) => {
                tracing::error!(table, guid, column, error = %e, "cannot re-encrypt a stored secret")
            }
        }
    }
    Ok(())
}
