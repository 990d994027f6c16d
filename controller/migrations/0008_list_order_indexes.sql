-- Lists are paged in (created_at, guid) order (CC's default order): these indexes let a
-- page be read in order instead of sorting the whole table (GET /v3/apps with 10,000
-- apps went from a full sort per page to reading the page).

CREATE INDEX organizations_created ON organizations (created_at, guid);

CREATE INDEX spaces_created ON spaces (created_at, guid);

CREATE INDEX apps_created ON apps (created_at, guid);

CREATE INDEX processes_created ON processes (created_at, guid);

CREATE INDEX packages_created ON packages (created_at, guid);

CREATE INDEX builds_created ON builds (created_at, guid);

CREATE INDEX droplets_created ON droplets (created_at, guid);

CREATE INDEX routes_created ON routes (created_at, guid);

CREATE INDEX tasks_created ON tasks (created_at, guid);

CREATE INDEX roles_created ON roles (created_at, guid);

CREATE INDEX deployments_created ON deployments (created_at, guid);
