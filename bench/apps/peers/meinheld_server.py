"""meinheld serving wsgi_app, keep-alive on, access log off."""
from meinheld import server

from common import HOST, PORT, fork_workers
from wsgi_app import app

server.set_access_logger(None)
server.set_keepalive(30)
server.set_backlog(1024)
server.set_max_content_length(1 << 20)
server.listen((HOST, PORT))
fork_workers()
server.run(app)
