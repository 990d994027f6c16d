-- Feature flags an admin changed (the others keep CF's defaults) and the running and
-- staging environment variable groups (issue 6).

CREATE TABLE feature_flags (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, enabled BIGINT NOT NULL,
        custom_error_message TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE environment_variable_groups (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, variables TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
