"""The robustness suite: per-condition accuracy and mean IoU through ``POST /predict``.

    python -m loadtests.accuracy                          # a fresh local server on the committed models
    python -m loadtests.accuracy --url http://127.0.0.1:3000 --count 100
    python -m loadtests.accuracy --write-cards            # also record the results on each model's card
    python -m loadtests.accuracy --precision int8 --write-cards   # the same for each model's INT8 file

Every condition (``digit_images.CONDITIONS``: square, 4:3 and 16:9, 2:1 to
4:1, small digits, dark on light, photo-like, low-quality JPEG, coloured paper)
renders one picture of each test-split digit (271, never seen in training) as a
real file at its own size, with code that shares nothing with training's
renderer. Each file goes to ``POST /predict`` of a real server; an answer is
right when its label is the digit's, and its box (in the file's own pixels) is
scored by IoU against the drawn digit's box. Prints the table, and writes it
with a plot to ``loadtests/results/<date>/accuracy[-<precision>].{md,json,png}``.

The local server serves FP32 unless ``--precision`` names another variant;
the card records FP32's results under ``metrics.conditions`` and another
variant's under ``files.<variant>.conditions``, which is what ``precision:
auto`` compares before it serves a variant (cnnserve/serving/precision.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from cnnserve.training.boxes import iou

from .digit_images import CONDITIONS, Condition, DigitFile, condition_files

RESULTS = Path(__file__).resolve().parent / "results"
CLIENTS = 8  # concurrent requests, so the server batches as it would under real use
# The bar each committed model is held to (issue 18): accuracy and mean IoU on every condition; LeNet-5
# (32x32 input) only where the digit spans at least a fifth of the picture's long side.
BARS = {
    "resnet18-digits": (0.97, 0.80, False),
    "vgg11-digits": (0.97, 0.80, False),
    "lenet5-digits": (0.95, 0.75, True),
}


def ask(client: httpx.Client, model: str, file: DigitFile) -> tuple[bool, float, int]:
    response = client.post("/predict", files={"image": ("picture", file.data)}, data={"model": model})
    if response.status_code != 200:
        raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:300]}")
    answer = response.json()
    box = answer["box"]
    score = iou(np.array([[box["x1"], box["y1"], box["x2"], box["y2"]]]), file.box[None])[0]
    return answer["label"] == str(file.label), float(score), int(answer["timings"].get("zoomed_images", 0))


def measure(client: httpx.Client, model: str, files: list[DigitFile]) -> dict:
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(lambda f: ask(client, model, f), files))
    hits, ious, zoomed = zip(*answers)
    return {
        "images": len(files),
        "accuracy": round(float(np.mean(hits)), 4),
        "mean_iou": round(float(np.mean(ious)), 4),
        "zoomed": round(float(np.mean(zoomed)), 4),
    }


def judged(model: str, condition: Condition) -> tuple[float, float] | None:
    """The (accuracy, mean IoU) bar for a model on a condition, or None where none applies."""
    if model not in BARS:
        return None
    accuracy, mean_iou, needs_fifth = BARS[model]
    if needs_fifth and not condition.digit_spans_fifth_of_long_side:
        return None
    return accuracy, mean_iou


def run_suite(url: str, count: int | None, models: list[str] | None = None, log=print,
              conditions: list[Condition] = CONDITIONS, renderings: int = 1) -> dict:
    """{"models": {name: {"version", "conditions": {condition: metrics}}}} for every served model; each condition's
    pictures are ``renderings`` different pictures of every test digit (the first one the suite's own)."""
    with httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=CLIENTS)) as client:
        listing = client.get("/models").json()["models"]
        served = [m for m in listing if (models is None or m["name"] in models)
                  and m["versions"][-1]["status"] == "ready"]
        for model in listing:
            if model not in served and (models is None or model["name"] in models):
                log(f"{model['name']} skipped: {model['versions'][-1]['reason']}")
        results = {"models": {}}
        for condition in conditions:
            files = [f for seed in range(renderings) for f in condition_files(condition, count, seed=seed)]
            results["count_per_condition"], results["renderings"] = len(files), renderings
            for model in served:
                row = measure(client, model["name"], files)
                latest = model["versions"][-1]
                entry = results["models"].setdefault(
                    model["name"], {"version": latest["version"], "precision": latest["precision"], "conditions": {}}
                )
                entry["conditions"][condition.name] = row
                log(f"{model['name']:<18} {condition.name:<18} accuracy {row['accuracy']:.3f}  "
                    f"mean IoU {row['mean_iou']:.3f}  zoomed {row['zoomed']:.2f}")
    return results


def measured_conditions(results: dict) -> list[Condition]:
    """The conditions a run measured, in the suite's order."""
    names = {c for entry in results["models"].values() for c in entry["conditions"]}
    return [c for c in CONDITIONS if c.name in names]


def table(results: dict) -> str:
    """Markdown: one row per condition, accuracy / mean IoU per model, with a mark where a bar is missed."""
    names = list(results["models"])
    lines = [
        "| condition | " + " | ".join(f"{n}/{results['models'][n]['version']}" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for condition in measured_conditions(results):
        cells = []
        for name in names:
            row = results["models"][name]["conditions"][condition.name]
            bar = judged(name, condition)
            mark = "" if bar is None else (" ✓" if row["accuracy"] >= bar[0] and row["mean_iou"] >= bar[1] else " ✗")
            cells.append(f"{row['accuracy']:.3f} / {row['mean_iou']:.3f}{mark}")
        lines.append(f"| {condition.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def missed(results: dict) -> list[str]:
    out = []
    for name, entry in results["models"].items():
        for condition in CONDITIONS:
            bar = judged(name, condition)
            row = entry["conditions"].get(condition.name)
            if bar and row and (row["accuracy"] < bar[0] or row["mean_iou"] < bar[1]):
                out.append(f"{name} on {condition.name}: {row['accuracy']:.3f} / {row['mean_iou']:.3f} "
                           f"(bar {bar[0]} / {bar[1]})")
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    conditions = measured_conditions(results)
    x = np.arange(len(conditions))
    lowest = min(r[m] for e in results["models"].values() for r in e["conditions"].values() for m in ("accuracy", "mean_iou"))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, metric in zip(axes, ("accuracy", "mean_iou")):
        for k, name in enumerate(names):
            values = [results["models"][name]["conditions"][c.name][metric] for c in conditions]
            ax.bar(x + (k - (len(names) - 1) / 2) * 0.8 / len(names), values, 0.8 / len(names), label=name)
        ax.set_xticks(x, [c.name for c in conditions], rotation=30, ha="right")
        ax.set_title(f"{metric.replace('_', ' ')} through POST /predict (dotted: the ResNet-18 and VGG-11 bar)", pad=4)
        ax.set_ylim(max(0.0, lowest - 0.05), 1)
        ax.axhline(0.97 if metric == "accuracy" else 0.80, color="grey", linestyle=":", linewidth=1)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=len(names), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_cards(results: dict, models_dir: Path, command: str) -> None:
    """Record each model's per-condition results on the card of the version that was measured: FP32's under
    ``metrics.conditions``, another variant's under ``files.<variant>.conditions``."""
    for name, entry in results["models"].items():
        path = models_dir / name / str(entry["version"]) / "card.json"
        card = json.loads(path.read_text())
        where = card["metrics"] if entry["precision"] == "fp32" else card["files"][entry["precision"]]
        where["conditions"] = {
            "through": "POST /predict of a real server, one picture of each test-split digit per condition "
            "(loadtests/digit_images.py)",
            "command": command,
            "date": datetime.date.today().isoformat(),
            "results": entry["conditions"],
        }
        path.write_text(json.dumps(card, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running cnnserve (default: start one on the committed models)")
    parser.add_argument("--count", type=int, help="test digits per condition (default: all 271)")
    parser.add_argument("--model", action="append", help="only this model (repeatable)")
    parser.add_argument("--condition", action="append", choices=[c.name for c in CONDITIONS],
                        help="only this condition (repeatable)")
    parser.add_argument("--renderings", type=int, default=1,
                        help="pictures of each digit per condition, each drawn afresh (default 1: the suite's own); "
                             "more for a finer comparison of two models")
    parser.add_argument("--write-cards", action="store_true", help="record the results on each model's card")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp16"],
                        help="the variant the local server serves (default fp32, the card's reference)")
    parser.add_argument("--out", type=Path, default=RESULTS / datetime.date.today().isoformat())
    args = parser.parse_args(argv)
    if args.write_cards and (args.condition or args.renderings != 1 or args.count):
        parser.error("--write-cards records the whole suite's own pictures: no --condition, --renderings or --count")
    conditions = [c for c in CONDITIONS if not args.condition or c.name in args.condition]
    command = "python -m loadtests.accuracy" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))

    if args.url:
        results = run_suite(args.url, args.count, args.model, conditions=conditions, renderings=args.renderings)
    else:
        from .local_server import running_server

        with tempfile.TemporaryDirectory() as tmp, \
                running_server(Path(tmp), models_dir=str(args.models_dir), precision=args.precision) as server:
            results = run_suite(server.url, args.count, args.model, conditions=conditions,
                                renderings=args.renderings)
    markdown = table(results)
    print("\n" + markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "accuracy" if args.precision == "fp32" or args.url else f"accuracy-{args.precision}"
    (args.out / f"{stem}.json").write_text(json.dumps({"command": command, **results}, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(
        f"# Robustness suite\n\n`{command}`, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
        "Accuracy / mean IoU per condition through `POST /predict`; ✓ / ✗: the issue-18 bar met or missed.\n\n"
        + "\n".join(f"- **{c.name}**: {c.description}" for c in CONDITIONS) + "\n\n" + markdown + "\n"
    )
    plot(results, args.out / f"{stem}.png")
    if args.write_cards:
        write_cards(results, args.models_dir, command)
    for line in missed(results):
        print("bar missed:", line)
    print(f"wrote {args.out}/{stem}.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
