-- Admin buildpacks (issues 6 and 8): the ordered list staging detects with. A READY
-- buildpack without a checksum is built in (the cell implements it by name); one with
-- a checksum is a custom zip in the blobstore. Stack is `wasm` or NULL (any stack).

CREATE TABLE buildpacks (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL, stack TEXT, position BIGINT NOT NULL,
        enabled BIGINT NOT NULL DEFAULT 1, locked BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL, filename TEXT, checksum TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (name, stack));

CREATE INDEX buildpacks_position ON buildpacks (position);

-- The sha256 of each app's buildpack cache blob (guid = the app's guid), so that it is
-- checked like every other blob when a cell downloads it.
CREATE TABLE buildpack_caches (
        guid TEXT PRIMARY KEY, checksum TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
