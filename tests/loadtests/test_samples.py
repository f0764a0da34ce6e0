"""The known digits are answered right, with a margin, by every committed model.

The load scenarios count any wrong label as a failure, so their images must be
ones each model gets right when nothing else is wrong; otherwise a gate would
fail on the model's accuracy instead of on the serving path.
"""

import httpx
import numpy as np
import pytest

from loadtests.scenarios import v2_wire
from loadtests.scenarios.checks import check_predict, check_v2_outputs
from loadtests.scenarios.target import discover
from loadtests.scenarios.workload import build_workload

MARGIN = 0.75  # the top probability every known image gets, at least


@pytest.mark.parametrize("model", ["lenet5-digits", "resnet18-digits", "vgg11-digits"])
def test_every_known_image_is_labelled_right(server, model):
    target = discover(server.url, model)
    workload = build_workload(target, files_per_batch=4, tensor_batch=1)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for request in workload.predict:
            answer = client.post("/predict", content=request.body,
                                 headers={"Content-Type": request.content_type}).json()
            check_predict(answer, request.files[0], target)
            assert answer["probability"] >= MARGIN, (request.files[0], answer["top_k"][:2])
        for request in workload.v2_binary:
            response = client.post(f"/v2/models/{model}/infer", content=request.body,
                                   headers={"Inference-Header-Content-Length": str(request.header_length)})
            header, outputs = v2_wire.outputs_from_binary(
                response.content, response.headers.get("Inference-Header-Content-Length"))
            check_v2_outputs(outputs, request.digits, target)
            assert header["model_name"] == model
            assert np.all(outputs["probabilities"].array.max(axis=1) >= MARGIN)
