"""The locustfile's own command-line options (Locust's ``init_command_line_parser``).

The thresholds and the summary belong to headless runs, so they stay out of
the web UI's form; the rest can be changed there before each run.
"""

from __future__ import annotations

from .stages import STAGES

NO_STAGES = "none"


def add_options(parser) -> None:
    parser.add_argument("--model", default="resnet18-digits", help="model to load (input shape read from GET /models)")
    parser.add_argument("--grpc-host", default="127.0.0.1:3001", help="gRPC address (host:port) for GrpcUser")
    parser.add_argument(
        "--api-key", default="", env_var="CNNSERVE_CLIENT_API_KEY", is_secret=True,
        help="bearer key when the server has CNNSERVE_API_KEYS set (prefer the environment variable)",
    )
    parser.add_argument(
        "--stages", default=NO_STAGES, choices=[NO_STAGES, *STAGES],
        help="follow a stage table (loadtests/scenarios/stages.py) instead of -u/-r",
    )
    parser.add_argument("--files-per-batch", type=int, default=4, help="image files per POST /predict_batch")
    parser.add_argument("--rolling", action="store_true", default=False,
                        help="a new version may start serving during the run: answers from it are right too")
    parser.add_argument("--tensor-batch", type=int, default=1, help="images per V2 / gRPC request")
    parser.add_argument(
        "--max-requests", type=int, default=0, include_in_web_ui=False,
        help="stop once this many requests are done in all (0: no limit)",
    )
    parser.add_argument(
        "--max-failure-ratio", type=float, default=0.0, include_in_web_ui=False,
        help="fail (exit 1) when any request name's failure ratio is above this",
    )
    parser.add_argument(
        "--max-p95-ms", type=float, default=None, include_in_web_ui=False,
        help="fail (exit 1) when any request name's p95 latency is above this",
    )
    parser.add_argument(
        "--summary", default=None, include_in_web_ui=False,
        help="write the verdict to SUMMARY.json and SUMMARY.md",
    )
