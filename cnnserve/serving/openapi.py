"""The OpenAPI document of cnnserve's HTTP routes, served at ``GET /openapi.json``.

Clients generate code from it, and the test suite fuzzes the running server
with schemathesis against it.
"""

from __future__ import annotations

from .. import __version__

ERROR = {
    "description": "a JSON error naming the problem",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
MODEL_FIELDS = {
    "model": {"type": "string", "description": "model name; default: the first served model"},
    "version": {"type": "integer", "minimum": 1, "description": "model version; default: the highest"},
    "top_k": {"type": "integer", "minimum": 1,
              "description": "labels in top_k; default 5, or every label of a model that has fewer"},
}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def json_ok(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def json_or_png(description: str, drawn: str) -> dict:
    """An answer as JSON, or drawn on the picture when the request says ``Accept: image/png``."""
    answer = json_ok(description)
    answer["content"]["image/png"] = {"schema": {"type": "string", "format": "binary"}, "description": drawn}
    return answer


EXPLAIN_FIELDS = {
    "window": {"type": "integer", "minimum": 1, "description": "occluding square, in pixels of the model's input"},
    "stride": {"type": "integer", "minimum": 1, "description": "its step, at most the window; default: the window (tiles)"},
    "target": {"type": "string", "description": "the label to explain; default: the answer's"},
}


def multipart(file_field: str, many: bool, extra: dict | None = None) -> dict:
    file_schema = {"type": "string", "format": "binary"}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [file_field],
                    "properties": {
                        file_field: {"type": "array", "items": file_schema} if many else file_schema,
                        **MODEL_FIELDS,
                        **(extra or {}),
                    },
                }
            }
        },
    }


def errors(*codes: int) -> dict:
    return {str(code): ERROR for code in codes}


def v2_model_paths(prefix: str, parameters: list) -> dict:
    infer_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
    }
    return {
        prefix: {"get": {"summary": "V2 model metadata", "parameters": parameters,
                         "responses": {"200": json_ok("metadata"), **errors(400, 404)}}},
        f"{prefix}/ready": {"get": {"summary": "V2 model readiness", "parameters": parameters,
                                    "responses": {"200": json_ok("ready"), **errors(400, 404, 503)}}},
        f"{prefix}/config": {"get": {"summary": "model configuration in Triton's form", "parameters": parameters,
                                     "responses": {"200": json_ok("configuration"), **errors(400, 404)}}},
        f"{prefix}/stats": {"get": {"summary": "Triton's statistics: counts and cumulative durations",
                                    "parameters": parameters, "responses": {"200": json_ok("statistics"),
                                                                             **errors(400, 404)}}},
        f"{prefix}/infer": {"post": {"summary": "V2 inference (JSON; binary tensors with Inference-Header-Content-Length)",
                                     "parameters": parameters, "requestBody": infer_body,
                                     "responses": {"200": json_ok("outputs"), **errors(400, 401, 404, 413, 415, 503, 504)}}},
    }


def openapi_document() -> dict:
    predict_errors = errors(400, 401, 404, 413, 415, 503, 504)
    return {
        "openapi": "3.0.3",
        "info": {"title": "cnnserve", "version": __version__,
                 "description": "CNN classification + localization over REST and the Open Inference Protocol"},
        "paths": {
            "/predict": {"post": {"summary": "label, top-k and box (in the image's own pixels) for one image file",
                                  "requestBody": multipart("image", many=False),
                                  "responses": {"200": json_or_png("the answer", "the image, box and label drawn"),
                                                **predict_errors}}},
            "/predict_batch": {"post": {"summary": "one answer per image file, in order",
                                        "requestBody": multipart("images", many=True),
                                        "responses": {"200": json_ok("the answers"), **predict_errors}}},
            "/explain": {"post": {"summary": "the answer and its occlusion map (probability drops per cell, placed in "
                                             "the image's own pixels)",
                                  "requestBody": multipart("image", many=False, extra=EXPLAIN_FIELDS),
                                  "responses": {"200": json_or_png("the answer and its map",
                                                                   "the image, map blended in, box and label drawn"),
                                                **predict_errors}}},
            "/models": {"get": {"summary": "every model and version with its status, provider, card metrics",
                                "responses": {"200": json_ok("the listing"), **errors(401)}}},
            "/v2": {"get": {"summary": "V2 server metadata", "responses": {"200": json_ok("metadata")}}},
            "/v2/health/live": {"get": {"summary": "V2 liveness", "responses": {"200": json_ok("live")}}},
            "/v2/health/ready": {"get": {"summary": "V2 readiness",
                                         "responses": {"200": json_ok("ready"), **errors(503)}}},
            "/v2/models/stats": {"get": {"summary": "Triton's statistics for every model version",
                                         "responses": {"200": json_ok("statistics")}}},
            "/v2/repository/index": {"post": {"summary": "every model in the repository and its state",
                                              "responses": {"200": json_ok("the index", {"type": "array"}),
                                                            **errors(400)}}},
            "/v2/repository/models/{name}/load": {"post": {
                "summary": "load a model in every worker (model_control_mode: explicit)", "parameters": [NAME],
                "responses": {"200": json_ok("loaded"), **errors(400, 401, 403, 404, 503)}}},
            "/v2/repository/models/{name}/unload": {"post": {
                "summary": "unload a model in every worker (model_control_mode: explicit)", "parameters": [NAME],
                "responses": {"200": json_ok("unloaded"), **errors(400, 401, 403, 404, 503)}}},
            **v2_model_paths("/v2/models/{name}", [NAME]),
            **v2_model_paths("/v2/models/{name}/versions/{version}", [NAME, VERSION]),
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}, "code": {"type": "integer"}}},
                "InferenceRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": {
                            "type": "object", "required": ["name", "datatype", "shape"],
                            "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                           "shape": {"type": "array", "items": {"type": "integer"}},
                                           "parameters": {"type": "object"}, "data": {"type": "array"}}}},
                        "outputs": {"type": "array", "items": {
                            "type": "object", "required": ["name"],
                            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}},
                    },
                },
            }
        },
    }
