"""The benchmark harness behind ``make bench``: the limit (raw ONNX Runtime), the
served figures per protocol and concurrency, a hand-written baseline server, and
the report. ``python -m loadtests.bench --help`` for the options."""
