"""Attribution among 10,000 accounts two ways, on the tiny model's own samples:

* **key scan** (the product): one KGW key per account, detection tries every key (vectorised),
  Bonferroni over the accounts;
* **multi-bit payload** (position allocation, Yoo et al. 2024): one service key; each step's
  context hash picks one of ``L`` digit positions of the account index (``r``-ary digits,
  ``r**L >= accounts``) and colours the vocabulary into ``r`` lists; the list named by that
  digit gets ``+delta``. Decoding counts colours per position and takes the argmax — O(tokens),
  independent of the number of accounts; the p-value is Bonferroni over all ``r**L`` messages.

Same gamma (``1/r``), delta and context width for both. Reports tokens needed for the correct
account at corrected p < 1e-6, wrong attributions, and the time of one detection of each.

    python -m bench.watermark.watermark_multibit [--harvesters 16] [--replies 3] [--radix 4] \
        [--bits 20]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from bench.watermark.watermark_support import Sampler, generate, load, multinomial, prompts
from gateway.modelserver.config import DEFAULT_MODEL_DIR
from gateway.watermark.attribution import KeyRing, attribute
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.detector import Ints, binomial_upper_tail, scored_pairs
from gateway.watermark.hashing import mix, step_seed, token_hash
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, keys_tensor

SECRET = b"bench-watermark-multibit-0123456789abcd"
ALPHA = 1e-6
POSITION_SALT = 0x7FEB352D


class MultiBit:
    def __init__(self, key: tuple[int, int], radix: int, digits: int, delta: float,
                 width: int, vocab: int) -> None:
        if radix & (radix - 1):
            raise ValueError("radix must be a power of two")
        self.key, self.radix, self.digits, self.delta, self.width = (key, radix, digits, delta,
                                                                     width)
        self.bits = radix.bit_length() - 1
        self.processor = WatermarkProcessor(WatermarkConfig(width=width), vocab)

    def encode(self, index: int) -> list[int]:
        return [(index // self.radix**i) % self.radix for i in range(self.digits)]

    def _positions_colours(self, seeds: Ints | torch.Tensor, hashed: Ints | torch.Tensor
                           ) -> tuple[Ints | torch.Tensor, Ints | torch.Tensor]:
        position = mix(seeds ^ POSITION_SALT) % self.digits
        colour = mix(seeds[..., None] ^ hashed) >> (32 - self.bits)
        return position, colour

    def sampler(self, index: int) -> Sampler:
        message = torch.tensor(self.encode(index))
        key_row = keys_tensor([self.key])

        def sample(logits: torch.Tensor, history: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
            seeds = self.processor.seeds(history[:, -self.width:],
                                         key_row.expand(len(logits), 2))
            position, colour = self._positions_colours(seeds, self.processor.token_hashes)
            boost = (colour == message[position][:, None]).to(logits.dtype) * self.delta
            return multinomial(logits + boost, history, generator)

        return sample

    def decode(self, text: list[int]) -> tuple[int, float, float]:
        """(account index, p that the text is marked at all, p that a decoded digit is wrong).

        The first is the usual Bonferroni over all ``r**L`` messages of the total count of the
        decoded colours; it says the text is watermarked, not that *every* digit is right (a
        digit position that few tokens landed on can decode wrongly while the others carry the
        significance). The second bounds the chance that any digit's winning colour is a null
        one: each position's top count is tested against chance, Bonferroni over ``r * L``.
        """
        ctx, tokens = scored_pairs(text, self.width)
        if not len(tokens):
            return -1, 1.0, 1.0
        seeds = step_seed(np.int64(self.key[0]), np.int64(self.key[1]), ctx)
        position, colour = self._positions_colours(seeds, token_hash(tokens)[:, None])
        counts = np.zeros((self.digits, self.radix), np.int64)
        np.add.at(counts, (position, colour[:, 0]), 1)
        digits = counts.argmax(axis=1)
        score = int(counts.max(axis=1).sum())
        raw = float(binomial_upper_tail(len(tokens), 1 / self.radix)[score])
        index = sum(int(d) * self.radix**i for i, d in enumerate(digits))
        per_digit = max(float(binomial_upper_tail(int(row.sum()), 1 / self.radix)[row.max()])
                        for row in counts)
        return (index, min(1.0, raw * self.radix**self.digits),
                min(1.0, per_digit * self.radix * self.digits))


def first_hit(text: list[int], decide: object, truth: str, step: int = 20) -> int | None:
    """Shortest prefix (in ``step``s) naming an account at p < 1e-6; -1 if it is the wrong one."""
    for n in range(step * 2, len(text) + 1, step):
        named = decide(text[:n])  # type: ignore[operator]
        if named is not None:
            return n if named == truth else -1
    return None


def summary(values: list[int | None]) -> str:
    got = [v for v in values if v is not None and v >= 0]
    wrong = sum(1 for v in values if v == -1)
    if not got:
        return f"none of {len(values)} reached; wrong {wrong}"
    return (f"median {int(np.median(got))}, p90 {int(np.percentile(got, 90))} "
            f"({len(got)}/{len(values)} reached); wrong account {wrong}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--harvesters", type=int, default=16)
    parser.add_argument("--replies", type=int, default=3, help="224-token replies per harvester")
    parser.add_argument("--radix", type=int, default=4)
    parser.add_argument("--bits", type=int, default=0,
                        help="payload bits (default: just enough for --accounts)")
    parser.add_argument("--delta", type=float, default=2.0)
    parser.add_argument("--width", type=int, default=4)
    args = parser.parse_args()
    model = load(Path(args.model))
    vocab = int(model.config.vocab_size)
    digits = math.ceil(math.log(args.accounts, args.radix))
    if args.bits:
        digits = math.ceil(args.bits / (args.radix.bit_length() - 1))
    accounts = [f"acct-{i:05d}" for i in range(args.accounts)]
    ring = KeyRing(accounts, [SECRET])
    config = WatermarkConfig(gamma=1 / args.radix, delta=args.delta, width=args.width)
    multibit = MultiBit(derive_key(SECRET, "multibit-service-key"), args.radix, digits,
                        args.delta, args.width, vocab)
    rng = np.random.default_rng(1)
    owners = [int(i) for i in rng.choice(args.accounts, args.harvesters, replace=False)]
    print(f"{args.harvesters} harvesters x {args.replies} replies x 224 tokens; gamma "
          f"{config.gamma:g}, delta {args.delta}, width {args.width}; multi-bit payload "
          f"{digits} base-{args.radix} digits ({digits * multibit.bits} bits)")

    def harvest(sampler_of: object) -> list[list[int]]:
        texts = []
        for h, owner in enumerate(owners):
            asked = prompts(args.replies, seed=100 + h)
            replies = generate(model, asked, 224, sampler_of(owner), seed=h)  # type: ignore[operator]
            texts.append([t for r in replies for t in r])
        return texts

    def kgw_sampler(owner: int) -> Sampler:
        processor = WatermarkProcessor(config, vocab)
        key_row = keys_tensor([derive_key(SECRET, accounts[owner])])

        def sample(logits: torch.Tensor, history: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
            marked = processor(logits, history[:, -config.width:],
                               key_row.expand(len(logits), 2))
            return multinomial(marked, history, generator)

        return sample

    def scan(text: list[int]) -> str | None:
        return attribute(text, ring, config, ALPHA).account_id

    def payload(text: list[int]) -> str | None:  # "marked" test only: can name a wrong account
        index, p, _ = multibit.decode(text)
        return accounts[index] if p < ALPHA and 0 <= index < len(accounts) else None

    def payload_all_digits(text: list[int]) -> str | None:
        index, _, p = multibit.decode(text)
        return accounts[index] if p < ALPHA and 0 <= index < len(accounts) else None

    for name, sampler_of, deciders in (
            ("key scan", kgw_sampler, {"": scan}),
            ("multi-bit payload", multibit.sampler,
             {" (p of 'marked')": payload, " (every digit at p < 1e-6)": payload_all_digits})):
        texts = harvest(sampler_of)
        for label, decide in deciders.items():
            hits = [first_hit(t, decide, accounts[o]) for t, o in zip(texts, owners, strict=True)]
            sample_text = texts[0][:200]
            start = time.perf_counter()
            for _ in range(3):
                decide(sample_text)
            per_call = (time.perf_counter() - start) / 3
            print(f"{name}{label}: tokens for the correct account at corrected p < 1e-6 among "
                  f"{args.accounts}: {summary(hits)}; one detection of 200 tokens "
                  f"{per_call * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
