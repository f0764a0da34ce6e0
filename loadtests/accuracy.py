"""End-to-end accuracy and mean IoU through ``POST /predict`` of a running service.

    python -m loadtests.accuracy --url http://127.0.0.1:3000 --count 200

Sends test-split digits rescaled to assorted sizes, formats and modes to every
served model and compares the answers with the known label and box (in the
image's own pixels).
"""

from __future__ import annotations

import argparse

import httpx
import numpy as np

from training.boxes import iou

from .digit_images import digit_files


def measure(client: httpx.Client, model: str, channels: int, size: int, count: int) -> dict:
    hits, ious = [], []
    for file in digit_files(channels, size, count, seed=2024, assorted=True):
        response = client.post("/predict", files={"image": ("d", file.data)}, data={"model": model})
        response.raise_for_status()
        answer = response.json()
        box = answer["box"]
        hits.append(answer["label"] == str(file.label))
        ious.append(iou(np.array([[box["x1"], box["y1"], box["x2"], box["y2"]]]), file.box[None])[0])
    return {"model": model, "images": count, "accuracy": float(np.mean(hits)), "mean_iou": float(np.mean(ious))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with httpx.Client(base_url=args.url, timeout=60) as client:
        listing = client.get("/models").json()
        print(f"{'model':<20}{'images':>8}{'accuracy':>10}{'mean IoU':>10}")
        for model in listing["models"]:
            spec = model["versions"][-1]["input"]
            row = measure(client, model["name"], spec["channels"], spec["shape"][-1], args.count)
            print(f"{row['model']:<20}{row['images']:>8}{row['accuracy']:>10.3f}{row['mean_iou']:>10.3f}")


if __name__ == "__main__":
    main()
