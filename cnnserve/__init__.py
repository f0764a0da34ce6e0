"""cnnserve: CNNs with a class head and a box head, trained, exported to ONNX and served over REST and gRPC.

``cnnserve.contract`` is what both sides share, ``cnnserve.training`` makes
models, ``cnnserve.serving`` serves them; neither of the last two imports the other.
"""

__version__ = "0.1.0"
