"""Does a server answer each image as its model does alone? Distinct images go out at once in V2 binary requests
of several sizes, so they share batches, are padded to the server's batch shapes and, with ``cuda_graphs``, pass
through each captured graph's fixed buffers, where a stale input or an output read before the graph finished would
give a row another row's answer, or an old one. The throughput loads cannot tell: they send zeros.

The reference is the same file on the same provider in process, one plain session in batches of 64: the served
answers should differ from it only by the device's rounding across batch sizes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from .scenarios.v2_wire import binary_request, outputs_from_binary

REQUEST_SIZES = (1, 1, 1, 1, 2, 3, 5, 9, 17)  # cycled over the images: most batches mix requests
CLIENTS = 32
TOLERANCE = 0.01  # the largest difference of one probability that passes (FP16 on a GPU rounds to about 1e-3)


def split(images: np.ndarray, sizes=REQUEST_SIZES) -> list[np.ndarray]:
    """``images`` as consecutive requests whose sizes cycle through ``sizes`` (the last one takes what is left)."""
    parts, start, index = [], 0, 0
    while start < len(images):
        size = sizes[index % len(sizes)]
        parts.append(images[start:start + size])
        start, index = start + size, index + 1
    return parts


def ask(client: httpx.Client, model: str, images: np.ndarray) -> np.ndarray:
    """The served probabilities of ``images``, one V2 binary request."""
    body, header_length = binary_request(images)
    response = client.post(f"/v2/models/{model}/infer", content=body,
                           headers={"Inference-Header-Content-Length": str(header_length)})
    if response.status_code != 200:
        raise RuntimeError(f"{model}: {response.status_code} {response.text[:300]}")
    _, outputs = outputs_from_binary(response.content, response.headers.get("inference-header-content-length"))
    return outputs["probabilities"].array


def served_probabilities(url: str, model: str, images: np.ndarray) -> np.ndarray:
    """Every image's served probabilities, in order, from requests sent ``CLIENTS`` at a time."""
    with httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(CLIENTS) as pool:
        return np.concatenate(list(pool.map(lambda part: ask(client, model, part), split(images))))


def compare(served: np.ndarray, reference: np.ndarray) -> dict:
    """How far the served answers are from the reference's: the largest difference of a probability, how many
    images got another label, and how far they are from the next image's reference (``neighbour_difference``:
    what a mix-up of rows would show; under ``TOLERANCE`` the images' answers are too alike for the check to see
    one, as an untrained model's are)."""
    largest = float(np.abs(served - reference).max())
    other_label = int((served.argmax(1) != reference.argmax(1)).sum())
    neighbour = float(np.abs(served - np.roll(reference, 1, axis=0)).max())
    return {"images": len(served), "largest_difference": largest, "other_label": other_label,
            "neighbour_difference": neighbour, "passed": largest <= TOLERANCE}
