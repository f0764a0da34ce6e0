"""`bentoml build` packs the service and the model repository into a Bento that
serves on its own, away from this checkout."""

import os
import subprocess
import tomllib

from loadtests.local_server import BENTOML, REPO_ROOT, running_server
from tests.serving.helpers import GOOD

BENTOFILE = REPO_ROOT / "deploy" / "bentofile.yaml"


def requirement_names(lines) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.split("==")[0].split(">=")[0].split("[")[0].strip().lower())
    return names


def test_the_bento_requirements_match_the_project():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    expected = requirement_names(project["dependencies"] + project["optional-dependencies"]["cpu"])
    actual = requirement_names((REPO_ROOT / "deploy" / "requirements.txt").read_text().splitlines())
    assert actual == expected


def test_a_built_bento_carries_the_page_and_serves_predictions(tmp_path):
    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    build = subprocess.run(
        [*BENTOML, "build", "-f", str(BENTOFILE), "--output", "tag", str(REPO_ROOT)],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("cnnserve:")
    bento = home / "bentos" / "cnnserve" / tag.split(":")[1]
    assert sorted(p.name for p in (bento / "src" / "models").iterdir()) == [
        "lenet5-digits", "resnet18-digits", "vgg11-digits"]
    # the page's files are not Python: the bentofile must name them (the server below would import this checkout's
    # editable install, so only the bundle itself tells)
    assert {p.name for p in (bento / "src" / "cnnserve" / "serving" / "page").iterdir()} >= {
        "index.html", "page.js", "page.css"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with running_server(tmp_path, target=tag, cwd=elsewhere, bentoml_home=home) as server:
        assert server.client.get("/readyz").status_code == 200
        response = server.client.post("/predict", files={"image": ("a.png", GOOD)}, data={"model": "lenet5-digits"})
        assert response.status_code == 200 and response.json()["model"] == "lenet5-digits"
