-- Browser logins (the session behind the JSESSIONID cookie) and the one-time codes of
-- the authorization_code grant. Both are stored by the SHA-256 of their secret value.

CREATE TABLE login_sessions (
            id_hash TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            password_fingerprint TEXT NOT NULL,
            auth_time BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        );

CREATE TABLE authorization_codes (
            code_hash TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            redirect_uri TEXT NOT NULL,
            scopes TEXT NOT NULL,
            code_challenge TEXT NOT NULL,
            code_challenge_method TEXT NOT NULL,
            auth_time BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        );
