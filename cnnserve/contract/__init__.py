"""The model contract: what training writes and serving relies on (card names and files, the letterbox,
image files to model input). Imports neither side."""
