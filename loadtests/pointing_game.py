"""The pointing game for every served model: does ``POST /explain``'s map point at the digit?

    python -m loadtests.pointing_game                      # a fresh local server on the committed models
    python -m loadtests.pointing_game --url http://127.0.0.1:3000 --count 100

Test-split digits are written as real 4:3 and 16:9 files of either polarity by the robustness suite's own
renderer (``digit_images.py``, which shares nothing with the server's code). Each goes to ``POST /explain`` with
the default window and stride; a map points at the digit when the centre of its hottest cell lies inside the
drawn digit's ink box. Prints the hits per model, and writes them with a figure (the server's own PNG answers
for a few digits, one row per model) to ``loadtests/results/<date>/pointing-game.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from .accuracy import RESULTS
from .digit_images import CONDITIONS_BY_NAME, DigitFile, condition_files

CONDITION = "4:3 and 16:9"
CLIENTS = 4
SHOWN = 4  # digits drawn per model in the figure


def hottest_point(answer: dict) -> tuple[float, float]:
    """The centre of an ``/explain`` answer's hottest cell, in the image's pixels."""
    occlusion = answer["occlusion"]
    grid = np.array(occlusion["grid"])
    row, column = np.unravel_index(int(grid.argmax()), grid.shape)
    x1, y1, x2, y2 = occlusion["first_cell"]
    dx, dy = occlusion["step"]
    return (x1 + x2) / 2 + column * dx, (y1 + y2) / 2 + row * dy


def points_at_ink(file: DigitFile, answer: dict) -> bool:
    x, y = hottest_point(answer)
    x1, y1, x2, y2 = file.box
    return bool(x1 <= x <= x2 and y1 <= y <= y2)


def explain(client: httpx.Client, model: str, file: DigitFile, png: bool = False) -> dict | bytes:
    response = client.post(f"/explain?model={model}", files={"image": (f"digit.{file.format.lower()}", file.data)},
                           headers={"Accept": "image/png"} if png else {})
    if response.status_code != 200:
        raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:300]}")
    return response.content if png else response.json()


def play(url: str, count: int, log=print) -> tuple[dict, dict]:
    """({model: {"version", "hits", "digits", "p50_ms"}}, {model: [PNG answers for the figure]})."""
    files = condition_files(CONDITIONS_BY_NAME[CONDITION], count)
    results, drawn = {}, {}
    with httpx.Client(base_url=url, timeout=300, limits=httpx.Limits(max_connections=CLIENTS)) as client:
        models = [m for m in client.get("/models").json()["models"] if m["versions"][-1]["status"] == "ready"]
        for model in models:
            name = model["name"]
            with ThreadPoolExecutor(CLIENTS) as pool:
                answers = list(pool.map(lambda f: explain(client, name, f), files))
            hits = sum(points_at_ink(f, a) for f, a in zip(files, answers))
            results[name] = {"version": model["versions"][-1]["version"], "hits": hits, "digits": len(files),
                             "p50_ms": round(float(np.median([a["timings"]["total_ms"] for a in answers])), 1)}
            drawn[name] = [explain(client, name, f, png=True) for f in files[:SHOWN]]
            log(f"{name:<18} the map's hottest cell on the digit's ink box for {hits} of {len(files)} "
                f"({hits / len(files):.0%})")
    return results, drawn


def table(results: dict) -> str:
    lines = ["| model | hottest cell on the ink box | explain p50 (ms, 4 clients) |", "|---|---|---|"]
    for name, row in results.items():
        lines.append(f"| {name}/{row['version']} | {row['hits']} of {row['digits']} ({row['hits'] / row['digits']:.0%})"
                     f" | {row['p50_ms']} |")
    return "\n".join(lines)


def plot(results: dict, drawn: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(drawn), SHOWN, figsize=(2.6 * SHOWN, 2.3 * len(drawn)), squeeze=False)
    for row, (name, pictures) in zip(axes, drawn.items()):
        for ax, picture in zip(row, pictures):
            ax.imshow(Image.open(io.BytesIO(picture)))
            ax.set_xticks([])
            ax.set_yticks([])
        r = results[name]
        row[0].set_ylabel(f"{name}\n{r['hits']}/{r['digits']} on the ink", fontsize=9)
    fig.suptitle("POST /explain with Accept: image/png (amber: where hiding the picture costs the answer most)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running cnnserve (default: start one on the committed models)")
    parser.add_argument("--count", type=int, default=200, help="test digits per model (default 200)")
    parser.add_argument("--out", type=Path, default=RESULTS / datetime.date.today().isoformat())
    args = parser.parse_args(argv)
    if args.url:
        results, drawn = play(args.url, args.count)
    else:
        from .local_server import running_server

        with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
            results, drawn = play(server.url, args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    print(table(results))
    (args.out / "pointing-game.md").write_text(f"Condition: {CONDITION}, default window and stride.\n\n"
                                               + table(results) + "\n")
    (args.out / "pointing-game.json").write_text(json.dumps({"condition": CONDITION, "models": results}, indent=2))
    plot(results, drawn, args.out / "pointing-game.png")
    print(f"wrote {args.out}/pointing-game.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
