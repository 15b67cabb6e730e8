"""``python -m gateway.vllm [--port P] [--model DIR] [-- vLLM args…]``: vLLM with the
watermark processor, in the foreground (``GATEWAY_WATERMARK_SECRET`` from the environment)."""

from __future__ import annotations

import argparse
import os
import sys

from gateway.vllm.launcher import TINY_MODEL, TINY_MODEL_NAME, VllmOptions, command, environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.vllm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default=str(TINY_MODEL))
    parser.add_argument("--served-model-name", default=TINY_MODEL_NAME)
    parser.add_argument("--max-model-len", type=int, default=256)
    parser.add_argument("vllm_args", nargs="*", help="passed to vLLM (after --)")
    args = parser.parse_args(argv)
    options = VllmOptions(port=args.port, host=args.host, model=args.model,
                          served_model_name=args.served_model_name,
                          max_model_len=args.max_model_len, extra_args=tuple(args.vllm_args))
    env = environment(options, os.environ.get("GATEWAY_WATERMARK_SECRET"))
    argv_ = command(options)
    os.execve(argv_[0], argv_, env)  # noqa: S606 - replaces this process with vLLM
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
