-- Organization and space quotas (issue 6), as CF's quota definitions: NULL limits are
-- unlimited. An org has one organization quota (`organizations.quota_guid`); a space
-- may have one space quota of its org (`spaces.quota_guid`). Every org starts on CF's
-- `default` quota (cloud_controller_ng's default quota definition: 10 GB of memory,
-- 100 service instances, 1000 routes, no reserved ports, paid plans allowed).

CREATE TABLE organization_quotas (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        total_memory_in_mb BIGINT, per_process_memory_in_mb BIGINT, total_instances BIGINT,
        per_app_tasks BIGINT, log_rate_limit_in_bytes_per_second BIGINT,
        paid_services_allowed BIGINT NOT NULL, total_service_instances BIGINT,
        total_service_keys BIGINT, total_routes BIGINT, total_reserved_ports BIGINT,
        total_domains BIGINT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE space_quotas (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL, organization_guid TEXT NOT NULL,
        total_memory_in_mb BIGINT, per_process_memory_in_mb BIGINT, total_instances BIGINT,
        per_app_tasks BIGINT, log_rate_limit_in_bytes_per_second BIGINT,
        paid_services_allowed BIGINT NOT NULL, total_service_instances BIGINT,
        total_service_keys BIGINT, total_routes BIGINT, total_reserved_ports BIGINT,
        -- always NULL: CF's space quotas limit no domains (one column list for both)
        total_domains BIGINT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (organization_guid, name));

ALTER TABLE organizations ADD COLUMN quota_guid TEXT;

ALTER TABLE spaces ADD COLUMN quota_guid TEXT;

INSERT INTO organization_quotas (guid, name, total_memory_in_mb, paid_services_allowed,
        total_service_instances, total_routes, total_reserved_ports, created_at, updated_at)
        VALUES ('5f8b6a2e-3d4c-4e1a-9b7f-0c2d1e3f4a5b', 'default', 10240, 1, 100, 1000, 0,
        '2026-11-25T00:00:00.000000Z', '2026-11-25T00:00:00.000000Z');

UPDATE organizations SET quota_guid = '5f8b6a2e-3d4c-4e1a-9b7f-0c2d1e3f4a5b';

CREATE INDEX organizations_quota ON organizations (quota_guid);

CREATE INDEX spaces_quota ON spaces (quota_guid);
