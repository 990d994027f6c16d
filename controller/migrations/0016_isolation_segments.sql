-- Isolation segments (issue 6): named sets of cells, chosen by the cells' placement tag
-- (the segment's name). Admins entitle orgs to segments; an org may have a default
-- segment among those, and a space one of them of its own. CF's `shared` segment (its
-- fixed guid) exists from the start and stands for the untagged cells.

CREATE TABLE isolation_segments (
        guid TEXT PRIMARY KEY, name TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

-- Names are unique whatever their case, as CF's.
CREATE UNIQUE INDEX isolation_segments_name ON isolation_segments (LOWER(name));

CREATE TABLE isolation_segment_organizations (
        isolation_segment_guid TEXT NOT NULL, organization_guid TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (isolation_segment_guid, organization_guid));

CREATE INDEX isolation_segment_organizations_org
        ON isolation_segment_organizations (organization_guid);

ALTER TABLE organizations ADD COLUMN default_isolation_segment_guid TEXT;

ALTER TABLE spaces ADD COLUMN isolation_segment_guid TEXT;

CREATE INDEX spaces_isolation_segment ON spaces (isolation_segment_guid);

INSERT INTO isolation_segments (guid, name, created_at, updated_at)
        VALUES ('933b4c58-120b-499a-b85d-4b6fc9e2903b', 'shared',
        '2026-11-26T00:00:00.000000Z', '2026-11-26T00:00:00.000000Z');
