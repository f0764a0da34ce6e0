"""Under stress the service stays honest: a flood far past capacity is answered
(served within its deadline, or refused quickly with 503 and Retry-After),
nothing is lost and service is normal right after; SIGTERM finishes what the
service accepted; a worker that dies or stops is replaced."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from loadtests.digit_images import digit_files
from loadtests.local_server import running_server
from loadtests.scenarios.v2_wire import binary_request
from tests.serving.helpers import metric_total

MODEL = "resnet18-digits"
TIMEOUT_MS = 1500
FLOOD = 400


async def flood(url: str, files: list[bytes], requests: int) -> list[tuple[int, float, dict]]:
    """``requests`` concurrent POST /predict, all at once; (status, seconds, headers) each."""
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(i: int):
            began = time.perf_counter()
            response = await client.post("/predict", files={"image": ("d.png", files[i % len(files)])},
                                         data={"model": MODEL})
            return response.status_code, time.perf_counter() - began, dict(response.headers)

        return await asyncio.gather(*(one(i) for i in range(requests)))


def test_a_flood_is_served_or_refused_quickly_and_nothing_is_lost(tmp_path, capsys):
    files = [f.data for f in digit_files(3, 64, count=32, seed=4)]
    with running_server(tmp_path, max_queue_images=48, request_timeout_ms=TIMEOUT_MS) as server:
        before = server.metrics()
        began = time.perf_counter()
        results = asyncio.run(flood(server.url, files, FLOOD))
        elapsed = time.perf_counter() - began
        after = server.metrics()
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 503, 504}, f"unexpected answers: {sorted(set(statuses))}"
        accepted = np.array([s for status, s, _ in results if status == 200])
        refused = [(status, s, h) for status, s, h in results if status != 200]
        assert len(accepted) > 0 and len(refused) > 0, "the flood must exceed capacity for this test to mean much"
        assert all(h.get("retry-after") == "1" for _, _, h in refused)
        assert accepted.max() < TIMEOUT_MS / 1000 + 2.0, "accepted requests finish within their deadline"
        def counted(outcome: str) -> float:
            return metric_total(after, "cnnserve_requests_total", model=MODEL, outcome=outcome) - metric_total(
                before, "cnnserve_requests_total", model=MODEL, outcome=outcome)

        assert counted("rejected") == statuses.count(503), "every refusal is counted"
        assert counted("timed_out") == statuses.count(504), "every request past its deadline is counted"
        def server_mean_seconds(outcome: str) -> float:
            labels = {"model": MODEL, "outcome": outcome}
            total = metric_total(after, "cnnserve_request_duration_seconds_sum", **labels) - metric_total(
                before, "cnnserve_request_duration_seconds_sum", **labels)
            count = metric_total(after, "cnnserve_request_duration_seconds_count", **labels) - metric_total(
                before, "cnnserve_request_duration_seconds_count", **labels)
            return total / count

        refusal_ms, answer_ms = server_mean_seconds("rejected") * 1000, server_mean_seconds("success") * 1000
        with capsys.disabled():
            print(f"\nflood: {FLOOD} requests at once in {elapsed:.1f} s: {len(accepted)} served "
                  f"(client p99 {np.percentile(accepted, 99) * 1000:.0f} ms, server mean {answer_ms:.0f} ms), "
                  f"{statuses.count(503)} refused with 503 and {statuses.count(504)} past their deadline with 504 "
                  f"(server mean {refusal_ms:.1f} ms)")
        assert refusal_ms < answer_ms / 3, "refusals are decided at once, not after a wait for the model"

        began = time.perf_counter()
        calm = server.client.post("/predict", files={"image": ("d.png", files[0])}, data={"model": MODEL})
        assert calm.status_code == 200 and time.perf_counter() - began < 1.0, "normal service right after"
        explained = server.client.post("/explain", files={"image": ("d.png", files[0])}, data={"model": MODEL})
        assert explained.status_code == 400 and "max_queue_images" in explained.json()["error"], \
            "an explanation whose 65 images could never fit the queue of 48 is refused, not left to fail"


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    """An untrained ResNet-18 at 224 (about 20 ms an image here): its queue, not the client, is what floods."""
    from cnnserve.training.pipeline import build_untrained

    root = tmp_path_factory.mktemp("slow")
    build_untrained("resnet18", 224, 10, root, log=lambda message: None)
    return root


async def tensor_flood(url: str, model: str, requests: int) -> list[int]:
    """``requests`` concurrent V2 binary requests of one random 224-pixel image each; their statuses."""
    body, header_length = binary_request(np.random.default_rng(6).random((1, 3, 224, 224), dtype=np.float32))
    limits = httpx.Limits(max_connections=requests)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def one() -> int:
            response = await client.post(f"/v2/models/{model}/infer", content=body,
                                         headers={"Inference-Header-Content-Length": str(header_length)})
            return response.status_code

        return await asyncio.gather(*(one() for _ in range(requests)))


@contextlib.contextmanager
def apart_from_this_process(cores: list[int]):
    """What starts inside runs on the last of ``cores``, and this process, the client, on the others once it calls
    what this yields: on two shared cores, a client taking a flood's fast refusals slowed the server's batches by
    half (142 against 80 ms a batch)."""
    os.sched_setaffinity(0, cores[-1:])
    try:
        yield lambda: os.sched_setaffinity(0, cores[:-1])
    finally:
        os.sched_setaffinity(0, cores)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores: one for the server, one for its client")
def test_requests_the_queue_could_not_start_before_their_deadline_are_refused_at_once_not_after_it(tmp_path, slow_model):
    """A flood that queues several times more work than its one-second deadlines allow: each request that the full
    batches queued ahead of it would hold past its deadline gets 503 as it arrives. Before the queue weighed its
    work, they waited their second for a 504: 33-36 of 240 served and 204-207 504s, against 29-35 served, 201-207
    503s and 4-8 504s since (client and server on a core each)."""
    cores = sorted(os.sched_getaffinity(0))
    with apart_from_this_process(cores) as client_apart, running_server(
            tmp_path, models_dir=slow_model, workers=1, max_batch_size=4, request_timeout_ms=1000) as server:
        client_apart()
        before = server.metrics()
        statuses = asyncio.run(tensor_flood(server.url, "resnet18-imagenet-untrained", 240))
        after = server.metrics()
    print(f"\n{statuses.count(200)} served, {statuses.count(503)} refused at once, {statuses.count(504)} after "
          "their deadline")
    assert set(statuses) <= {200, 503, 504} and statuses.count(200) > 0
    assert statuses.count(503) > 4 * statuses.count(504)
    labels = {"model": "resnet18-imagenet-untrained", "outcome": "rejected"}
    seconds, count = (metric_total(after, f"cnnserve_request_duration_seconds_{part}", **labels)
                      - metric_total(before, f"cnnserve_request_duration_seconds_{part}", **labels)
                      for part in ("sum", "count"))
    assert count == statuses.count(503) and seconds / count < 0.005, "refused as they arrived"


def worker_pids(server) -> set[int]:
    """Live worker processes (a killed one lingers as a zombie until reaped)."""
    pids = set()
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:
            continue
    return pids


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_killed_or_stopped_worker_is_replaced_and_service_recovers(tmp_path, capsys, how):
    """SIGTERM is how a worker whose GPU's CUDA context is lost stops itself (``ModelHost.lose_device``)."""
    files = [f.data for f in digit_files(1, 32, count=4, seed=8)]
    with running_server(tmp_path, workers=2) as server:
        original = worker_pids(server)
        assert len(original) == 2
        victim = sorted(original)[0]
        killed_at = time.perf_counter()
        os.kill(victim, how)
        deadline = killed_at + 60
        while time.perf_counter() < deadline:
            pids = worker_pids(server)
            if len(pids) == 2 and victim not in pids:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the worker ({how.name}) was not replaced within 60 s")
        while time.perf_counter() < deadline:
            answers = [server.client.post("/predict", files={"image": ("d.png", f)}, data={"model": "lenet5-digits"})
                       for f in files * 5]
            if all(a.status_code == 200 for a in answers) and server.client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        recovered = time.perf_counter() - killed_at
        with capsys.disabled():
            print(f"\nworker {how.name}: replaced and serving again after {recovered:.1f} s")
        assert recovered < 60


def raw_predict(port: int, body: bytes, boundary: str, connected: list) -> str:
    """One request over a fresh socket; notes when its connection was established."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        connected.append(time.perf_counter())
        head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
        conn.sendall(head.encode() + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.split(b" ", 2)[1].decode() if answer else "empty"


def test_sigterm_serves_every_connection_made_before_it_then_refuses(tmp_path):
    """Every connection established before SIGTERM (with 50 ms for a worker to
    accept it) is answered; from 50 ms after it, connections are refused rather
    than left in a backlog no worker reads; the server exits 0."""
    boundary = "cnnserve-test"
    image = digit_files(1, 32, count=1, seed=6)[0].data
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nlenet5-digits\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"d.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()

    def client_loop(port: int):
        while not stop.is_set():
            connected: list[float] = []
            try:
                status = raw_predict(port, body, boundary, connected)
            except ConnectionRefusedError:
                time.sleep(0.05)
                continue
            except OSError as exc:
                status = type(exc).__name__
            if connected:
                outcomes.append((connected[0], status))

    with running_server(tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        threads = [threading.Thread(target=client_loop, args=(port,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        signalled = time.perf_counter()
        os.kill(server.process.pid, signal.SIGTERM)
        exit_code = server.process.wait(timeout=60)
        stop.set()
        for thread in threads:
            thread.join()
    before = [status for connected, status in outcomes if connected < signalled - 0.05]
    assert len(before) > 20, "the server was under load when it got SIGTERM"
    assert set(before) == {"200"}, f"connections made before SIGTERM failed: {sorted(set(before))}"
    after = [status for connected, status in outcomes if connected > signalled + 0.05]
    assert not after, f"connections were still accepted after SIGTERM: {after}"
    assert exit_code == 0


def test_a_client_that_stalls_or_trickles_its_body_gets_408_and_the_worker_serves_on(tmp_path):
    """Clients that declare a body and stall, send a byte a second, or send chunks and stall: each gets 408 once
    ``body_timeout_s`` has passed (within the clock's one-second sweep), its connection closed after it, and a
    good request is served meanwhile."""
    with running_server(tmp_path, serve="lenet5-digits", workers="1", body_timeout_s="2") as server:
        host, port = server.url.removeprefix("http://").split(":")

        def slow_client(path: str, framing: str, trickle: bool) -> tuple[bytes, float]:
            began = time.perf_counter()
            with socket.create_connection((host, int(port)), timeout=15) as sock:
                kind = "multipart/form-data; boundary=b" if path == "/predict" else "application/json"
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n{framing}\r\n".encode())
                sock.sendall(b"1\r\n{\r\n" if "chunked" in framing else b"{")
                sock.settimeout(0.5)
                answer = b""
                while time.perf_counter() - began < 10:
                    try:
                        received = sock.recv(4096)
                    except TimeoutError:
                        if trickle:
                            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed meanwhile
                                sock.sendall(b" ")
                        continue
                    except ConnectionResetError:  # closed with a trickled byte unread: TCP resets, after the answer
                        return answer, time.perf_counter() - began
                    if not received:  # closed by the server
                        return answer, time.perf_counter() - began
                    answer += received
                return answer + b" (still open)", time.perf_counter() - began

        with ThreadPoolExecutor(3) as pool:
            stalled = pool.submit(slow_client, "/v2/models/lenet5-digits/infer", "Content-Length: 100000\r\n", False)
            trickled = pool.submit(slow_client, "/predict", "Content-Length: 100000\r\n", True)
            chunked = pool.submit(slow_client, "/predict", "Transfer-Encoding: chunked\r\n", False)
            good = httpx.post(f"{server.url}/predict", files={"image": ("d.png", digit_files(1, 32, count=1)[0].data)},
                              timeout=10)
            assert good.status_code == 200
            for answer, seconds in (stalled.result(), trickled.result(), chunked.result()):
                assert answer.startswith(b"HTTP/1.1 408") and answer.endswith(b"}"), answer[-300:]
                assert 2 <= seconds < 4.5


def test_a_small_file_declaring_many_pixels_decodes_off_the_event_loop(one_worker):
    """A flat 4000x4000 WebP is 1 KB and takes a quarter of a second to decode: by its bytes it was small enough to
    decode on the event loop, where 64 of them held every request of the worker for 30 s. By its header's pixels it
    goes to a thread, and the worker answers meanwhile."""
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000), 250).save(buffer, "WEBP", lossless=True)
    assert len(buffer.getvalue()) < 4096
    files = [("images", (f"{i}.webp", buffer.getvalue())) for i in range(8)]
    with ThreadPoolExecutor(1) as pool:
        began = time.perf_counter()
        heavy = pool.submit(one_worker.client.post, "/predict_batch", files=files, data={"model": "lenet5-digits"})
        pauses = []
        while not heavy.done():
            asked = time.perf_counter()
            assert one_worker.client.get("/livez").status_code == 200
            pauses.append(time.perf_counter() - asked)
        # served, or past the request's deadline on a machine busy enough to take 10 s over it: decoded either way
        assert heavy.result().status_code in (200, 504), heavy.result().text
    decoding = time.perf_counter() - began
    assert decoding > 1.0, "not heavy enough to tell"
    assert max(pauses) < decoding / 3, f"the worker answered after {max(pauses):.2f} s of a {decoding:.2f} s decode"
