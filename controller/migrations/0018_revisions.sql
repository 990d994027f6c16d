-- Revisions (issue 6): what an app runs, numbered per app (droplet, encrypted
-- environment variables, the processes' custom commands). A process records the
-- revision its current version runs; a deployment records the revision it deploys and
-- the one it replaces, and how many instances it brings up at a time.

CREATE TABLE revisions (
        guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL, version BIGINT NOT NULL,
        droplet_guid TEXT NOT NULL, environment_variables TEXT NOT NULL,
        commands TEXT NOT NULL, description TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE UNIQUE INDEX revisions_app_version ON revisions (app_guid, version);

ALTER TABLE processes ADD COLUMN revision_guid TEXT;

ALTER TABLE deployments ADD COLUMN revision_guid TEXT;

ALTER TABLE deployments ADD COLUMN previous_revision_guid TEXT;

ALTER TABLE deployments ADD COLUMN max_in_flight BIGINT NOT NULL DEFAULT 1;
