"""API keys: with keys configured, a request without a valid key gets 401 /
UNAUTHENTICATED on every protocol and never reaches a model; health and
metrics stay open; loading and unloading models takes an admin key; keys never reach the log."""

import hashlib

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.serving.auth import KeyCheck, digest
from cnnserve.serving.v2 import inference_pb2 as pb
from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc
from loadtests.local_server import running_server
from tests.serving.helpers import GOOD, grpc_request, metric_total

PLAIN_KEY = "plain-key-7d1f0c"
FILE_KEY = "file-key-93ab22"
ADMIN_KEY = "admin-key-4c2e91"


def test_only_a_known_bearer_key_is_allowed():
    check = KeyCheck([digest("k1"), digest("k2")])
    assert check.allows("Bearer k2") and check.allows("bearer k1")
    for bad in (None, "", "Bearer", "Bearer k3", "Basic k1", "k1"):
        assert not check.allows(bad)


def test_no_keys_means_no_check():
    assert not KeyCheck([]).enabled


def test_an_admin_key_predicts_but_a_prediction_key_does_not_administer():
    check = KeyCheck([digest("k1")], [digest("admin")])
    assert check.allows("Bearer admin") and check.allows("Bearer k1")
    assert check.allows("Bearer admin", admin=True) and not check.allows("Bearer k1", admin=True)
    assert KeyCheck([], [digest("admin")]).enabled


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("secured")
    keys_file = folder / "keys.sha256"
    keys_file.write_text(f"# ops team\n{hashlib.sha256(FILE_KEY.encode()).hexdigest()}\n")
    with running_server(folder, api_keys=PLAIN_KEY, api_keys_file=keys_file, admin_api_keys=ADMIN_KEY) as server:
        yield server


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers", [{}, bearer("wrong"), {"Authorization": PLAIN_KEY}], ids=["none", "wrong", "no-scheme"])
def test_rest_and_v2_refuse_without_a_valid_key(secured, headers):
    before = secured.metrics()
    predict = secured.client.post("/predict", files={"image": ("a.png", GOOD)}, headers=headers)
    assert predict.status_code == 401 and predict.headers["www-authenticate"] == "Bearer"
    assert "API key" in predict.json()["error"]
    infer = secured.client.post("/v2/models/lenet5-digits/infer", json={"inputs": []}, headers=headers)
    assert infer.status_code == 401
    assert secured.client.get("/models", headers=headers).status_code == 401
    for method, path in [("GET", "/v2/models/lenet5-digits/ready"), ("GET", "/no-such-path"),
                         ("DELETE", "/v2/models/lenet5-digits/stats")]:  # a caller without a key learns no path
        assert secured.client.request(method, path, headers=headers).status_code == 401, (method, path)
    after = secured.metrics()

    def requests(**labels) -> float:
        return metric_total(after, "cnnserve_requests_total", **labels) - metric_total(before, "cnnserve_requests_total", **labels)

    assert requests(outcome="unauthorised", protocol="rest") == 1
    assert requests(outcome="unauthorised", protocol="v2-rest") == 1
    assert requests() == 2, "refused before any model was read: counted, and nothing else"


@pytest.mark.parametrize("key", [PLAIN_KEY, FILE_KEY], ids=["from-environment", "from-hash-file"])
def test_a_valid_key_is_served(secured, key):
    response = secured.client.post("/predict", files={"image": ("a.png", GOOD)}, headers=bearer(key))
    assert response.status_code == 200


def test_health_and_metrics_stay_open(secured):
    for path in ("/livez", "/readyz", "/metrics", "/v2/health/ready"):
        assert secured.client.get(path).status_code == 200, path


def grpc_infer(address: str, metadata=()):
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(grpc_request("lenet5-digits", np.zeros((1, 1, 32, 32), np.float32)), metadata=metadata)


def test_grpc_refuses_without_a_valid_key_and_serves_with_one(secured):
    before = secured.metrics()
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.RpcError) as caught:
            grpc_infer(secured.grpc_address, metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    refused = [metric_total(text, "cnnserve_requests_total", outcome="unauthorised", protocol="grpc")
               for text in (before, secured.metrics())]
    assert refused[1] - refused[0] == 2
    response = grpc_infer(secured.grpc_address, (("authorization", f"Bearer {PLAIN_KEY}"),))
    assert response.model_name == "lenet5-digits"


def test_grpc_health_stays_open(secured):
    with grpc.insecure_channel(secured.grpc_address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status
        v2 = pb_grpc.GRPCInferenceServiceStub(channel)
        assert v2.ServerLive(pb.ServerLiveRequest()).live and v2.ServerReady(pb.ServerReadyRequest()).ready
        with pytest.raises(grpc.RpcError) as caught:  # what names a model is not health
            v2.ModelReady(pb.ModelReadyRequest(name="lenet5-digits"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_loading_and_unloading_take_an_admin_key_on_every_protocol(secured):
    path = "/v2/repository/models/lenet5-digits/unload"
    assert secured.client.post(path).status_code == 401
    denied = secured.client.post(path, headers=bearer(PLAIN_KEY))
    assert denied.status_code == 403 and "admin key" in denied.json()["error"]
    # past the key check, this server (model_control_mode: none) refuses to unload
    assert "model_control_mode: explicit" in secured.client.post(path, headers=bearer(ADMIN_KEY)).json()["error"]
    assert secured.client.post("/v2/repository/index", headers=bearer(PLAIN_KEY)).status_code == 200
    with grpc.insecure_channel(secured.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        codes = []
        for key in (PLAIN_KEY, ADMIN_KEY):
            with pytest.raises(grpc.RpcError) as caught:
                stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="lenet5-digits"),
                                           metadata=(("authorization", f"Bearer {key}"),))
            codes.append(caught.value.code())
    assert codes == [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT]
    assert f"allowed for admin key {hashlib.sha256(ADMIN_KEY.encode()).hexdigest()[:12]}" in secured.log()


def test_keys_never_reach_the_log(secured):
    secured.client.post("/predict", files={"image": ("a.png", GOOD)}, headers=bearer(PLAIN_KEY))
    log = secured.log()
    assert PLAIN_KEY not in log and FILE_KEY not in log and ADMIN_KEY not in log
