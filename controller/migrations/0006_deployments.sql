-- Rolling deployments (issue 6): the web process's new version scales up one instance
-- at a time while its previous version (the LRP `old_lrp_guid`) scales down.

CREATE TABLE deployments (
        guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL, process_guid TEXT NOT NULL,
        state TEXT NOT NULL, status_value TEXT NOT NULL, status_reason TEXT NOT NULL,
        strategy TEXT NOT NULL, droplet_guid TEXT NOT NULL, previous_droplet_guid TEXT,
        old_lrp_guid TEXT NOT NULL, new_instances BIGINT NOT NULL,
        old_instances BIGINT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE INDEX deployments_app ON deployments (app_guid);

CREATE INDEX deployments_state ON deployments (state);
