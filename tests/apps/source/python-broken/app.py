"""Does not parse: the push fails with Python's message in the staging log."""

from wit_world import exports


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out)
        pass
