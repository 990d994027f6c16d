//! The broker's catalog (`GET /v2/catalog`): one service, `postgresql`, with one plan,
//! `shared` (a database on the configured server). Their ids are fixed forever: the
//! platform stores them with every instance.

use serde_json::{json, Value};

pub const SERVICE_ID: &str = "2fe506bd-c97b-4e1b-9b04-784f16e33f30";
pub const SERVICE_NAME: &str = "postgresql";
pub const PLAN_ID: &str = "86464d57-9865-4b39-841b-3c4988390c7b";
pub const PLAN_NAME: &str = "shared";

/// The catalog's JSON, as the spec shapes it.
pub fn catalog() -> Value {
    json!({
        "services": [{
            "id": SERVICE_ID,
            "name": SERVICE_NAME,
            "description": "PostgreSQL databases: one database per instance, one login role per binding",
            "bindable": true,
            "instances_retrievable": true,
            "bindings_retrievable": true,
            "plan_updateable": false,
            "tags": ["postgresql", "relational"],
            "metadata": {"displayName": "PostgreSQL"},
            "plans": [{
                "id": PLAN_ID,
                "name": PLAN_NAME,
                "description": "A database of its own on a shared PostgreSQL server",
                "free": true,
                "bindable": true,
                "plan_updateable": false,
            }],
        }],
    })
}

/// Checks that `service_id` and `plan_id` are this catalog's; the error says which is not.
pub fn check_ids(service_id: &str, plan_id: &str) -> Result<(), String> {
    if service_id != SERVICE_ID {
        return Err(format!("unknown service_id {service_id:?}"));
    }
    if plan_id != PLAN_ID {
        return Err(format!(
            "unknown plan_id {plan_id:?} of service {SERVICE_NAME}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_offers_one_bindable_service_with_one_plan() {
        let catalog = catalog();
        let services = catalog["services"].as_array().unwrap();
        assert_eq!(services.len(), 1);
        assert_eq!(services[0]["id"], SERVICE_ID);
        assert_eq!(services[0]["bindable"], true);
        assert_eq!(services[0]["plan_updateable"], false);
        assert_eq!(services[0]["plans"][0]["id"], PLAN_ID);
        assert_eq!(services[0]["plans"][0]["name"], PLAN_NAME);
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_ids(SERVICE_ID, PLAN_ID).is_ok());
        assert!(check_ids("nope", PLAN_ID)
            .unwrap_err()
            .contains("service_id"));
        assert!(check_ids(SERVICE_ID, "nope")
            .unwrap_err()
            .contains("plan_id"));
    }
}
