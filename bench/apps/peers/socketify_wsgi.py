"""socketify's WSGI server (uWebSockets underneath) running the peers' wsgi_app.py,
or the app `BENCH_APP` names (`module:attr`, e.g. flask_app:app)."""
import importlib
import os

from socketify import WSGI, AppListenOptions

from common import HOST, PORT, WORKERS

module, _, attr = os.environ.get("BENCH_APP", "wsgi_app:app").partition(":")
app = getattr(importlib.import_module(module), attr)

WSGI(app).listen(AppListenOptions(port=PORT, host=HOST), lambda config: print("listening", flush=True)).run(
    workers=WORKERS
)
