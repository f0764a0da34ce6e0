"""Serve a checkout's code on a model repository and run measure.py against it.

    python serve_and_measure.py CHECKOUT MODELS_DIR
"""
import subprocess
import sys
import tempfile
from pathlib import Path

checkout, models = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, str(checkout))
from loadtests.local_server import running_server  # noqa: E402  (the checkout's own)

with running_server(Path(tempfile.mkdtemp()), cwd=checkout, models_dir=models, workers="2") as server:
    subprocess.run([sys.executable, str(Path(__file__).with_name("measure.py")), server.url], cwd=checkout,
                   env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}, check=True)
