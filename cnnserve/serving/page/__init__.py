"""The page at ``/``: try a model from a browser. Choose or drop an image, pick a model, and see the label, the
top-k probabilities as bars, the box drawn over the picture, and on request its occlusion map.

Static HTML, CSS and JavaScript from this folder: no build step, and nothing is fetched from another site (the
Content-Security-Policy header says so to the browser too). The files themselves are public, since they hold no
data; everything the page shows comes from calls to the API (``GET /models``, ``POST /predict``, ``POST
/explain``) carrying the key typed in its field, under the same auth and limits as any other client.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

FOLDER = Path(__file__).parent
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page/page.css": ("page.css", "text/css; charset=utf-8"),
}
PAGE_PATHS = tuple(ASSETS)  # open without a key, like the health probes
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}


def page_routes() -> list[Route]:
    def serve(file: str, media_type: str):
        async def endpoint(request: Request) -> FileResponse:
            return FileResponse(FOLDER / file, media_type=media_type, headers=HEADERS)
        return endpoint

    return [Route(path, serve(*asset), methods=["GET", "HEAD"]) for path, asset in ASSETS.items()]
