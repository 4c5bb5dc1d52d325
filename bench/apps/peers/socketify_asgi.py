"""socketify's ASGI server (uWebSockets underneath) running the peers' asgi_app.py,
or the app `BENCH_APP` names (`module:attr`, e.g. fastapi_app:app)."""
import importlib
import os

from socketify import ASGI, AppListenOptions

from common import HOST, PORT, WORKERS

module, _, attr = os.environ.get("BENCH_APP", "asgi_app:app").partition(":")
app = getattr(importlib.import_module(module), attr)

ASGI(app, websocket=False, lifespan=False).listen(
    AppListenOptions(port=PORT, host=HOST), lambda config: print("listening", flush=True)
).run(workers=WORKERS)
