"""cnnserve: CNN classification + localization served over REST and gRPC."""

__version__ = "0.1.0"
