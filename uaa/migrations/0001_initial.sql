-- UAA's users (origin `uaa`) with argon2 password hashes and their scopes.

CREATE TABLE users (
            id TEXT PRIMARY KEY,
            username TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            email TEXT NOT NULL,
            scopes TEXT NOT NULL,
            origin TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
