-- Labels and annotations of V3 resources (CF's `metadata`). A row belongs to one
-- resource: its type (the table it lives in, since a web process shares its app's guid)
-- and guid. `kind` is `label` or `annotation`; a key without a prefix has prefix ''.

CREATE TABLE resource_metadata (
        resource_type TEXT NOT NULL, resource_guid TEXT NOT NULL, kind TEXT NOT NULL,
        key_prefix TEXT NOT NULL, key_name TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (resource_type, resource_guid, kind, key_prefix, key_name));

-- label_selector looks resources up by key (and value).
CREATE INDEX resource_metadata_selector
        ON resource_metadata (resource_type, kind, key_name, key_prefix, value);
