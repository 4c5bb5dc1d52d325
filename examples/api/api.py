"""Example pyrs API: every handler takes a pyrs.Request and returns a value."""
import pyrs


class Api:
    def info(self, request):
        """Everything pyrs tells a handler about the request, as JSON."""
        return {
            "method": request.method,
            "path": request.path,
            "query_string": request.query_string,
            "query": request.query,
            "headers": dict(request.headers.items()),
            "http_version": request.http_version,
            "remote_addr": request.remote_addr,
            "body_length": len(request.body),
        }

    def status(self, request):
        """/status?code=418 answers with that status."""
        code = int(request.query.get("code", ["200"])[0])
        return pyrs.Response(f"status {code}\n", status=code,
                             headers={"X-Example": "status"},
                             content_type="text/plain; charset=utf-8")

    def fail(self, request):
        """An unhandled exception: the client gets a 500, stderr the traceback."""
        raise RuntimeError("this handler always fails")

    def raw(self, request):
        return b"\x00\x01\x02"


# pyrs creates one instance per "modules" entry, so /items and /items/* get an
# Items object each: shared state lives at module level.
ITEMS = {}


class Items:
    """An in-memory collection: GET/POST /items, GET/DELETE /items/<name>."""

    def __init__(self):
        self.items = ITEMS

    def collection(self, request):
        if request.method == "GET":
            return sorted(self.items)
        if request.method == "POST":
            data = request.json()  # invalid JSON answers 400
            if not isinstance(data, dict) or not isinstance(data.get("name"), str):
                raise pyrs.HTTPError(422, {"error": "expected {\"name\": str, ...}"})
            self.items[data["name"]] = data
            return pyrs.Response(data, status=201,
                                 headers={"Location": "/items/" + data["name"]})
        raise pyrs.HTTPError(405, headers={"Allow": "GET, POST"})

    def item(self, request):
        name = request.path[len("/items/"):]
        if name not in self.items:
            raise pyrs.HTTPError(404, {"error": f"no item {name!r}"})
        if request.method == "DELETE":
            del self.items[name]
            return None  # 204 No Content
        return self.items[name]
