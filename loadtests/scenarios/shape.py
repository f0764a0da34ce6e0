"""The load shape: a stage table from ``--stages``, or just ``-u``/``-r``/``-t``.

Locust runs the first shape class it finds in a locustfile and then ignores
``-u``/``-r`` unless the shape reads them (``use_common_options``), so this one
shape does both: with ``--stages NAME`` it follows that table and ends after
its last row; without, it holds ``-u`` users spawned at ``-r``. Either way it
ends the run at ``-t``: Locust 2.47 arms its own run-time timer only after a
shape has finished, and never for a shape started from the web UI.
"""

from __future__ import annotations

from locust import LoadTestShape

from .options import NO_STAGES
from .stages import STAGES, stage_at


class StagedShape(LoadTestShape):
    use_common_options = True

    def tick(self):
        options = self.runner.environment.parsed_options
        elapsed = self.get_run_time()
        if options.run_time and elapsed >= options.run_time:
            return None
        if options.stages != NO_STAGES:
            stage = stage_at(STAGES[options.stages], elapsed)
            return None if stage is None else (stage.users, stage.spawn_rate)
        return int(options.num_users or 1), float(options.spawn_rate or 1)
