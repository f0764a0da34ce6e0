"""The HTTP scenarios: ``/predict``, ``/predict_batch`` and V2 REST infer (JSON and binary).

Each user cycles through the run's prebuilt requests from a random starting
point, sends them back to back (closed loop, no think time) and checks every
answer; an answer that is not right is reported with ``response.failure``.
"""

from __future__ import annotations

import json
import random

from locust import FastHttpUser, constant, tag, task

from . import v2_wire
from .catalog import SCENARIOS
from .checks import WrongAnswer, check_model, check_predict, check_predict_batch, check_v2_outputs
from .lifecycle import current
from .target import auth_headers


class CheckedHttpUser(FastHttpUser):
    """Sends prebuilt requests and turns each wrong answer into a Locust failure."""

    abstract = True
    wait_time = constant(0)
    request_type = "POST"
    request_name = ""

    def on_start(self) -> None:
        self.workload = current.workload
        self.target = self.workload.target
        self.headers = auth_headers(self.environment.parsed_options.api_key)
        self.position = random.randrange(1_000_000)

    def next_of(self, requests: list):
        self.position += 1
        return requests[self.position % len(requests)]

    def post_checked(self, path: str, body: bytes, headers: dict, check) -> None:
        """POST, then ``check(response)``; a non-200 status or a WrongAnswer fails the request."""
        with self.client.post(path, data=body, headers={**self.headers, **headers}, name=self.request_name,
                              catch_response=True) as response:
            if response.status_code != 200:
                detail = response.text if response.status_code else repr(response.error)
                response.failure(f"HTTP {response.status_code}: {(detail or '')[:200]}")
                return
            try:
                check(response)
            except WrongAnswer as exc:
                response.failure(str(exc))
            else:
                response.success()


def json_body(response) -> dict:
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise WrongAnswer(f"the answer is not JSON: {exc}") from None


class PredictUser(CheckedHttpUser):
    request_name = "/predict"

    @tag(*SCENARIOS["predict"].tags)
    @task
    def predict(self) -> None:
        request = self.next_of(self.workload.predict)
        self.post_checked("/predict", request.body, {"Content-Type": request.content_type},
                          lambda r: check_predict(json_body(r), request.files[0], self.target))


class PredictBatchUser(CheckedHttpUser):
    request_name = "/predict_batch"

    @tag(*SCENARIOS["predict-batch"].tags)
    @task
    def predict_batch(self) -> None:
        request = self.next_of(self.workload.predict_batch)
        self.post_checked("/predict_batch", request.body, {"Content-Type": request.content_type},
                          lambda r: check_predict_batch(json_body(r), request.files, self.target))


def check_v2_answer(header: dict, outputs: dict, digits: list[int], target) -> None:
    check_model(header.get("model_name"), header.get("model_version"), target)
    check_v2_outputs(outputs, digits, target)


class V2JsonUser(CheckedHttpUser):
    request_name = "/v2/models/[model]/infer (json)"

    @tag(*SCENARIOS["v2-json"].tags)
    @task
    def infer_json(self) -> None:
        request = self.next_of(self.workload.v2_json)

        def check(response) -> None:
            header, outputs = v2_wire.outputs_from_json(response.content)
            check_v2_answer(header, outputs, request.digits, self.target)

        self.post_checked(f"/v2/models/{self.target.name}/infer", request.body,
                          {"Content-Type": "application/json"}, check)


class V2BinaryUser(CheckedHttpUser):
    request_name = "/v2/models/[model]/infer (binary)"

    @tag(*SCENARIOS["v2-binary"].tags)
    @task
    def infer_binary(self) -> None:
        request = self.next_of(self.workload.v2_binary)
        headers = {"Content-Type": "application/octet-stream",
                   "Inference-Header-Content-Length": str(request.header_length)}

        def check(response) -> None:
            header, outputs = v2_wire.outputs_from_binary(
                response.content, response.headers.get("Inference-Header-Content-Length"))
            check_v2_answer(header, outputs, request.digits, self.target)

        self.post_checked(f"/v2/models/{self.target.name}/infer", request.body, headers, check)
