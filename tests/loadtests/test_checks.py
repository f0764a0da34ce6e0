"""The answer checks fail every kind of wrong answer, and pass a right one.

Synthetic answers, no server: each mutation of a correct answer must raise
WrongAnswer naming what is wrong, so a server that answers it under load gets
failures counted, not successes.
"""

import copy
import json

import numpy as np
import pytest

from cnnserve.serving.v2 import inference_pb2 as pb
from loadtests.scenarios import v2_wire
from loadtests.scenarios.checks import (
    Output,
    WrongAnswer,
    check_predict,
    check_predict_batch,
    check_v2_outputs,
)
from loadtests.scenarios.samples import KnownFile
from loadtests.scenarios.target import ModelTarget

TARGET = ModelTarget("digits", 1, 1, 32, 32, tuple(str(d) for d in range(10)), has_boxes=True)
SEVEN = KnownFile(b"", digit=7, width=200, height=100, format="PNG")


def right_answer() -> dict:
    order = [7, 1, 2, 0, 3, 4, 5, 6, 8, 9]
    probabilities = [0.9, 0.05, 0.02, 0.01, 0.01, 0.004, 0.003, 0.002, 0.0005, 0.0005]
    return {
        "model": "digits",
        "version": 1,
        "label": "7",
        "class_index": 7,
        "probability": 0.9,
        "top_k": [{"label": str(d), "probability": p} for d, p in zip(order, probabilities)],
        "image_size": {"width": 200, "height": 100},
        "box": {"x1": 20.0, "y1": 10.0, "x2": 100.0, "y2": 90.0},
        "box_normalized": {"x1": 0.1, "y1": 0.1, "x2": 0.5, "y2": 0.9},
    }


def test_a_right_answer_passes():
    check_predict(right_answer(), SEVEN, TARGET)
    check_predict_batch({"model": "digits", "version": 1, "predictions": [right_answer()] * 2}, [SEVEN] * 2, TARGET)


def swap_top_two(answer):
    answer["top_k"][0], answer["top_k"][1] = answer["top_k"][1], answer["top_k"][0]


MUTATIONS = {
    "wrong label": (lambda a: a.update(label="1"), "wrong label '1' for a 7"),
    "wrong class index": (lambda a: a.update(class_index=1), "wrong class_index"),
    "label missing": (lambda a: a.pop("label"), "'label' missing"),
    "probabilities do not sum to 1": (lambda a: a["top_k"][0].update(probability=0.5), "sum to"),
    "top_k out of order": (swap_top_two, "descending"),
    "top_k short": (lambda a: a["top_k"].pop(), "entries in top_k"),
    "box missing": (lambda a: a.pop("box_normalized"), "'box_normalized' missing"),
    "box with three corners": (lambda a: a["box_normalized"].pop("y2"), "not a box"),
    "box outside the image": (lambda a: a["box_normalized"].update(x2=1.2), "not ordered within"),
    "box corners swapped": (lambda a: a["box_normalized"].update(x1=0.6), "not ordered within"),
    "box as text": (lambda a: a["box_normalized"].update(y1="0.1"), "not finite numbers"),
    "pixel box off the normalized one": (lambda a: a["box"].update(x2=90.0), "in pixels"),
    "wrong image size": (lambda a: a.update(image_size={"width": 100, "height": 200}), "image_size"),
    "another model": (lambda a: a.update(model="other"), "answered by model"),
}


@pytest.mark.parametrize("mutate, message", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_a_wrong_predict_answer_fails(mutate, message):
    answer = right_answer()
    mutate(answer)
    with pytest.raises(WrongAnswer, match=message):
        check_predict(answer, SEVEN, TARGET)


def test_a_batch_answer_must_have_one_prediction_per_file_in_order():
    with pytest.raises(WrongAnswer, match="1 predictions for 2 files"):
        check_predict_batch({"model": "digits", "version": 1, "predictions": [right_answer()]}, [SEVEN] * 2, TARGET)
    other = KnownFile(b"", digit=3, width=200, height=100, format="PNG")
    with pytest.raises(WrongAnswer, match=r"predictions\[1\]: wrong label"):
        check_predict_batch({"model": "digits", "version": 1, "predictions": [right_answer()] * 2},
                            [SEVEN, other], TARGET)


def v2_outputs(digits=(7, 2)) -> dict[str, Output]:
    probabilities = np.full((len(digits), 10), 0.01, np.float32)
    for row, digit in enumerate(digits):
        probabilities[row, digit] = 0.91
    boxes = np.tile(np.array([0.1, 0.2, 0.5, 0.9], np.float32), (len(digits), 1))
    return {
        "probabilities": Output("FP32", list(probabilities.shape), probabilities),
        "boxes": Output("FP32", list(boxes.shape), boxes),
    }


def test_right_v2_outputs_pass():
    check_v2_outputs(v2_outputs(), [7, 2], TARGET)


def renamed(outputs):
    outputs["probs"] = outputs.pop("probabilities")


def swap_first_row(outputs):
    row = outputs["probabilities"].array[0]
    row[[1, 7]] = row[[7, 1]]


def reshaped(outputs):
    boxes = outputs["boxes"]
    outputs["boxes"] = Output("FP32", [2, 2, 2], boxes.array.reshape(2, 2, 2))


V2_MUTATIONS = {
    "wrong output name": (renamed, "outputs"),
    "missing output": (lambda o: o.pop("boxes"), "outputs"),
    "wrong datatype": (lambda o: o.update(boxes=o["boxes"]._replace(datatype="FP64")), "is FP64"),
    "wrong shape": (reshaped, "shape"),
    "wrong label": (swap_first_row, "wrong labels"),
    "probabilities off": (lambda o: o["probabilities"].array.__imul__(0.5), "sum to"),
    "NaN": (lambda o: o["boxes"].array.__setitem__((1, 0), np.nan), "NaN"),
    "box corners swapped": (lambda o: o["boxes"].array.__setitem__((1, 0), 0.7), r"boxes\[1\]"),
}


@pytest.mark.parametrize("mutate, message", V2_MUTATIONS.values(), ids=V2_MUTATIONS.keys())
def test_wrong_v2_outputs_fail(mutate, message):
    outputs = v2_outputs()
    mutate(outputs)
    with pytest.raises(WrongAnswer, match=message):
        check_v2_outputs(outputs, [7, 2], TARGET)


def binary_answer(outputs: dict[str, Output]) -> tuple[bytes, str]:
    described = [{"name": n, "datatype": o.datatype, "shape": o.shape,
                  "parameters": {"binary_data_size": o.array.nbytes}} for n, o in outputs.items()]
    header = json.dumps({"model_name": "digits", "outputs": described}).encode()
    return header + b"".join(o.array.tobytes() for o in outputs.values()), str(len(header))


def test_v2_answers_decode_from_json_binary_and_grpc():
    outputs = v2_outputs()
    as_json = json.dumps({"outputs": [{"name": n, "datatype": o.datatype, "shape": o.shape,
                                       "data": o.array.ravel().tolist()} for n, o in outputs.items()]})
    for decoded in (
        v2_wire.outputs_from_json(as_json.encode())[1],
        v2_wire.outputs_from_binary(*binary_answer(outputs))[1],
        v2_wire.outputs_from_grpc(pb.ModelInferResponse(
            outputs=[pb.ModelInferResponse.InferOutputTensor(name=n, datatype=o.datatype, shape=o.shape)
                     for n, o in outputs.items()],
            raw_output_contents=[o.array.tobytes() for o in outputs.values()],
        )),
    ):
        check_v2_outputs(decoded, [7, 2], TARGET)


def test_malformed_v2_answers_fail():
    body, length = binary_answer(v2_outputs())
    cases = [
        (lambda: v2_wire.outputs_from_json(b"<html>oops</html>"), "not JSON"),
        (lambda: v2_wire.outputs_from_json(b'{"outputs": [{"name": "boxes"}]}'), "malformed output"),
        (lambda: v2_wire.outputs_from_json(
            b'{"outputs": [{"name": "boxes", "datatype": "FP32", "shape": [1, 4], "data": [1, 2]}]}'), "2 values"),
        (lambda: v2_wire.outputs_from_binary(body, None), "Inference-Header-Content-Length"),
        (lambda: v2_wire.outputs_from_binary(body[:-4], length), "does not fit"),
        (lambda: v2_wire.outputs_from_binary(body + b"\0", length), "after the last output"),
    ]
    for decode, message in cases:
        with pytest.raises(WrongAnswer, match=message):
            decode()


def test_v2_requests_carry_the_pixels_they_were_built_from():
    pixels = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    body, length = v2_wire.binary_request(pixels)
    header = json.loads(body[:length])
    assert header["inputs"][0]["shape"] == [2, 1, 32, 32] and header["parameters"] == {"binary_data_output": True}
    assert np.array_equal(np.frombuffer(body[length:], "<f4").reshape(pixels.shape), pixels)
    sent = json.loads(v2_wire.json_request(pixels))["inputs"][0]
    assert np.allclose(np.array(sent["data"]).reshape(pixels.shape), pixels, atol=1e-5)
    message = v2_wire.grpc_request("digits", pixels)
    assert np.array_equal(np.frombuffer(message.raw_input_contents[0], "<f4").reshape(pixels.shape), pixels)


def test_checks_do_not_change_the_answer():
    answer = right_answer()
    before = copy.deepcopy(answer)
    check_predict(answer, SEVEN, TARGET)
    assert answer == before
