-- Locket's locks: a singleton's key, who holds it, and until when (Unix ns). A holder
-- refreshes its lock well within the TTL; anyone may take an expired one.

CREATE TABLE locks (
        lock_key TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
