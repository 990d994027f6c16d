"""A service broker for the tests, written with openbrokerapi (an OSB implementation
independent of Wasmfoundry's client).

`python3 osb_broker.py PORT MODE` serves on 127.0.0.1:PORT with basic auth
broker/broker-pass. MODE `good`: service `kv` with plans `sync` (provisions at once)
and `async` (202, `last_operation` in progress for a few polls, then succeeded); binds
return credentials, at once for `sync` instances, for `async` ones after a few polls of
the binding's `last_operation` (then fetched with GET); updates are synchronous.
MODE `slow`: provisions sleep past the platform's timeout. MODE `garbage`: provisions
answer 201 with a body that is not JSON; MODE `garbage-bind`: binds do. MODE `route`:
`kv` and a route service `rs` (`requires: ["route_forwarding"]`) whose binds return a
`route_service_url` (`https://rs.example/<binding id>`), at once for plan `sync`, after
a few polls for `async`, never for `none`.

Every request is appended to the file in $BROKER_LOG as `METHOD PATH` lines, so the
tests see what the platform sent (orphan mitigation is a DELETE); each bind adds a
`BIND <binding id> <bind_resource as JSON>` line.
"""

import json
import logging
import os
import sys
import time

from flask import Flask, Response, request
from openbrokerapi import api
from openbrokerapi.catalog import ServicePlan
from openbrokerapi.service_broker import (
    Binding,
    BindState,
    DeprovisionServiceSpec,
    GetBindingSpec,
    LastOperation,
    OperationState,
    ProvisionedServiceSpec,
    ProvisionState,
    Service,
    ServiceBroker,
    UnbindSpec,
    UpdateServiceSpec,
)

POLLS_UNTIL_DONE = 3


class KvBroker(ServiceBroker):
    def __init__(self, mode):
        self.mode = mode
        self.polls = {}
        self.plans = {}
        self.parameters = {}

    def catalog(self):
        kv = Service(
            id="kv-service-id",
            name="kv",
            description="A key-value store",
            bindable=True,
            bindings_retrievable=True,
            tags=["kv", "store"],
            plans=[
                ServicePlan(id="kv-sync-id", name="sync", description="ready at once", free=True),
                ServicePlan(id="kv-async-id", name="async", description="ready after a while", free=True),
            ],
        )
        if self.mode != "route":
            return kv
        rs = Service(
            id="rs-service-id",
            name="rs",
            description="A route service",
            bindable=True,
            bindings_retrievable=True,
            requires=["route_forwarding"],
            plans=[
                ServicePlan(id="rs-sync-id", name="sync", description="bound at once", free=True),
                ServicePlan(id="rs-async-id", name="async", description="bound after a while", free=True),
                ServicePlan(id="rs-none-id", name="none", description="no route service URL", free=True),
            ],
        )
        return [kv, rs]

    def provision(self, instance_id, details, async_allowed, **kwargs):
        if self.mode == "slow":
            time.sleep(5)
        self.plans[instance_id] = details.plan_id
        if details.plan_id == "kv-async-id":
            self.polls[instance_id] = 0
            return ProvisionedServiceSpec(state=ProvisionState.IS_ASYNC, operation="create-op")
        return ProvisionedServiceSpec(dashboard_url="https://kv.example/" + instance_id)

    def last_operation(self, instance_id, operation_data, **kwargs):
        self.polls[instance_id] = self.polls.get(instance_id, 0) + 1
        if self.polls[instance_id] < POLLS_UNTIL_DONE:
            return LastOperation(OperationState.IN_PROGRESS, "provisioning")
        return LastOperation(OperationState.SUCCEEDED, "ready")

    def update(self, instance_id, details, async_allowed, **kwargs):
        return UpdateServiceSpec(is_async=False)

    def deprovision(self, instance_id, details, async_allowed, **kwargs):
        return DeprovisionServiceSpec(is_async=False)

    def credentials(self, instance_id):
        return {
            "uri": "kv://user:kv-s3cret@127.0.0.1/" + instance_id,
            "password": "kv-s3cret",
        }

    def bind(self, instance_id, binding_id, details, async_allowed, **kwargs):
        with open(os.environ["BROKER_LOG"], "a") as log:
            resource = (request.get_json(silent=True) or {}).get("bind_resource")
            log.write(f"BIND {binding_id} {json.dumps(resource, sort_keys=True)}\n")
        self.parameters[binding_id] = details.parameters or {}
        if details.plan_id in ("kv-async-id", "rs-async-id"):
            self.polls[binding_id] = 0
            return Binding(state=BindState.IS_ASYNC, operation="bind-op")
        if details.plan_id == "rs-sync-id":
            return Binding(route_service_url="https://rs.example/" + binding_id)
        if details.plan_id == "rs-none-id":
            return Binding()
        return Binding(credentials=self.credentials(instance_id))

    def last_binding_operation(self, instance_id, binding_id, operation_data, **kwargs):
        return self.last_operation(binding_id, operation_data)

    def get_binding(self, instance_id, binding_id, **kwargs):
        parameters = self.parameters.get(binding_id, {})
        if self.plans.get(instance_id, "").startswith("rs-"):
            return GetBindingSpec(route_service_url="https://rs.example/" + binding_id, parameters=parameters)
        return GetBindingSpec(credentials=self.credentials(instance_id), parameters=parameters)

    def unbind(self, instance_id, binding_id, details, async_allowed, **kwargs):
        return UnbindSpec(is_async=False)


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    log_path = os.environ["BROKER_LOG"]
    app = Flask(__name__)

    @app.before_request
    def record():
        with open(log_path, "a") as log:
            log.write(f"{request.method} {request.path}\n")
        binding = "service_bindings" in request.path
        if request.method == "PUT" and mode == ("garbage-bind" if binding else "garbage"):
            return Response("<html>not json", status=201)
        return None

    app.register_blueprint(
        api.get_blueprint(KvBroker(mode), api.BrokerCredentials("broker", "broker-pass"), logging.getLogger("broker"))
    )
    app.run("127.0.0.1", port, threaded=True)


if __name__ == "__main__":
    main()
