"""The README's examples answer as printed: every ``$ curl`` example with a JSON answer, the tritonclient
snippet and the grpcurl metadata call run against a real server on the committed models, and their printed
answers match (timings aside; numbers within 2% plus 0.02, as FP32 and the derived INT8 files differ a little)."""

import json
import re
import shlex
import subprocess

import grpc
import httpx
import pytest
from google.protobuf import json_format

from cnnserve.serving.v2 import inference_pb2 as pb
from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc
from loadtests.local_server import REPO_ROOT
from loadtests.triton_tools import TRITON_PYTHON, require

README = (REPO_ROOT / "README.md").read_text()
DOC_HTTP, DOC_GRPC = "127.0.0.1:3000", "127.0.0.1:3001"


def examples(prompt: str) -> list[tuple[str, str]]:
    """(command, printed answer) for each ``$ <prompt> ...`` line of the README's shell blocks whose answer is
    JSON (answers shortened with ``...`` are left out)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for command, answer in re.findall(rf"^\$ ({prompt} .*)\n((?:(?!\$ ).*\n)*)", block, re.M):
            try:
                found.append((command, json.loads(answer)))
            except json.JSONDecodeError:
                continue
    return found


V2_GRPCURL = [(command, printed) for command, printed in examples("grpcurl") if "inference.GRPCInferenceService/" in command]


def alike(printed, got, path="answer") -> list[str]:
    """Where ``got`` differs from ``printed``: every key and value, numbers within 2% plus 0.02."""
    if isinstance(printed, dict):
        if set(printed) - {"timings"} != set(got) - {"timings"}:
            return [f"{path}: keys {sorted(printed)} printed, {sorted(got)} answered"]
        return [d for key in printed if key != "timings" for d in alike(printed[key], got[key], f"{path}.{key}")]
    if isinstance(printed, list):
        if len(printed) != len(got):
            return [f"{path}: {len(printed)} items printed, {len(got)} answered"]
        return [d for i, (p, g) in enumerate(zip(printed, got)) for d in alike(p, g, f"{path}[{i}]")]
    if isinstance(printed, float) or isinstance(got, float):  # whole numbers (codes, sizes, versions) exactly
        close = isinstance(got, (int, float)) and abs(printed - got) <= 0.02 + 0.02 * abs(printed)
        return [] if close else [f"{path}: {printed} printed, {got} answered"]
    return [] if printed == got else [f"{path}: {printed!r} printed, {got!r} answered"]


def curl(server, command: str) -> dict:
    """Send what a ``curl -s [-H ...] [-F ...] URL`` line sends (its files read from the repository root)."""
    words = shlex.split(command)[1:]
    headers, fields, url = {}, [], None
    while words:
        word = words.pop(0)
        if word == "-H":
            name, value = words.pop(0).split(":", 1)
            headers[name] = value.strip()
        elif word == "-F":
            name, value = words.pop(0).split("=", 1)
            if value.startswith("@"):
                fields.append((name, (value[1:], (REPO_ROOT / value[1:]).read_bytes())))
            else:  # a text field of the multipart form (no file name), as curl sends it
                fields.append((name, (None, value.encode())))
        elif word != "-s":
            url = word.replace(DOC_HTTP, server.url.removeprefix("http://"))
    return httpx.post(f"http://{url}", headers=headers, files=fields, timeout=60).json()


@pytest.mark.parametrize(("command", "printed"), examples("curl"), ids=lambda v: v[:60] if isinstance(v, str) else "")
def test_each_curl_example_answers_as_printed(server, command, printed):
    assert not alike(printed, curl(server, command))


def test_the_readme_has_examples_to_check():
    assert len(examples("curl")) >= 6  # /predict, /predict_batch and the four errors
    assert V2_GRPCURL  # ModelMetadata


@pytest.mark.parametrize(("command", "printed"), V2_GRPCURL, ids=lambda v: v[-40:] if isinstance(v, str) else "")
def test_each_v2_grpcurl_example_answers_as_printed(server, command, printed):
    words = shlex.split(command)
    method = words[-1].rsplit("/", 1)[1]
    request = json_format.ParseDict(json.loads(words[words.index("-d") + 1]), getattr(pb, f"{method}Request")())
    with grpc.insecure_channel(server.grpc_address) as channel:
        answer = getattr(pb_grpc.GRPCInferenceServiceStub(channel), method)(request)
    assert not alike(printed, json_format.MessageToDict(answer))


def test_the_tritonclient_snippet_prints_what_it_says(server):
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "# prints:" in b]
    code, printed = snippet.split("# prints:\n")
    code = code.replace(DOC_HTTP, server.url.removeprefix("http://")).replace(DOC_GRPC, server.grpc_address)
    result = subprocess.run([str(require(TRITON_PYTHON)), "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.removeprefix("# ") for line in printed.splitlines()]
    got = result.stdout.splitlines()
    assert len(got) == len(lines)
    numbers = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")
    for want, have in zip(lines, got):
        text = [re.sub(r"\s+", "", numbers.sub("#", line)) for line in (want, have)]
        assert text[0] == text[1], (want, have)  # the same text around the numbers (numpy pads them with spaces)
        for w, h in zip(numbers.findall(want), numbers.findall(have)):
            whole = w.lstrip("-").isdigit()  # a label or a dimension: exactly
            assert (w == h) if whole else abs(float(w) - float(h)) <= 0.02 + 0.02 * abs(float(w)), (want, have)
