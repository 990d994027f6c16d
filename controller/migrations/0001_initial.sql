-- The CC database. Portable SQL for SQLite and PostgreSQL: TEXT for JSON and
-- timestamps (RFC 3339 UTC with microseconds, so they sort as text), BIGINT for numbers.

CREATE TABLE organizations (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, suspended BIGINT NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE spaces (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL, organization_guid TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (organization_guid, name));

CREATE TABLE apps (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL, space_guid TEXT NOT NULL, state TEXT NOT NULL,
        buildpacks TEXT NOT NULL, stack TEXT NOT NULL, environment_variables TEXT NOT NULL,
        droplet_guid TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (space_guid, name));

CREATE TABLE processes (
        guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL, type TEXT NOT NULL, command TEXT,
        instances BIGINT NOT NULL, memory_in_mb BIGINT NOT NULL, disk_in_mb BIGINT NOT NULL,
        health_check_type TEXT NOT NULL, version TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (app_guid, type));

CREATE TABLE packages (
        guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL, type TEXT NOT NULL, state TEXT NOT NULL,
        checksum TEXT, error TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE builds (
        guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL, package_guid TEXT NOT NULL,
        droplet_guid TEXT NOT NULL, state TEXT NOT NULL, error TEXT, buildpacks TEXT NOT NULL,
        staging_memory_in_mb BIGINT NOT NULL, staging_disk_in_mb BIGINT NOT NULL,
        created_by TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE droplets (
        guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL, package_guid TEXT NOT NULL,
        build_guid TEXT NOT NULL, state TEXT NOT NULL, error TEXT, checksum TEXT,
        process_types TEXT NOT NULL, buildpacks TEXT NOT NULL, stack TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE domains (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, internal BIGINT NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE routes (
        guid TEXT PRIMARY KEY, host TEXT NOT NULL, path TEXT NOT NULL, domain_guid TEXT NOT NULL,
        space_guid TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (host, domain_guid, path));

CREATE TABLE route_destinations (
        guid TEXT PRIMARY KEY, route_guid TEXT NOT NULL, app_guid TEXT NOT NULL,
        process_type TEXT NOT NULL, port BIGINT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE jobs (
        guid TEXT PRIMARY KEY, operation TEXT NOT NULL, state TEXT NOT NULL, errors TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE INDEX apps_space ON apps (space_guid);

CREATE INDEX builds_state ON builds (state);

CREATE INDEX destinations_route ON route_destinations (route_guid);

CREATE INDEX destinations_app ON route_destinations (app_guid);
