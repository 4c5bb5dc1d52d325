"""socketify's ASGI server (uWebSockets underneath) running the peers' asgi_app.py."""
from socketify import ASGI, AppListenOptions

from asgi_app import app
from common import HOST, PORT, WORKERS

ASGI(app, websocket=False, lifespan=False).listen(
    AppListenOptions(port=PORT, host=HOST), lambda config: print("listening", flush=True)
).run(workers=WORKERS)
