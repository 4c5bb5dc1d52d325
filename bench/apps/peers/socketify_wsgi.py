"""socketify's WSGI server (uWebSockets underneath) running the peers' wsgi_app.py."""
from socketify import WSGI, AppListenOptions

from common import HOST, PORT, WORKERS
from wsgi_app import app

WSGI(app).listen(AppListenOptions(port=PORT, host=HOST), lambda config: print("listening", flush=True)).run(
    workers=WORKERS
)
