-- Service brokers, their catalogs, plan visibility, and managed service instances and
-- bindings (issue 10). Broker credentials and binding credentials are encrypted
-- (`crypto.rs`). An instance or binding whose broker operation is unfinished has a
-- `pending` step (create, poll, delete, orphan) that the operations runner
-- (`service_operations.rs`) takes up once `due_at` has passed, also after a restart.

CREATE TABLE service_brokers (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, url TEXT NOT NULL,
        authentication TEXT NOT NULL, space_guid TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE service_offerings (
        guid TEXT PRIMARY KEY, service_broker_guid TEXT NOT NULL, broker_id TEXT NOT NULL,
        name TEXT NOT NULL, description TEXT NOT NULL, available BIGINT NOT NULL,
        bindable BIGINT NOT NULL, plan_updateable BIGINT NOT NULL,
        instances_retrievable BIGINT NOT NULL, bindings_retrievable BIGINT NOT NULL,
        tags TEXT NOT NULL, requires TEXT NOT NULL, metadata TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (service_broker_guid, broker_id));

CREATE TABLE service_plans (
        guid TEXT PRIMARY KEY, service_offering_guid TEXT NOT NULL, broker_id TEXT NOT NULL,
        name TEXT NOT NULL, description TEXT NOT NULL, available BIGINT NOT NULL,
        free BIGINT NOT NULL, bindable BIGINT NOT NULL, plan_updateable BIGINT NOT NULL,
        visibility_type TEXT NOT NULL, metadata TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (service_offering_guid, broker_id));

CREATE TABLE service_plan_visibilities (
        guid TEXT PRIMARY KEY, service_plan_guid TEXT NOT NULL, organization_guid TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (service_plan_guid, organization_guid));

ALTER TABLE service_instances ADD COLUMN service_plan_guid TEXT;
ALTER TABLE service_instances ADD COLUMN dashboard_url TEXT;
ALTER TABLE service_instances ADD COLUMN last_operation_type TEXT;
ALTER TABLE service_instances ADD COLUMN last_operation_state TEXT;
ALTER TABLE service_instances ADD COLUMN last_operation_description TEXT;
ALTER TABLE service_instances ADD COLUMN pending TEXT;
ALTER TABLE service_instances ADD COLUMN due_at TEXT;
ALTER TABLE service_instances ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE service_instances ADD COLUMN operation_started_at TEXT;
ALTER TABLE service_instances ADD COLUMN broker_operation TEXT;
ALTER TABLE service_instances ADD COLUMN job_guid TEXT;
ALTER TABLE service_instances ADD COLUMN operation_user_guid TEXT;
ALTER TABLE service_instances ADD COLUMN parameters TEXT;

ALTER TABLE service_credential_bindings ADD COLUMN credentials TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN syslog_drain_url TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN last_operation_type TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN last_operation_state TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN last_operation_description TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN pending TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN due_at TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE service_credential_bindings ADD COLUMN operation_started_at TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN broker_operation TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN job_guid TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN operation_user_guid TEXT;
ALTER TABLE service_credential_bindings ADD COLUMN parameters TEXT;

CREATE INDEX service_instances_pending ON service_instances (pending, due_at);
CREATE INDEX service_credential_bindings_pending ON service_credential_bindings (pending, due_at);
CREATE INDEX service_plans_offering ON service_plans (service_offering_guid);
