"""`stride predict`: send images to a running inference server and print the top-k classes.

The images go as encoded bytes (a BYTES input); the server decodes and normalises
them with the preprocessing stored in the model, so this client needs to know
nothing about the model but its name.
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
        "--server",
        default=os.environ.get("STRIDE_SERVER", "localhost:8001"),
        help="HOST:PORT of the gRPC server (env STRIDE_SERVER, default localhost:8001)",
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


def run(args: argparse.Namespace) -> int:
    """Send every image in one request and print the k best classes of each."""
    import grpc

    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
    from services.inference.tensors import encode_bytes_elements

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    images = [path.read_bytes() for path in args.images]  # OSError names a missing file
    metadata = []
    if args.auth_token_file:
        metadata.append(("authorization", f"Bearer {args.auth_token_file.read_text().strip()}"))
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
    from services.inference.tensors import decode_bytes_elements

    items = decode_bytes_elements(response.raw_output_contents[0], "classification output")
    k = len(items) // len(images)
    print(f"model {response.model_name} version {response.model_version}")
    for n, path in enumerate(args.images):
        print(path)
        for item in items[n * k : (n + 1) * k]:
            probability, index, *label = item.decode().split(":", 2)
            print(f"  {float(probability):.4f}  {index:>3}  {label[0] if label else ''}")
    return 0
