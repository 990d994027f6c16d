-- Users and their org and space roles (issue 7). A user's guid is their UAA user id;
-- the controller records a user on their first authenticated request. A role belongs
-- to exactly one of an organization or a space.

CREATE TABLE users (
        guid TEXT PRIMARY KEY, username TEXT NOT NULL, origin TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE TABLE roles (
        guid TEXT PRIMARY KEY, type TEXT NOT NULL, user_guid TEXT NOT NULL,
        organization_guid TEXT, space_guid TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE INDEX roles_user ON roles (user_guid);

CREATE INDEX roles_organization ON roles (organization_guid);

CREATE INDEX roles_space ON roles (space_guid);
