"""The server: a BentoML service whose every worker batches, over REST, V2 REST and gRPC (``app.py``)."""
