-- The BBS tables. Each record is stored whole as JSON beside the columns queries
-- filter on; portable SQL for SQLite and PostgreSQL.

CREATE TABLE desired_lrps (
        process_guid TEXT PRIMARY KEY,
        domain TEXT NOT NULL,
        instances BIGINT NOT NULL,
        modification_tag_epoch TEXT NOT NULL,
        modification_tag_index BIGINT NOT NULL,
        json TEXT NOT NULL
    );

CREATE INDEX desired_lrps_domain ON desired_lrps (domain);

CREATE TABLE actual_lrps (
        process_guid TEXT NOT NULL,
        idx BIGINT NOT NULL,
        presence TEXT NOT NULL,
        domain TEXT NOT NULL,
        instance_guid TEXT NOT NULL,
        cell_id TEXT NOT NULL,
        state TEXT NOT NULL,
        since BIGINT NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (process_guid, idx, presence)
    );

CREATE INDEX actual_lrps_cell ON actual_lrps (cell_id);

CREATE INDEX actual_lrps_domain ON actual_lrps (domain);

CREATE TABLE tasks (
        task_guid TEXT PRIMARY KEY,
        domain TEXT NOT NULL,
        state TEXT NOT NULL,
        cell_id TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        json TEXT NOT NULL
    );

CREATE INDEX tasks_cell ON tasks (cell_id);

CREATE TABLE domains (
        name TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );

CREATE TABLE cell_presences (
        cell_id TEXT PRIMARY KEY,
        json TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
