-- The director's database: uploaded releases and stemcells, cloud configs, deployments
-- with their instances (VM, disk, applied spec), and tasks with their logs. JSON is
-- kept in TEXT columns; times are Unix seconds.

CREATE TABLE releases (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        -- the jobs (spec and template sources) and packages (name, sha1, blobstore id)
        jobs TEXT NOT NULL,
        packages TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );

CREATE TABLE stemcells (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        operating_system TEXT NOT NULL,
        cid TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );

CREATE TABLE cloud_configs (
        id BIGINT PRIMARY KEY,
        content TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );

CREATE TABLE deployments (
        name TEXT PRIMARY KEY,
        manifest TEXT NOT NULL
    );

CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        deployment TEXT NOT NULL,
        instance_group TEXT NOT NULL,
        instance_index BIGINT NOT NULL,
        az TEXT NOT NULL,
        ip TEXT NOT NULL,
        -- 'started' or 'stopped': what the operator wants
        state TEXT NOT NULL,
        agent_id TEXT,
        vm_cid TEXT,
        disk_cid TEXT,
        -- what the VM was created with, for recreating it as it was
        vm_config TEXT,
        -- the apply spec last given to the agent
        spec TEXT,
        UNIQUE (deployment, instance_group, instance_index)
    );

CREATE TABLE tasks (
        id BIGINT PRIMARY KEY,
        state TEXT NOT NULL,
        description TEXT NOT NULL,
        deployment TEXT,
        result TEXT,
        log TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT
    );
