"""`stride predict`: send images to a running inference server and print the top-k classes.

The images go as encoded bytes (a BYTES input); the server decodes and normalises
them with the preprocessing stored in the model, so this client needs to know
nothing about the model but its name. `--protocol http` sends the same request over
the REST protocol (the images as binary tensor data, the classes back as JSON).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

NAME = "predict"
HELP = "classify images with a running `stride serve` (or Triton) server"
ORDER = 51


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `stride predict`."""
    add = parser.add_argument
    add("images", nargs="+", type=Path, metavar="IMAGE", help="PNG or JPEG files")
    add(
        "--protocol",
        choices=["grpc", "http"],
        default=os.environ.get("STRIDE_PROTOCOL", "grpc"),
        help="gRPC or HTTP/REST (env STRIDE_PROTOCOL, default grpc)",
    )
    add(
        "--server",
        default=os.environ.get("STRIDE_SERVER"),
        help="HOST:PORT of the server (env STRIDE_SERVER, default localhost:8001 for gRPC, "
        "localhost:8000 for HTTP)",
    )
    add("--model", required=True, help="model name in the server's repository")
    add("--version", default="", help="model version (default: the server's choice)")
    add("--top-k", type=int, default=3, help="classes to print per image (default 3)")
    add("--output", default="probabilities", help="output to classify (default probabilities)")
    add("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    add("--tls-ca", type=Path, help="PEM CA to verify the server (turns TLS on)")
    add("--tls-cert", type=Path, help="PEM client certificate (mutual TLS)")
    add("--tls-key", type=Path, help="PEM client key (mutual TLS)")
    add(
        "--auth-token-file",
        type=Path,
        default=os.environ.get("STRIDE_AUTH_TOKEN_FILE"),
        help="file with the server's bearer token (env STRIDE_AUTH_TOKEN_FILE)",
    )


def _channel(args: argparse.Namespace) -> Any:
    import grpc

    if args.tls_ca or args.tls_cert:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=args.tls_ca.read_bytes() if args.tls_ca else None,
            private_key=args.tls_key.read_bytes() if args.tls_key else None,
            certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
        )
        return grpc.secure_channel(args.server, credentials)
    return grpc.insecure_channel(args.server)


def _token(args: argparse.Namespace) -> str | None:
    if not args.auth_token_file:
        return None
    return str(args.auth_token_file.read_text().strip())


def _classify_grpc(args: argparse.Namespace, images: list[bytes]) -> tuple[str, str, list[bytes]]:
    """(model name, version, classification strings) over gRPC."""
    import grpc

    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
    from services.inference.tensors import decode_bytes_elements, encode_bytes_elements

    token = _token(args)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with _channel(args) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            meta = stub.ModelMetadata(
                pb.ModelMetadataRequest(name=args.model, version=args.version),
                metadata=metadata,
                timeout=args.timeout,
            )
            request = pb.ModelInferRequest(model_name=args.model, model_version=args.version)
            request.inputs.add(name=meta.inputs[0].name, datatype="BYTES", shape=[len(images)])
            request.raw_input_contents.append(encode_bytes_elements(images))
            out = request.outputs.add(name=args.output)
            out.parameters["classification"].int64_param = args.top_k
            response = stub.ModelInfer(request, metadata=metadata, timeout=args.timeout)
        except grpc.RpcError as exc:
            raise ValueError(f"{args.server}: {exc.code().name}: {exc.details()}") from None
    items = decode_bytes_elements(response.raw_output_contents[0], "classification output")
    return response.model_name, response.model_version, items


def _ssl_context(args: argparse.Namespace) -> Any:
    import ssl

    if not (args.tls_ca or args.tls_cert):
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(cafile=str(args.tls_ca) if args.tls_ca else None)
    if args.tls_cert:
        context.load_cert_chain(str(args.tls_cert), str(args.tls_key))
    return context


def _classify_http(args: argparse.Namespace, images: list[bytes]) -> tuple[str, str, list[bytes]]:
    """(model name, version, classification strings) over HTTP/REST."""
    import json
    import urllib.error
    import urllib.request

    from services.inference.tensors import encode_bytes_elements

    context = _ssl_context(args)
    base = f"{'https' if context else 'http'}://{args.server}/v2/models/{args.model}"
    if args.version:
        base += f"/versions/{args.version}"
    token = _token(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(url: str, body: bytes | None = None, extra: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(url, data=body, headers={**headers, **(extra or {})})
        try:
            with urllib.request.urlopen(request, timeout=args.timeout, context=context) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", "")
            except ValueError:
                message = ""
            raise ValueError(f"{args.server}: HTTP {exc.code}: {message or exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ValueError(f"{args.server}: {exc.reason}") from None

    meta = call(base)
    raw = encode_bytes_elements(images)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": meta["inputs"][0]["name"],
                    "datatype": "BYTES",
                    "shape": [len(images)],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": args.output, "parameters": {"classification": args.top_k}}],
        }
    ).encode()
    length = {"Inference-Header-Content-Length": str(len(header))}
    answer = call(f"{base}/infer", header + raw, length)
    items = [str(item).encode() for item in answer["outputs"][0]["data"]]
    return answer["model_name"], answer["model_version"], items


def run(args: argparse.Namespace) -> int:
    """Send every image in one request and print the k best classes of each."""
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    if args.server is None:
        args.server = "localhost:8000" if args.protocol == "http" else "localhost:8001"
    images = [path.read_bytes() for path in args.images]  # OSError names a missing file
    classify = _classify_http if args.protocol == "http" else _classify_grpc
    model, version, items = classify(args, images)
    k = len(items) // len(images)
    print(f"model {model} version {version}")
    for n, path in enumerate(args.images):
        print(path)
        for item in items[n * k : (n + 1) * k]:
            probability, index, *label = item.decode().split(":", 2)
            print(f"  {float(probability):.4f}  {index:>3}  {label[0] if label else ''}")
    return 0
