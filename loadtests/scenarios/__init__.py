"""Locust scenarios against a running cnnserve, every answer checked.

The modules without ``locust`` in their imports (catalog, stages, target,
samples, wire formats, checks, summary) are plain Python, so the gate and the
tests use them without gevent's monkey-patching; ``users``, ``grpc_user``,
``shape`` and ``lifecycle`` are the Locust side, loaded by ``loadtests/locustfile.py``.
"""
