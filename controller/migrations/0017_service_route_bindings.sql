-- Service route bindings (route services, issue 10): a route bound to a service
-- instance whose `route_service_url` the router sends the route's requests through. A
-- route has at most one. A managed instance's binding is made and removed by its
-- broker, with the same operation columns (and runner) as credential bindings.

CREATE TABLE service_route_bindings (
        guid TEXT PRIMARY KEY, route_guid TEXT NOT NULL UNIQUE,
        service_instance_guid TEXT NOT NULL, route_service_url TEXT, parameters TEXT,
        last_operation_type TEXT, last_operation_state TEXT,
        last_operation_description TEXT, pending TEXT, due_at TEXT,
        attempts BIGINT NOT NULL DEFAULT 0, operation_started_at TEXT,
        broker_operation TEXT, job_guid TEXT, operation_user_guid TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);

CREATE INDEX service_route_bindings_instance ON service_route_bindings (service_instance_guid);
CREATE INDEX service_route_bindings_list ON service_route_bindings (created_at, guid);
CREATE INDEX service_route_bindings_pending ON service_route_bindings (pending, due_at);
