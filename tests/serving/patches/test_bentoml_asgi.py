"""BentoML hands the wrapped service's ASGI app through cnnserve's wrapper, and no other service's."""

import bentoml

from cnnserve.serving.patches.bentoml_asgi import wrap_service_app


@bentoml.service(name="wrapped")
class Wrapped:
    pass


@bentoml.service(name="untouched")
class Untouched:
    pass


def test_the_wrapper_sees_the_service_app_and_only_that_one(monkeypatch):
    monkeypatch.setattr(type(Wrapped), "to_asgi", type(Wrapped).to_asgi)  # undone after the test
    seen = []
    assert wrap_service_app(Wrapped, lambda app: seen.append(app) or ("wrapped", app))
    kind, app = Wrapped.to_asgi()
    assert kind == "wrapped" and seen == [app] and callable(app)
    assert not isinstance(Untouched.to_asgi(), tuple) and len(seen) == 1
