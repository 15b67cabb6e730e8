"""Carlini et al. 2024, "Stealing part of a production language model": recover a model's
hidden size from its API with ``logit_bias`` + ``top_logprobs`` and an SVD.

For each of ``m`` prompts, the attacker recovers the full logit vector (up to a constant): it
boosts ``k - 1`` tokens plus a fixed reference token by the same large bias so they fill the top
``k``, reads their logprobs, and takes differences to the reference — ``ceil((V - 1) / (k - 1))``
queries per prompt. The ``m × V`` matrix of logit vectors has rank equal to the hidden size
(logits = W h); the largest gap in its log singular values gives that rank.

Run as a script against a reference model server (direct, signing as the gateway would) and
through a gateway, and compare (see ``main``). Tests import :func:`attack`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# query(prompt, logit_bias, top_k) → {token id: logprob} for the returned top tokens
Query = Callable[[str, dict[int, float], int], dict[int, float]]
BIAS = 100.0


@dataclass(frozen=True)
class AttackResult:
    hidden_size: int  # the estimate
    queries: int
    singular_values: list[float]


def prompts(m: int) -> list[str]:
    words = "the of and to in is that for it as with was on be by this are from or an".split()
    rng = np.random.default_rng(1234)
    return [" ".join(rng.choice(words, size=6)) + f" {i}" for i in range(m)]


def logit_vector(query: Query, prompt: str, vocab: int, top_k: int, reference: int = 0
                 ) -> tuple[np.ndarray, int]:
    """Logits of ``prompt`` minus the reference token's, and the queries spent."""
    out = np.full(vocab, np.nan)
    out[reference] = 0.0
    others = [t for t in range(vocab) if t != reference]
    spent = 0
    for start in range(0, len(others), top_k - 1):
        group = others[start:start + top_k - 1]
        got = query(prompt, {t: BIAS for t in [reference, *group]}, top_k)
        spent += 1
        if reference not in got:
            continue
        for t in group:
            if t in got:
                out[t] = got[t] - got[reference]
    return out, spent


def estimate_rank(matrix: np.ndarray) -> tuple[int, np.ndarray]:
    """Rank by the largest drop in log singular values (Carlini et al., §4.2)."""
    values = np.linalg.svd(matrix, compute_uv=False)
    logs = np.log(np.maximum(values, 1e-12))
    limit = min(matrix.shape) - 1
    gaps = logs[:limit - 1] - logs[1:limit]
    return int(np.argmax(gaps)) + 1, values


def attack(query: Query, vocab: int, m: int, top_k: int = 20) -> AttackResult:
    rows = []
    spent = 0
    for prompt in prompts(m):
        row, used = logit_vector(query, prompt, vocab, top_k)
        spent += used
        rows.append(row)
    matrix = np.array(rows)
    matrix = matrix[:, ~np.isnan(matrix).any(axis=0)]
    rank, values = estimate_rank(matrix)
    return AttackResult(rank, spent, values.tolist())


Signer = Callable[[str, str, bytes], dict[str, str]]
"""Headers signing one exact request (method, path with query, body), as the gateway does."""


def openai_query(base_url: str, api_key: str, signer: Signer | None = None) -> Query:
    """A :data:`Query` over ``/v1/chat/completions`` (byte-level vocabulary: the ``bytes`` field
    names the token id)."""
    import httpx

    http = httpx.Client(base_url=base_url, timeout=60,
                        headers={"Authorization": f"Bearer {api_key}"})

    def query(prompt: str, bias: dict[int, float], top_k: int) -> dict[int, float]:
        request = http.build_request("POST", "/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
            "logprobs": True, "top_logprobs": top_k, "temperature": 0,
            "logit_bias": {str(t): b for t, b in bias.items()}})
        if signer is not None:
            request.headers.update(signer(request.method, request.url.raw_path.decode(),
                                          request.content))
        reply = http.send(request)
        if reply.status_code != 200:
            raise PermissionError(reply.json()["error"])
        entry = reply.json()["choices"][0]["logprobs"]["content"][0]
        return {t["bytes"][0]: t["logprob"] for t in entry["top_logprobs"] if t["bytes"]}

    return query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="…/v1 of a model server or gateway")
    parser.add_argument("--api-key", default="unused")
    parser.add_argument("--signing-secret", help="sign as the gateway (direct attack)")
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=160)
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args()
    signer = None
    if args.signing_secret:
        import itertools

        from gateway.upstream_identity.signature import sign

        counter = itertools.count()
        secret = args.signing_secret.encode()

        def signer(method: str, target: str, body: bytes) -> dict[str, str]:
            return dict(sign(secret, "attacker", f"carlini-{next(counter)}", method, target, body))

    result = attack(openai_query(args.base_url, args.api_key, signer), args.vocab,
                    args.prompts, args.top_k)
    print(f"estimated hidden size {result.hidden_size} after {result.queries} queries "
          f"(~{math.ceil(result.queries / args.prompts)} per prompt)")


if __name__ == "__main__":
    main()
