"""The run's plan and verdict without a server: stages, scenario names, thresholds, gate arguments."""

import pytest

from loadtests.gate import parse_seconds, run_gate
from loadtests.scenarios.catalog import SCENARIOS, scenarios_named
from loadtests.scenarios.stages import STAGES, Stage, stage_at
from loadtests.scenarios.summary import FAILED, PASSED, SETUP_FAILED, Row, Summary, judge


def test_stages_run_in_order_and_end():
    stages = [Stage(10, 2, 1), Stage(5, 8, 4)]
    assert stage_at(stages, 0) == stages[0] and stage_at(stages, 9.9) == stages[0]
    assert stage_at(stages, 10) == stages[1] and stage_at(stages, 14.9) == stages[1]
    assert stage_at(stages, 15) is None


def test_every_stage_table_reaches_a_user_per_scenario():
    for name, stages in STAGES.items():
        assert max(s.users for s in stages) >= len(SCENARIOS), name


def test_scenarios_by_name():
    assert [s.user_class for s in scenarios_named("grpc, predict,grpc")] == ["GrpcUser", "PredictUser"]
    assert len(scenarios_named("all")) == len(SCENARIOS)
    with pytest.raises(ValueError, match="unknown scenario"):
        scenarios_named("predict,soap")


def row(name, requests=100, failures=0, p95=50.0):
    return Row("POST", name, requests, failures, 10.0, p95, p95 * 2, 20.0)


EXPECTED = [("POST", "/a"), ("POST", "/b")]


def test_each_threshold_is_judged_on_the_worst_request_name():
    checks = judge([row("/a"), row("/b", failures=2, p95=700)], EXPECTED, 0.01, 500)
    by_name = {c.name: c for c in checks}
    assert by_name["every scenario sent requests"].passed
    assert not by_name["max failure ratio"].passed and "POST /b 0.0200" in by_name["max failure ratio"].reason
    assert not by_name["max p95 ms"].passed and "POST /b 700 ms" in by_name["max p95 ms"].reason
    summary = Summary({}, [], row("Aggregated"), checks)
    assert summary.exit_code == FAILED and "| max p95 ms | 500 | FAIL |" in summary.to_markdown()


def test_a_silent_scenario_fails_the_run_even_without_thresholds():
    checks = judge([row("/a"), row("/b", requests=0)], EXPECTED, None, None)
    assert [c.passed for c in checks] == [False] and "POST /b" in checks[0].reason
    assert Summary({}, [], row("Aggregated"), judge([row("/a"), row("/b")], EXPECTED, None, None)).exit_code == PASSED


def test_a_setup_error_is_its_own_exit_code():
    checks = judge([], EXPECTED, 0.01, 500, setup_error="model 'x' is not served")
    summary = Summary({}, [], row("Aggregated", requests=0), checks)
    assert summary.exit_code == SETUP_FAILED and summary.to_json()["passed"] is False


def test_time_spans_read_like_locusts():
    assert parse_seconds("90") == 90 and parse_seconds("20s") == 20 and parse_seconds("1h2m3s") == 3723


@pytest.mark.parametrize("argv, message", [
    (["--scenario", "predict,soap"], "unknown scenario"),
    (["--users", "2"], "2 user(s) cannot run 5 scenarios"),
    (["--run-time", "soon"], "not a time span"),
])
def test_the_gate_refuses_a_run_that_cannot_pass(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_gate([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == SETUP_FAILED
    assert message in capsys.readouterr().err
