#!/usr/bin/env python3
"""CI checks of the installed Python package: `wheel_checks.py VENV [--smoke]`.

Checks what a Python user relies on, against the `pyrs` installed in VENV (with
the `pyrs` of that venv, not the cargo-built binary): the extension module does
not link libpython (so the wheel can be manylinux), `pyrs --version` and
`python -m pyrs --version` name the venv's interpreter, `import pyrs` gives the
classes and type stubs, and a handler imports a package installed only in that
venv with no VIRTUAL_ENV or PYTHONPATH set, served until Ctrl-C stops it with
exit status 0. `--smoke` keeps the last two (what is run on other CPythons).
Prints one line per check and a closing `wheel: N passed, N failed` line."""

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

VENV = os.path.abspath(sys.argv[1])
SMOKE = "--smoke" in sys.argv[2:]
PY = os.path.join(VENV, "bin", "python")
PYRS = os.path.join(VENV, "bin", "pyrs")
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
results = []


def check(name):
    def wrap(fn):
        try:
            fn()
        except Exception as e:  # a failed check is reported, the others still run
            results.append((name, f"{type(e).__name__}: {e}"))
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        else:
            results.append((name, None))
            print(f"ok   {name}", flush=True)
        return fn
    return wrap


def venv_python(code):
    return subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True,
                          env=CLEAN_ENV, timeout=60).stdout.strip()


PURELIB = venv_python("import sysconfig; print(sysconfig.get_path('purelib'))")
VERSION = venv_python("import platform; print(platform.python_version())")


if not SMOKE:
    @check("the extension module links no libpython")
    def _():
        sos = glob.glob(os.path.join(PURELIB, "pyrs", "_pyrs*.so"))
        assert len(sos) == 1, f"expected one pyrs/_pyrs*.so in {PURELIB}, found {sos}"
        out = subprocess.run(["readelf", "-d", sos[0]], capture_output=True, text=True,
                             check=True).stdout
        needed = [ln.split("[", 1)[1].rstrip("]") for ln in out.splitlines() if "(NEEDED)" in ln]
        assert needed, f"readelf shows no NEEDED entries:\n{out}"
        bad = [n for n in needed if "python" in n.lower()]
        assert not bad, f"links {bad}"

    @check("pyrs --version names the venv's interpreter")
    def _():
        out = subprocess.run([PYRS, "--version"], capture_output=True, text=True, check=True,
                             env=CLEAN_ENV, timeout=30).stdout.strip()
        assert out.startswith("pyrs "), out
        assert f"(Python {VERSION}, {VENV}/bin/python" in out, out

    @check("python -m pyrs --version is the same command")
    def _():
        out = subprocess.run([PY, "-m", "pyrs", "--version"], capture_output=True, text=True,
                             check=True, env=CLEAN_ENV, timeout=30).stdout.strip()
        assert f"(Python {VERSION}, {VENV}/bin/python" in out, out

    @check("import pyrs gives the handler classes and type stubs")
    def _():
        out = venv_python(
            "import pyrs, os\n"
            "r = pyrs.Response('x', status=201, headers={'a': 'b'})\n"
            "e = pyrs.HTTPError(404)\n"
            "assert r.status == 201 and e.status == 404 and isinstance(e, Exception)\n"
            "assert pyrs.Request.__name__ == 'Request' and pyrs.Headers.__name__ == 'Headers'\n"
            "d = os.path.dirname(pyrs.__file__)\n"
            "assert os.path.exists(os.path.join(d, 'py.typed'))\n"
            "assert os.path.exists(os.path.join(d, '__init__.pyi'))\n"
            "print(pyrs.__version__)")
        assert out, "no version"


@check(f"a handler imports a package only the venv has, and Ctrl-C stops with 0 (Python {VERSION})")
def _():
    with tempfile.TemporaryDirectory() as project:
        marker = f"venv_only_{os.getpid()}"
        with open(os.path.join(PURELIB, f"{marker}.py"), "w") as f:
            f.write("WHERE = __file__\n")
        try:
            with open(os.path.join(project, "app.py"), "w") as f:
                f.write(f"import {marker}\n\n\nclass App:\n"
                        f"    def where(self, request):\n        return {marker}.WHERE\n\n"
                        f"    async def later(self, request):\n        return 'async ok'\n")
            with open(os.path.join(project, "project.pyrs"), "w") as f:
                f.write('{"http_listen_address": "127.0.0.1", "http_listen_port": 0,\n'
                        ' "modules": [{"path": "/", "module": "app", "class": "App", "handler": "where"},\n'
                        '             {"path": "/later", "module": "app", "class": "App", "handler": "later"}]}\n')
            proc = subprocess.Popen([PYRS, os.path.join(project, "project.pyrs")],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=CLEAN_ENV, cwd="/")
            try:
                port = None
                deadline = time.monotonic() + 30
                for line in proc.stdout:
                    if line.startswith("Port:"):
                        port = int(line.split()[1])
                    if line.startswith("Listening") or time.monotonic() > deadline:
                        break
                assert port, f"no Port line; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
                assert body.startswith(PURELIB), f"served {body!r}, expected a file in {PURELIB}"
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/later", timeout=10).read()
                assert body == b"async ok", body
                proc.send_signal(signal.SIGINT)
                code = proc.wait(timeout=15)
                err = proc.stderr.read()
                assert code == 0, f"exit status {code} after one SIGINT; stderr:\n{err}"
                assert "Traceback" not in err, err
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finally:
            os.remove(os.path.join(PURELIB, f"{marker}.py"))


failed = sum(1 for _, why in results if why)
print(f"wheel: {len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
