-- Audit events (issue 6): who did what to which resource, in which space and org, as
-- CF records them (`audit.app.create`, `audit.app.start`, `app.crash`, ...).

CREATE TABLE audit_events (
        guid TEXT PRIMARY KEY, type TEXT NOT NULL,
        actor_guid TEXT NOT NULL, actor_type TEXT NOT NULL, actor_name TEXT NOT NULL,
        target_guid TEXT NOT NULL, target_type TEXT NOT NULL, target_name TEXT NOT NULL,
        data TEXT NOT NULL, space_guid TEXT, organization_guid TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE INDEX audit_events_target ON audit_events (target_guid);

CREATE INDEX audit_events_space ON audit_events (space_guid);

CREATE INDEX audit_events_created ON audit_events (created_at);
