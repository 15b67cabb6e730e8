"""A toy model (random weights, byte-level, seconds to build) and a model server around it."""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import httpx
import pytest
import torch

from gateway.modelserver.config import ServerConfig
from gateway.modelserver.server import create_model_server_app
from gateway.modelserver.train_tiny import save
from gateway.tokenizer.core import BYTE_EOS, BYTE_VOCAB
from gateway.upstream_identity.signature import sign
from gateway.watermark.config import WatermarkConfig
from tests.support.servers import serve_in_thread

SIGNING = b"upstream-signing-secret-0123456789abcdef"
WATERMARK = b"model-server-watermark-secret-0123456789"
TOY_HIDDEN = 24


def signed(method: str, target: str, body: bytes, account: str = "acct-1") -> dict[str, str]:
    """The headers the gateway would add to exactly this request (fresh nonce each call)."""
    return dict(sign(SIGNING, account, f"nonce-{uuid.uuid4().hex}", method, target, body))


class GatewaySignature(httpx.Auth):
    """Signs each httpx request as the gateway would: its method, path and query, and body."""

    requires_request_body = True

    def __init__(self, account: str = "acct-1") -> None:
        self.account = account

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(signed(request.method, request.url.raw_path.decode(),
                                      request.content, self.account))
        yield request


def make_toy_model(out: Path, hidden: int = TOY_HIDDEN) -> Path:
    """Random weights with a realistic logit spread (a few nats), so sampling is not uniform
    and the logit matrix has rank ``hidden``. Hidden unit 0 is pinned to 1, and through it
    non-ASCII bytes and end-of-text get -12, so texts are ASCII and round-trip as text."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=BYTE_VOCAB, n_positions=128, n_embd=hidden, n_layer=1, n_head=2,
        bos_token_id=BYTE_EOS, eos_token_id=BYTE_EOS, pad_token_id=BYTE_EOS,
        tie_word_embeddings=False))
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.4)
        model.transformer.ln_f.weight[0] = 0.0
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[128:, 0] = -12.0
    save(model, out)
    return out


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_model(tmp_path_factory.mktemp("toy-model"))


def toy_config(model_dir: Path, **overrides: object) -> ServerConfig:
    values: dict[str, object] = {
        "model_dir": model_dir, "signing_secret": SIGNING, "watermark_secret": WATERMARK,
        "watermark": WatermarkConfig(), "device": "cpu",
    }
    values.update(overrides)
    return ServerConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model_server(toy_model_dir: Path) -> Iterator[tuple[str, object]]:
    app = create_model_server_app(toy_config(toy_model_dir))
    with serve_in_thread(app) as url:
        yield url, app
