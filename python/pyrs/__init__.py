"""pyrs: an HTTP/1.1 server with a Rust core and Python handlers.

`pyrs project.pyrs` (or `python -m pyrs project.pyrs`) serves the handlers a
project file names. Handlers receive a `Request` and return a str, bytes, a
JSON-able dict or list, None, a `Response`, or raise `HTTPError`. These are the
same classes a handler sees when the server runs it: `import pyrs` inside a
handler is this package.
"""

from ._pyrs import Headers, HTTPError, Request, Response, __version__, _run

__all__ = ["Headers", "HTTPError", "Request", "Response", "__version__", "main"]

HTTPError.__module__ = __name__


def main(argv=None):
    """Runs the `pyrs` command with `argv` (default: `sys.argv[1:]`) in this
    interpreter, and exits with its status."""
    import sys

    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(_run(args))
