"""Run by the interop test with .venv-triton's Python: tritonclient.grpc against our server.

Usage: python triton_client_check.py HOST:PORT PNG_FILE. Prints one JSON object
of observations; the test asserts on them. Imports nothing from Stride, so that
tritonclient's generated protos are the only `inference` protos in this process.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main(url: str, png_path: str) -> None:
    client = grpcclient.InferenceServerClient(url)
    seen: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits"),
        "extensions": list(client.get_server_metadata(as_json=True)["extensions"]),
    }
    meta = client.get_model_metadata("digits", as_json=True)
    seen["inputs"] = [
        (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]
    ]
    config = client.get_model_config("digits", as_json=True)["config"]
    seen["max_batch_size"] = config["max_batch_size"]

    x = np.linspace(0, 1, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outputs = [
        grpcclient.InferRequestedOutput("logits"),
        grpcclient.InferRequestedOutput("probabilities"),
    ]
    result = client.infer("digits", [inp], outputs=outputs, request_id="interop-1")
    seen["x"] = x.tolist()
    seen["logits"] = result.as_numpy("logits").tolist()
    seen["probabilities"] = result.as_numpy("probabilities").tolist()
    seen["response_id"] = result.get_response().id

    top = [grpcclient.InferRequestedOutput("probabilities", class_count=3)]
    classes = client.infer("digits", [inp], outputs=top).as_numpy("probabilities")
    seen["classification"] = [[c.decode() for c in row] for row in classes]

    with open(png_path, "rb") as f:
        png = f.read()
    image = grpcclient.InferInput("input", [1], "BYTES")
    image.set_data_from_numpy(np.array([png], dtype=np.object_))
    seen["image_classes"] = [
        c.decode()
        for c in client.infer("digits", [image], outputs=top).as_numpy("probabilities")[0]
    ]

    stats = client.get_inference_statistics("digits", as_json=True)["model_stats"][0]
    seen["inference_count"] = int(stats["inference_count"])
    seen["index"] = [m["name"] for m in client.get_model_repository_index(as_json=True)["models"]]
    client.unload_model("digits")
    seen["ready_after_unload"] = client.is_model_ready("digits")
    client.load_model("digits")
    seen["ready_after_load"] = client.is_model_ready("digits")
    try:
        client.infer("nope", [inp])
    except InferenceServerException as exc:
        seen["unknown_model_status"] = exc.status()
        seen["unknown_model_message"] = exc.message()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
