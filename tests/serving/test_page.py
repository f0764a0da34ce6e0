"""The page at ``/``, in a real headless Chromium driven through chromedriver: it loads from the running server,
takes a picture the way a person gives it one (the file input), shows the label, draws the box where the JSON
answer puts it and, on request, the occlusion map where ``POST /explain`` says the model looks. With API keys on,
the page itself still loads, asks for a key, and answers once one is typed.

A screenshot of the answered page is written to ``CNNSERVE_PAGE_SCREENSHOT`` (default: the test's own folder);
``docs/try-page.png`` is one:
``CNNSERVE_PAGE_SCREENSHOT=docs/try-page.png python -m pytest tests/serving/test_page.py``.
"""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from cnnserve.serving.annotate import BOX_COLOUR, HEAT_OPACITY
from loadtests.digit_images import CONDITIONS_BY_NAME, EXIF_ORIENTATION, condition_files
from loadtests.local_server import running_server
from loadtests.pointing_game import hottest_point
from tests.committed import VERSIONS
from tests.conftest import MODELS_DIR, REPO_ROOT
from tests.serving.helpers import edge_points

EXAMPLE = REPO_ROOT / "docs" / "example-digit.png"
WINDOW = (1000, 700)
KEY = "page-key-5be1"


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")),
                              options=options)
    yield driver
    driver.quit()


def wait_for(browser, condition, seconds: float = 60):
    return WebDriverWait(browser, seconds, poll_frequency=0.1).until(lambda _: condition())


def text(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def canvas_pixels(browser, canvas_id: str, points: list[tuple[int, int]]) -> tuple[tuple[int, int], np.ndarray]:
    """A canvas's size in its own pixels and the RGBA values at ``points`` (x, y), read back from the page."""
    width, height, values = browser.execute_script(
        """const canvas = document.getElementById(arguments[0]);
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        const at = ([x, y]) => Array.from(data.slice(4 * (y * canvas.width + x), 4 * (y * canvas.width + x) + 4));
        return [canvas.width, canvas.height, arguments[1].map(at)];""", canvas_id, [list(p) for p in points])
    return (width, height), np.array(values)


def ask(browser, url: str, model: str) -> None:
    browser.get(f"{url}/")
    models = lambda: Select(browser.find_element(By.ID, "model"))
    wait_for(browser, lambda: model in [option.get_attribute("value") for option in models().options])
    models().select_by_value(model)
    browser.find_element(By.ID, "file").send_keys(str(EXAMPLE))


def test_the_page_shows_the_answer_its_box_and_where_the_model_looks(server, browser, tmp_path):
    sent = {"image": ("example-digit.png", EXAMPLE.read_bytes())}
    answer = server.client.post("/predict?model=resnet18-digits", files=sent).json()
    explained = server.client.post("/explain?model=resnet18-digits", files=sent).json()
    ask(browser, server.url, "resnet18-digits")
    wait_for(browser, lambda: text(browser, "label"))
    assert text(browser, "label") == answer["label"] == "6"
    assert f"version {VERSIONS['resnet18-digits']}" in text(browser, "status")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars li")) == 5
    assert not browser.find_element(By.ID, "key-field").is_displayed()  # no keys, no key field

    points = [(min(x, answer["image_size"]["width"] - 1), min(y, answer["image_size"]["height"] - 1))
              for x, y in edge_points(answer["box"])]
    size, pixels = canvas_pixels(browser, "overlay", points)
    assert size == (answer["image_size"]["width"], answer["image_size"]["height"])  # the picture's own pixels
    on_edge = (pixels == [*BOX_COLOUR, 255]).all(axis=1)
    assert on_edge.mean() >= 0.95, f"{on_edge.mean():.2f} of the box's edge drawn"
    natural = browser.execute_script("const i = document.getElementById('image'); "
                                     "return [i.naturalWidth, i.naturalHeight];")
    assert tuple(natural) == size

    (_, heat_before) = canvas_pixels(browser, "heat", [tuple(round(v) for v in hottest_point(explained))])
    assert heat_before[0][3] == 0  # no map until asked
    browser.find_element(By.ID, "explain").click()
    wait_for(browser, lambda: "occlusion map" in text(browser, "status"))
    x, y = hottest_point(explained)
    (_, heat) = canvas_pixels(browser, "heat", [(round(x), round(y))])
    assert heat[0][3] >= round(HEAT_OPACITY * 255) - 2, "the hottest cell of /explain's map is drawn at full heat"

    screenshot = Path(os.environ.get("CNNSERVE_PAGE_SCREENSHOT", tmp_path / "try-page.png"))
    assert browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] >= WINDOW[0] - 20


def test_a_photo_turned_by_its_exif_tag_is_drawn_in_the_orientation_the_answer_uses(server, browser, tmp_path):
    """The server answers in the picture's pixels after EXIF orientation; the browser shows it turned the same way,
    so the canvases (sized from the answer) lie exactly over the picture."""
    turned = next(f for f in condition_files(CONDITIONS_BY_NAME["photo-like"], count=12)
                  if Image.open(io.BytesIO(f.data)).getexif().get(EXIF_ORIENTATION) in (6, 8))
    stored = Image.open(io.BytesIO(turned.data)).size
    assert stored == turned.size[::-1]  # stored sideways, shown upright
    path = tmp_path / "turned.jpg"
    path.write_bytes(turned.data)
    browser.get(f"{server.url}/")
    wait_for(browser, lambda: Select(browser.find_element(By.ID, "model")).options)
    browser.find_element(By.ID, "file").send_keys(str(path))
    width, height = turned.size
    wait_for(browser, lambda: f"{width}×{height} px" in text(browser, "details"))
    natural = browser.execute_script("const i = document.getElementById('image'); "
                                     "return [i.naturalWidth, i.naturalHeight];")
    (size, _) = canvas_pixels(browser, "overlay", [])
    assert tuple(natural) == size == (width, height)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keyed")
    shutil.copytree(MODELS_DIR / "lenet5-digits", folder / "models" / "lenet5-digits")
    with running_server(folder, workers=1, api_keys=KEY, models_dir=folder / "models") as server:
        yield server


def test_with_keys_on_the_page_loads_asks_for_a_key_and_answers_with_it(keyed, browser):
    assert keyed.client.get("/").status_code == 200 and keyed.client.get("/models").status_code == 401
    browser.get(f"{keyed.url}/")
    wait_for(browser, lambda: "API key" in text(browser, "status"))
    assert browser.find_element(By.ID, "key-field").is_displayed()
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.ID, "model").click()  # leaving the field sends it
    wait_for(browser, lambda: Select(browser.find_element(By.ID, "model")).options)
    browser.find_element(By.ID, "file").send_keys(str(EXAMPLE))
    wait_for(browser, lambda: text(browser, "label"))
    assert "lenet5-digits" in text(browser, "status")
