-- App usage events (issue 6): what ran, how big, from when, for billing and capacity
-- reports (`/v3/app_usage_events`), one row per process and state change.

CREATE TABLE app_usage_events (
        guid TEXT PRIMARY KEY, state TEXT NOT NULL, previous_state TEXT,
        app_guid TEXT NOT NULL, app_name TEXT NOT NULL,
        process_guid TEXT NOT NULL, process_type TEXT NOT NULL,
        instance_count BIGINT NOT NULL, previous_instance_count BIGINT,
        memory_in_mb_per_instance BIGINT NOT NULL, previous_memory_in_mb_per_instance BIGINT,
        space_guid TEXT NOT NULL, space_name TEXT NOT NULL, organization_guid TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE INDEX app_usage_events_created ON app_usage_events (created_at, guid);
