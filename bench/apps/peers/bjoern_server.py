"""bjoern serving wsgi_app (its only interface)."""
import bjoern

from common import HOST, PORT, fork_workers
from wsgi_app import app

bjoern.listen(app, HOST, PORT, reuse_port=True)
fork_workers()
bjoern.run()
