-- CF tasks (`cf run-task`): one-off runs of an app's droplet. `sequence_id` counts
-- an app's tasks from 1; `failure_reason` is set once a task FAILED.

CREATE TABLE tasks (
        guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL, name TEXT NOT NULL, command TEXT NOT NULL,
        state TEXT NOT NULL, failure_reason TEXT, sequence_id BIGINT NOT NULL,
        memory_in_mb BIGINT NOT NULL, disk_in_mb BIGINT NOT NULL, droplet_guid TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (app_guid, sequence_id));

CREATE INDEX tasks_app ON tasks (app_guid);

CREATE INDEX tasks_state ON tasks (state);
