"""A request alone in its worker skips the batcher's queue; one that has company
in the worker, even a request still being read, queues to share a batch."""

import socket

from loadtests.digit_images import digit_files

MODEL = "lenet5-digits"  # small enough to run on the event loop


def queue_ms(server) -> float:
    data = digit_files(1, 32, count=1, seed=3)[0].data
    response = server.client.post("/predict", files={"image": ("d.png", data)}, data={"model": MODEL})
    assert response.status_code == 200, response.text
    return response.json()["timings"]["queue_ms"]


def test_a_lone_request_is_run_without_queueing(one_worker):
    assert queue_ms(one_worker) == 0


def test_a_request_with_another_in_the_worker_is_queued(one_worker):
    host, port = one_worker.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as half_sent:
        half_sent.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                          b"Content-Length: 1000\r\n\r\n--b\r\n")
        assert queue_ms(one_worker) > 0
