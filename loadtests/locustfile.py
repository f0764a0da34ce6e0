"""Locust scenarios against a running cnnserve; every answer is checked.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000 --web-host 127.0.0.1
    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000 --headless -u 5 -r 5 -t 30s \\
        PredictUser GrpcUser --grpc-host 127.0.0.1:3001 --model lenet5-digits
    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000 --headless --stages ramp --tags v2

Users: PredictUser, PredictBatchUser, V2JsonUser, V2BinaryUser, GrpcUser (all
of them unless named, or chosen by --tags). The scenarios live in
loadtests/scenarios/; ``python -m loadtests.gate`` runs them as a pass/fail
check. See loadtests/README.md.
"""

import sys
from pathlib import Path

# Locust imports this file by path; make the project importable from any working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.scenarios import lifecycle
from loadtests.scenarios.grpc_user import GrpcUser
from loadtests.scenarios.shape import StagedShape
from loadtests.scenarios.users import PredictBatchUser, PredictUser, V2BinaryUser, V2JsonUser

__all__ = ["GrpcUser", "PredictBatchUser", "PredictUser", "StagedShape", "V2BinaryUser", "V2JsonUser", "lifecycle"]
