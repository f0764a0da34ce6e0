"""Settings: defaults, then the YAML file, then CNNSERVE_* variables."""

import pytest

from cnnserve.serving.config import Batching, Settings, VersionPolicy, load_settings


def test_defaults_need_no_file(tmp_path):
    settings = load_settings(environ={}, config_file=tmp_path / "absent.yaml")
    assert settings == Settings()


def test_yaml_then_environment_override(tmp_path):
    path = tmp_path / "cnnserve.yaml"
    path.write_text(
        "models_dir: /srv/models\nmax_batch_size: 32\nserve: [a, b]\n"
        "models:\n  a: {max_batch_size: 128, max_queue_delay_ms: 3, max_queue_images: 512}\n"
    )
    settings = load_settings(environ={"CNNSERVE_MAX_BATCH_SIZE": "16", "CNNSERVE_BATCHING": "false"}, config_file=path)
    assert str(settings.models_dir) == "/srv/models"
    assert settings.serve == ("a", "b")
    assert settings.max_batch_size == 16 and settings.batching is False
    assert settings.batching_for("a") == Batching(128, 3.0, 512)
    assert settings.batching_for("b") == Batching(16, 0.0, settings.max_queue_images)


def test_unknown_keys_are_refused_by_name(tmp_path):
    path = tmp_path / "cnnserve.yaml"
    path.write_text("max_bach_size: 3\n")
    with pytest.raises(ValueError, match="max_bach_size"):
        load_settings(environ={}, config_file=path)


def test_a_removed_setting_is_refused_with_what_became_of_it(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("shared_batches: true\n")
    with pytest.raises(ValueError, match="shared_batches .* was removed: on an H100"):
        load_settings({}, config)
    with pytest.raises(ValueError, match="CNNSERVE_SHARED_BATCHES\\) was removed"):
        load_settings({"CNNSERVE_SHARED_BATCHES": "false"}, tmp_path / "none.yaml")


def test_unknown_keys_under_a_model_are_refused_by_name(tmp_path):
    path = tmp_path / "cnnserve.yaml"
    path.write_text("models:\n  lenet5-digits: {max_batch_size: 256, max_bach_size: 3}\n")
    with pytest.raises(ValueError, match="models.lenet5-digits.*max_bach_size"):
        load_settings(environ={}, config_file=path)


def test_a_model_named_without_settings_takes_the_global_ones(tmp_path):
    path = tmp_path / "cnnserve.yaml"
    path.write_text("max_batch_size: 48\nmodels:\n  lenet5-digits:\n")
    settings = load_settings(environ={}, config_file=path)
    assert settings.batching_for("lenet5-digits").max_batch_size == 48


@pytest.mark.parametrize(("text", "message"), [
    ("- max_batch_size: 3\n", "must be a mapping of setting: value, not a list"),
    ("models: [lenet5-digits]\n", "models in .* must map model names to their settings, not be a list"),
    ("models:\n  lenet5-digits: 256\n", "models.lenet5-digits in .* must be a mapping of max_batch_size"),
])
def test_a_file_of_the_wrong_shape_is_refused_with_where(tmp_path, text, message):
    path = tmp_path / "cnnserve.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_settings(environ={}, config_file=path)


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
@pytest.mark.parametrize("name", ["repository_poll_seconds", "body_timeout_s"])
def test_intervals_must_be_positive(name, seconds):
    with pytest.raises(ValueError, match=f"{name} must be positive"):
        load_settings(environ={f"CNNSERVE_{name.upper()}": seconds, "CNNSERVE_CONFIG": "/dev/null"})


def test_config_variable_naming_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_settings(environ={"CNNSERVE_CONFIG": str(tmp_path / "nope.yaml")})


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        load_settings(environ={"CNNSERVE_PRECISION": "int4", "CNNSERVE_CONFIG": "/dev/null"})


def test_a_negative_grpc_connection_age_is_refused():
    with pytest.raises(ValueError, match="grpc_max_connection_age_s"):
        load_settings(environ={"CNNSERVE_GRPC_MAX_CONNECTION_AGE_S": "-1", "CNNSERVE_CONFIG": "/dev/null"})


def test_gpu_batch_shapes_take_one_of_two_names():
    assert load_settings(environ={"CNNSERVE_GPU_BATCH_SHAPES": "largest", "CNNSERVE_CONFIG": "/dev/null"}) \
        .gpu_batch_shapes == "largest"
    with pytest.raises(ValueError, match="gpu_batch_shapes must be one of powers_of_two, largest"):
        load_settings(environ={"CNNSERVE_GPU_BATCH_SHAPES": "all", "CNNSERVE_CONFIG": "/dev/null"})


@pytest.mark.parametrize("cores", [1, 2, 4, 16])
def test_default_workers_times_threads_fit_the_cores(cores):
    settings = Settings()
    assert settings.inference_workers(cores) * settings.session_threads(cores) <= cores


def test_explicit_threads_shrink_the_worker_count():
    settings = Settings(threads=2)
    assert settings.inference_workers(8) == 4 and settings.session_threads(8) == 2


def test_on_gpus_there_are_eight_workers_per_gpu_within_the_cores_unless_workers_are_set():
    assert Settings().inference_workers(32, gpus=2) == 16 and Settings().session_threads(32, gpus=2) == 2
    assert Settings().inference_workers(16, gpus=1) == 8 and Settings().session_threads(16, gpus=1) == 2
    assert Settings().inference_workers(12, gpus=2) == 12  # the cores bound them
    assert Settings().inference_workers(2, gpus=1) == 2  # no more workers than cores
    assert Settings().inference_workers(2, gpus=4) == 4  # but at least one per GPU
    assert Settings(workers=3).inference_workers(16, gpus=2) == 3
    assert Settings().inference_workers(16, gpus=0) == 16  # no GPU: as before


def test_a_version_policy_selects_among_the_versions_found():
    assert VersionPolicy().select([3, 1, 2]) == [1, 2, 3]
    assert VersionPolicy("latest:2").select([3, 1, 2]) == [2, 3]
    assert VersionPolicy("specific:1,3").select([3, 1, 2]) == [1, 3]
    for bad in ("latest", "latest:0", "latest:x", "specific:", "newest:1", "all:2"):
        with pytest.raises(ValueError, match="version_policy"):
            VersionPolicy(bad)


def test_version_policies_come_from_the_environment_and_per_model_from_yaml(tmp_path):
    config = tmp_path / "cnnserve.yaml"
    config.write_text("models:\n  lenet5-digits: {version_policy: 'specific:3'}\n")
    settings = load_settings({"CNNSERVE_VERSION_POLICY": "latest:1"}, config)
    assert settings.version_policy_for("resnet18-digits") == VersionPolicy("latest:1")
    assert settings.version_policy_for("lenet5-digits") == VersionPolicy("specific:3")


NO_FILE = {"CNNSERVE_CONFIG": "/dev/null"}


def test_auto_is_taken_only_by_the_settings_that_document_it():
    settings = load_settings(environ={"CNNSERVE_WORKERS": "auto", "CNNSERVE_THREADS": "Auto", **NO_FILE})
    assert settings.workers == 0 and settings.threads == 0
    with pytest.raises(ValueError, match="max_batch_size = 'auto' from CNNSERVE_MAX_BATCH_SIZE"):
        load_settings(environ={"CNNSERVE_MAX_BATCH_SIZE": "auto", **NO_FILE})


@pytest.mark.parametrize("name", ["max_batch_size", "max_queue_images", "max_images_per_request", "default_top_k",
                                  "max_explain_windows", "max_image_pixels", "max_body_bytes", "max_tensor_elements",
                                  "grpc_max_message_bytes"])
def test_counts_and_sizes_must_be_at_least_one(name):
    with pytest.raises(ValueError, match=f"{name} = '0' from CNNSERVE_{name.upper()}: {name} must be at least 1"):
        load_settings(environ={f"CNNSERVE_{name.upper()}": "0", **NO_FILE})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("workers", "-1", "workers must be 0"),
    ("threads", "-2", "threads must be 0"),
    ("max_queue_delay_ms", "-1", "max_queue_delay_ms must be 0 or more"),
    ("max_queue_delay_ms", "nan", "max_queue_delay_ms must be 0 or more"),
    ("request_timeout_ms", "0", "request_timeout_ms must be positive"),
    ("grpc_port", "70000", "grpc_port must be a port"),
])
def test_other_numbers_out_of_range_are_refused_by_name(name, value, message):
    with pytest.raises(ValueError, match=message):
        load_settings(environ={f"CNNSERVE_{name.upper()}": value, **NO_FILE})


@pytest.mark.parametrize("text", ["max_batch_size: 0", "max_queue_images: auto", "max_queue_delay_ms: -1",
                                  "max_batch_size: abc"])
def test_per_model_values_are_checked_naming_the_model_and_file(tmp_path, text):
    path = tmp_path / "cnnserve.yaml"
    path.write_text(f"models:\n  lenet5-digits: {{{text}}}\n")
    name = text.split(":")[0]
    with pytest.raises(ValueError, match=f"{name} = .* from models.lenet5-digits in {path}"):
        load_settings(environ={}, config_file=path)


def test_an_unparsable_value_names_the_setting_where_it_came_from_and_the_value(tmp_path):
    with pytest.raises(ValueError, match="max_batch_size = 'abc' from CNNSERVE_MAX_BATCH_SIZE: invalid literal"):
        load_settings(environ={"CNNSERVE_MAX_BATCH_SIZE": "abc", **NO_FILE})
    path = tmp_path / "cnnserve.yaml"
    path.write_text("body_timeout_s: soon\n")
    with pytest.raises(ValueError, match=f"body_timeout_s = 'soon' from {path}"):
        load_settings(environ={}, config_file=path)


@pytest.mark.parametrize("word", ["ture", "", "2", "enabled"])
def test_a_boolean_takes_only_the_usual_words_and_refuses_any_other_by_name(word):
    for usual, value in [("1", True), ("TRUE", True), ("yes", True), ("On", True),
                         ("0", False), ("false", False), ("No", False), ("off", False)]:
        assert load_settings(environ={"CNNSERVE_BATCHING": usual, **NO_FILE}).batching is value
    with pytest.raises(ValueError, match="batching = .* from CNNSERVE_BATCHING: batching is true or false"):
        load_settings(environ={"CNNSERVE_BATCHING": word, **NO_FILE})


def test_a_misspelt_variable_is_refused_with_the_closest_setting():
    with pytest.raises(ValueError, match="CNNSERVE_MAX_BATCH_SISE.*did you mean CNNSERVE_MAX_BATCH_SIZE"):
        load_settings(environ={"CNNSERVE_MAX_BATCH_SISE": "8", **NO_FILE})
    with pytest.raises(ValueError, match="CNNSERVE_API_KEY .*did you mean CNNSERVE_API_KEYS"):  # ran with no keys
        load_settings(environ={"CNNSERVE_API_KEY": "secret", **NO_FILE})
    with pytest.raises(ValueError, match="CNNSERVE_PER_MODEL"):  # a field, but not one the environment sets
        load_settings(environ={"CNNSERVE_PER_MODEL": "x", **NO_FILE})
    # the CNNSERVE_* variables that the server's arbiter, the load generators and the tests read are let through
    others = ["CNNSERVE_WORKER_LISTEN", "CNNSERVE_CLIENT_API_KEY", "CNNSERVE_BASELINE_MODEL",
              "CNNSERVE_BASELINE_THREADS", "CNNSERVE_COMMIT", "CNNSERVE_PAGE_SCREENSHOT"]
    assert load_settings(environ={**dict.fromkeys(others, "x"), **NO_FILE}) == Settings()


def test_the_variables_kubernetes_puts_in_a_pod_for_a_service_named_cnnserve_are_let_through():
    """Every pod of a namespace with a Service named cnnserve gets these (enableServiceLinks, on by default)."""
    links = {"CNNSERVE_SERVICE_HOST": "10.0.0.7", "CNNSERVE_SERVICE_PORT": "3000", "CNNSERVE_SERVICE_PORT_HTTP": "3000",
             "CNNSERVE_PORT": "tcp://10.0.0.7:3000", "CNNSERVE_PORT_3000_TCP": "tcp://10.0.0.7:3000",
             "CNNSERVE_PORT_3000_TCP_PROTO": "tcp", "CNNSERVE_PORT_3000_TCP_PORT": "3000",
             "CNNSERVE_PORT_3000_TCP_ADDR": "10.0.0.7", "CNNSERVE_GPU_SERVICE_HOST": "10.0.0.8",
             "CNNSERVE_GPU_PORT_3001_TCP": "tcp://10.0.0.8:3001"}
    assert load_settings(environ={**links, **NO_FILE}) == Settings()
    assert load_settings(environ={"CNNSERVE_GRPC_PORT": "4001", **NO_FILE}).grpc_port == 4001  # a setting still
