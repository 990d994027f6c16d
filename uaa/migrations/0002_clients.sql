-- OAuth clients, SCIM fields of users, groups (scopes), and failed logins for lockout.

CREATE TABLE oauth_clients (
            client_id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            authorities TEXT NOT NULL,
            grant_types TEXT NOT NULL,
            redirect_uris TEXT NOT NULL,
            access_token_validity BIGINT,
            refresh_token_validity BIGINT,
            last_modified BIGINT NOT NULL
        );

ALTER TABLE users ADD COLUMN given_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN family_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN active BIGINT NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_modified BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN password_last_modified BIGINT NOT NULL DEFAULT 0;

CREATE TABLE scim_groups (
            id TEXT PRIMARY KEY,
            display_name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );

CREATE TABLE failed_logins (
            user_id TEXT NOT NULL,
            at BIGINT NOT NULL
        );

CREATE INDEX failed_logins_user ON failed_logins (user_id, at);
