"""KServe's Python model server with an ONNX model: the peer `bench/peer.py` measures against.

Runs under `.venv-kserve/bin/python` (`make kserve-peer`), never in Stride's venv:
KServe pins its own protobuf and gRPC. Configured through the environment, since
KServe parses the command line when it is imported:

    KSERVE_PEER_MODELS=digits=/path/model.onnx,cnn=/path/model.onnx
    KSERVE_PEER_GRPC_PORT=9001 KSERVE_PEER_HTTP_PORT=9000

Each model is one ONNX Runtime session with the same options as Stride's (one
inter-op thread, intra-op threads by default); `predict` runs the batch it is
given, as KServe's own runtimes do (KServe's Python server has no dynamic batcher).
"""

from __future__ import annotations

import os
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    """One ONNX file behind KServe's v2 protocol."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: Any = None
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        logits, probabilities = self.session.run(["logits", "probabilities"], {"input": x})
        outputs = []
        for name, array in (("logits", logits), ("probabilities", probabilities)):
            out = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
            out.set_data_from_numpy(array, binary_data=True)
            outputs.append(out)
        return InferResponse(
            model_name=self.name,
            infer_outputs=outputs,
            response_id=payload.id or "",
            use_binary_outputs=True,
        )


def main() -> None:
    pairs = [item.split("=", 1) for item in os.environ["KSERVE_PEER_MODELS"].split(",")]
    models = [OnnxModel(name, path) for name, path in pairs]
    kserve.ModelServer(
        grpc_port=int(os.environ["KSERVE_PEER_GRPC_PORT"]),
        http_port=int(os.environ["KSERVE_PEER_HTTP_PORT"]),
        workers=1,
        enable_docs_url=False,
        enable_latency_logging=False,
    ).start(models)


if __name__ == "__main__":
    main()
