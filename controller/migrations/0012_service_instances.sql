-- Service instances and credential bindings (issue 10). User-provided instances keep
-- their credentials here, encrypted (`crypto.rs`: `<key label>:<nonce+ciphertext>`);
-- a binding of a user-provided instance shows the instance's credentials.

CREATE TABLE service_instances (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
        space_guid TEXT NOT NULL, credentials TEXT, syslog_drain_url TEXT,
        route_service_url TEXT, tags TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (space_guid, name));

CREATE INDEX service_instances_list ON service_instances (created_at, guid);

CREATE TABLE service_credential_bindings (
        guid TEXT PRIMARY KEY, name TEXT, type TEXT NOT NULL,
        service_instance_guid TEXT NOT NULL, app_guid TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (service_instance_guid, app_guid));

CREATE INDEX service_credential_bindings_app ON service_credential_bindings (app_guid);
CREATE INDEX service_credential_bindings_list ON service_credential_bindings (created_at, guid);
