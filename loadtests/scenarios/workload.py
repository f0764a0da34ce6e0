"""Every request a run sends, built once before the load starts, with the answer each must get.

Users cycle through these, so under load the client only sends, receives and
checks, and every protocol is asked about the same known digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnserve.serving.v2 import inference_pb2 as pb

from . import rest_wire, v2_wire
from .samples import KnownFile, KnownTensor, known_files, known_tensors
from .target import ModelTarget


@dataclass(frozen=True)
class FileRequest:
    body: bytes
    content_type: str
    files: list[KnownFile]


@dataclass(frozen=True)
class TensorRequest:
    body: bytes
    header_length: int | None  # binary tensor extension only
    digits: list[int]


@dataclass(frozen=True)
class GrpcRequest:
    message: pb.ModelInferRequest
    digits: list[int]


@dataclass(frozen=True)
class Workload:
    target: ModelTarget
    predict: list[FileRequest]
    predict_batch: list[FileRequest]
    v2_json: list[TensorRequest]
    v2_binary: list[TensorRequest]
    grpc: list[GrpcRequest]


def rotations(items: list, size: int) -> list[list]:
    """Every run of ``size`` consecutive items, wrapping around: as many groups as items."""
    return [[items[(start + k) % len(items)] for k in range(size)] for start in range(len(items))]


def file_request(field: str, files: list[KnownFile], target: ModelTarget) -> FileRequest:
    # top_k = every label, so the answer's probabilities must sum to one.
    fields = {"model": target.name, "top_k": str(len(target.labels))}
    body, content_type = rest_wire.multipart(fields, [(field, f.data, f.format) for f in files])
    return FileRequest(body, content_type, files)


def stacked(group: list[KnownTensor]) -> np.ndarray:
    return np.stack([t.pixels for t in group])


def build_workload(target: ModelTarget, files_per_batch: int, tensor_batch: int) -> Workload:
    files = known_files(target)
    tensor_groups = rotations(known_tensors(target), tensor_batch)
    digits = [[t.digit for t in group] for group in tensor_groups]
    binary = [v2_wire.binary_request(stacked(group)) for group in tensor_groups]
    return Workload(
        target=target,
        predict=[file_request("image", [f], target) for f in files],
        predict_batch=[file_request("images", group, target) for group in rotations(files, files_per_batch)],
        v2_json=[TensorRequest(v2_wire.json_request(stacked(g)), None, d) for g, d in zip(tensor_groups, digits)],
        v2_binary=[TensorRequest(body, length, d) for (body, length), d in zip(binary, digits)],
        grpc=[GrpcRequest(v2_wire.grpc_request(target.name, stacked(g)), d) for g, d in zip(tensor_groups, digits)],
    )
