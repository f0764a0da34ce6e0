"""Every patch of a third-party library's internals lives in this package, behind one gate.

cnnserve reaches into four libraries where they offer no option for what it
needs (docs/architecture.md says why, with the measurements):

- bentoml (``bentoml_asgi.py``): ``Service.to_asgi`` is wrapped so the fast
  lane sits in front of BentoML's app (fastlane.py), and its CORS options are
  read from BentoML's configuration container;
- circus (``circus_sockets.py``): ``CircusSocket.__init__`` is wrapped so each
  worker listens on its own ``SO_REUSEPORT`` socket;
- uvicorn (``uvicorn_writes.py``, ``uvicorn_headers.py``): ``HTTP_PROTOCOLS["auto"]``
  is replaced by a protocol that writes each response once, hands uvicorn's
  request-task set to lone_request.py, and gives a client ``header_timeout_s``
  to send each request's headers (408 beyond);
- prometheus_client (``prometheus_histograms.py``): a histogram's ``_sum`` and
  ``_buckets`` take many observations in one write.

Each patch asks ``allowed(library)`` first. Where the installed version is not
the one the patch was tested on (``TESTED``, pinned in pyproject.toml), the
patch stays off, with one log line naming what is lost, and the server runs
the library's own path: slower, never wrong. tests/serving/patches/test_gate.py
fails when a pin moves without this table, and each patch's own tests fail if
it stops taking effect.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging

log = logging.getLogger("cnnserve")

TESTED = {"bentoml": "1.4.39", "circus": "0.18.3", "uvicorn": "0.54.0", "prometheus_client": "0.26.0"}
WITHOUT = {
    "bentoml": "no fast lane (every route through BentoML's middlewares), so no own listening socket per worker "
               "and no single-write responses either",
    "circus": "workers share one listening socket (a burst of connections can land on one worker)",
    "uvicorn": "responses leave in two writes, lone requests queue like the rest, and a client's request headers "
               "have no time limit (header_timeout_s: a connection that sends nothing stays open)",
    "prometheus_client": "histograms take observations one at a time",
}


def installed_version(library: str) -> str:
    module = importlib.import_module(library)
    version = getattr(module, "__version__", None)  # circus is installed without package metadata
    return str(version) if version is not None else importlib.metadata.version(library)


@functools.cache
def allowed(library: str) -> bool:
    """Whether ``library``'s patch may go in: its installed version is the tested one. Logged once if not."""
    version = installed_version(library)
    if version == TESTED[library]:
        return True
    log.warning("%s %s is not the version cnnserve's patch was tested on (%s); patch off: %s",
                library, version, TESTED[library], WITHOUT[library])
    return False
