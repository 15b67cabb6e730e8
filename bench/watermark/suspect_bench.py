"""`gateway suspect`'s statistics against distilled students (the product's sequential test,
with the student sampled in process instead of over HTTP).

1. Harvest: the shipped tiny teacher answers ``--samples`` docstring prompts with ``--length``
   tokens each, watermarked (``--kind single``: one harvester's key; ``campaign``: ``--campaign``
   accounts, each a equal share of the texts) and plain (the control's data).
2. Two students from the same from-scratch base (a small GPT-2 pretrained briefly on the
   stdlib's docstrings, its own seed; ``bench.watermark.radioactivity.student_base``), fine-tuned
   on each harvest. Both are cached under ``--cache-dir``.
3. The watermarked-data student is the suspect: :func:`gateway.suspect.runner.run_suspect`
   samples it ``--queries-per-look`` prompts at a time (``--gen-length`` tokens each, temperature
   1, no watermark), among ``--accounts`` accounts (the harvester, or the campaign members, are
   among them; a campaign is also tested as one group), until attribution at ``--alpha``
   (corrected over keys, groups and looks) or ``--max-queries``.
4. Controls, ``--control-trials`` each. A *trial* is one complete sequential test (same looks,
   same budget, same correction) of a control student's replies against a fresh key ring of
   ``--control-accounts`` accounts under a fresh random master secret (plus, for a campaign, the
   first ``--campaign`` of them as a group); it is a false attribution when any account or group
   gets corrected p < ``--control-alpha``. Control students: ``plain`` (trained on the same
   prompts' unwatermarked answers) and ``other-keys`` (the radioactive student itself, tested
   against rings that do not hold its harvesters' keys). The replies are sampled once per
   control student (the whole budget); the trials differ by key ring, which is what the null is
   about (a suspect's text is independent of keys it never saw).

    python -m bench.watermark.suspect_bench --kind single  # bench/watermark/suspect_results.txt
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.watermark.radioactivity import kgw_sampler, student_base
from bench.watermark.watermark_support import finetune, generate, load, multinomial, prompts
from gateway.domain.cohorts import COHORT_PREFIX, cohort_identity
from gateway.modelserver.config import DEFAULT_MODEL_DIR
from gateway.modelserver.train_tiny import corpus_tokens
from gateway.suspect.candidates import Candidates, build_candidates
from gateway.suspect.client import Reply
from gateway.suspect.evidence import Evidence
from gateway.suspect.pairs import PairSet
from gateway.suspect.prompts import prompt_stream, stdlib_openings
from gateway.suspect.runner import Plan, run_suspect
from gateway.suspect.scoring import green_counts_fast
from gateway.suspect.sequential import SequentialTest
from gateway.tokenizer.core import BYTE_EOS
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.keys import derive_key

SECRET = b"bench-suspect-secret-0123456789abcdef"


class LocalSampler:
    """A :class:`gateway.suspect.client.Sampler` over an in-process model (byte prompts)."""

    def __init__(self, model: Any, length: int, seed: int) -> None:
        self.model, self.length, self.calls, self.seed = model, length, 0, seed
        self.pairs = Recorder()

    async def __call__(self, batch: Sequence[str]) -> list[Reply]:
        ids = [list(p.encode()) for p in batch]
        self.calls += 1
        if isinstance(self.model, TrigramStudent):
            texts = self.model.generate(ids, self.length, self.seed + self.calls)
        else:
            texts = generate(self.model, ids, self.length, multinomial,
                             seed=self.seed + self.calls, batch=len(ids))
        replies = [Reply(p, t) for p, t in zip(ids, texts, strict=True)]
        for reply in replies:
            self.pairs.add(reply.prompt_ids, reply.reply_ids)
        return replies


class Recorder(PairSet):
    """A PairSet that keeps the pairs it returned, for the bench's diagnostics."""

    def __init__(self) -> None:
        super().__init__(2)
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, prompt: Sequence[int], reply: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        new = super().add(prompt, reply)
        self.kept.append(new)
        return new

    def ctx_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate([c for c, _ in self.kept]),
                np.concatenate([t for _, t in self.kept]))


Texts = list[list[int]]


class TrigramStudent:
    """A count-based student trained from scratch on the harvest: next-token counts after each
    two-token context, backed off to one-token and zero-token counts (add-``beta``). Sampling
    it is what a student that fits the harvest's trigram statistics would emit: the strongest
    carrier of a width-2 watermark, and the cheapest student to train."""

    def __init__(self, texts: Texts, vocab: int, beta: float = 1.0) -> None:
        tri = np.zeros((vocab, vocab, vocab), np.float32)
        bi = np.zeros((vocab, vocab), np.float32)
        for t in texts:
            a = np.asarray(t, np.int64)
            np.add.at(tri, (a[:-2], a[1:-1], a[2:]), 1.0)
            np.add.at(bi, (a[:-1], a[1:]), 1.0)
        uni = bi.sum(0) + 1.0
        uni /= uni.sum()
        bi_p = (bi + beta * uni[None, :]) / (bi.sum(1, keepdims=True) + beta)
        self.table = (tri + beta * bi_p[None, :, :]) / (tri.sum(2, keepdims=True) + beta)
        self.table[..., BYTE_EOS] = 0.0
        self.table /= self.table.sum(2, keepdims=True)
        self.cum = np.cumsum(self.table, axis=2)

    def generate(self, prompt_ids: Texts, length: int, seed: int) -> Texts:
        rng = np.random.default_rng(seed)
        hist = np.asarray(prompt_ids, np.int64)
        out = np.empty((len(hist), length), np.int64)
        a, b = hist[:, -2], hist[:, -1]
        for i in range(length):
            rows = self.cum[a, b]
            pick = (rows < rng.random((len(rows), 1)) * rows[:, -1:]).sum(1)
            out[:, i] = np.minimum(pick, rows.shape[1] - 1)
            a, b = b, out[:, i]
        return out.tolist()


def harvest(teacher: Any, args: argparse.Namespace, config: WatermarkConfig,
            keys: list[tuple[int, int]], cohort_key: tuple[int, int] | None = None,
            ) -> tuple[Texts, Texts, Texts]:
    """(prompts, watermarked answers, plain answers); cached. With ``cohort_key``, the last
    ``--cohort-share`` of each account's texts are served under it (the gateway's cohort key,
    once a campaign flag has named the accounts)."""
    asked = prompts(args.samples, seed=args.seed)
    cohort = f"-cohort{args.cohort_share}" if cohort_key is not None else ""
    cache = Path(args.cache_dir) / (f"harvest-{args.kind}-{len(keys)}-{args.samples}-"
                                    f"{args.length}-{config.width}-{args.seed}{cohort}.npz")
    if cache.exists():
        saved = np.load(cache)
        return asked, saved["marked"].tolist(), saved["plain"].tolist()
    vocab = int(teacher.config.vocab_size)
    share = -(-len(asked) // len(keys))
    marked: list[list[int]] = []
    for i, key in enumerate(keys):
        part = asked[i * share:(i + 1) * share]
        cut = len(part) - (round(len(part) * args.cohort_share) if cohort_key else 0)
        for chunk, served in ((part[:cut], key), (part[cut:], cohort_key)):
            if chunk and served is not None:
                marked += generate(teacher, chunk, args.length,
                                   kgw_sampler(config, served, vocab), seed=1 + i, batch=256)
    plain = generate(teacher, asked, args.length, multinomial, seed=1, batch=256)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, marked=np.array(marked), plain=np.array(plain))
    return asked, marked, plain


def student(base: Any, asked: list[list[int]], data: list[list[int]], name: str,
            args: argparse.Namespace) -> Any:
    if args.student.startswith("trigram"):
        texts = [p + t for p, t in zip(asked, data, strict=True)]
        if args.student == "trigram-mixed":  # the harvest diluted in --pretrain-bytes of docs
            texts.append(corpus_tokens(args.pretrain_bytes).tolist())
        return TrigramStudent(texts, 257)
    cohort = f"-cohort{args.cohort_share}" if args.cohort_share else ""
    path = Path(args.cache_dir) / (f"student-{name}-{args.kind}-{args.samples}-{args.length}-"
                                   f"{args.pretrain_steps}-{args.steps}-{args.seed}{cohort}.pt")
    model = copy.deepcopy(base)
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    loss = finetune(model, [p + t for p, t in zip(asked, data, strict=True)], args.steps,
                    lr=args.lr, seed=args.seed + 3)
    print(f"  {name} student: final loss {loss:.3f}", flush=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def suspect_prompts(args: argparse.Namespace) -> list[str]:
    """``fresh``: stdlib docstring openings the harvester never sent; ``asked``: the harvester's
    own prompts (what the request log keeps with ``GATEWAY_PROMPT_STORAGE=full``)."""
    asked = [bytes(p).decode() for p in prompts(args.samples, seed=args.seed)]
    if args.prompt_source == "asked":
        return asked
    return [p for p in stdlib_openings(24) if p not in set(asked)]


async def sample_all(model: Any, args: argparse.Namespace, width: int,
                     seed: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The control student's whole budget of replies, as per-look chunks of new distinct pairs."""
    sampler = LocalSampler(model, args.gen_length, seed)
    stream = prompt_stream(suspect_prompts(args), args.seed + 7)
    pairs = PairSet(width, tuple(args.min_counts))
    chunks: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for start in range(0, args.max_queries, args.queries_per_look):
        batch = [next(stream) for _ in range(min(args.queries_per_look,
                                                 args.max_queries - start))]
        parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in args.min_counts]
        for reply in await sampler(batch):
            for j, new in enumerate(pairs.add_views(reply.prompt_ids, reply.reply_ids)):
                parts[j].append(new)
        chunks.append([(np.concatenate([c for c, _ in p]), np.concatenate([t for _, t in p]))
                       for p in parts])
    return chunks


def control_trials(chunks: list[list[tuple[np.ndarray, np.ndarray]]], args: argparse.Namespace,
                   config: WatermarkConfig, plan: Plan) -> dict[str, Any]:
    """``--control-trials`` sequential tests of fixed replies against fresh key rings."""
    rng = np.random.default_rng(args.seed + 11)
    ids = [f"ctrl-{i:05d}" for i in range(args.control_accounts)]
    groups = {"campaign": ids[:args.campaign]} if args.kind == "campaign" else {}
    best_log10: list[float] = []
    false = 0
    for _ in range(args.control_trials):
        secret = rng.bytes(32)
        candidates = build_candidates(ids, [secret], groups)
        views = [(m, Evidence(candidates, config.gamma)) for m in args.min_counts]
        test = SequentialTest(args.control_alpha, plan.max_looks,
                              candidates.hypotheses * len(views))
        lowest = 0.0
        for i, chunk in enumerate(chunks):
            for (_, evidence), (ctx, tok) in zip(views, chunk, strict=True):
                evidence.add(ctx, tok)
            look = test.look(views, (i + 1) * args.queries_per_look)
            lowest = min(lowest, look.best[0].log10_p_corrected if look.best else 0.0)
            if look.attributed:
                false += 1
                break
        best_log10.append(lowest)
    return {"trials": args.control_trials, "false_attributions": false,
            "accounts_per_trial": args.control_accounts, "alpha": args.control_alpha,
            "pairs": int(sum(len(chunk[0][1]) for chunk in chunks)),
            "min_corrected_p_median": float(10 ** np.median(best_log10)),
            "min_corrected_p_min": float(10 ** min(best_log10))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("single", "campaign"), default="single")
    parser.add_argument("--campaign", type=int, default=10, help="accounts in a campaign")
    parser.add_argument("--teacher", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--samples", type=int, default=256, help="harvested teacher texts")
    parser.add_argument("--length", type=int, default=224, help="tokens per teacher text")
    parser.add_argument("--student", choices=("transformer", "trigram", "trigram-mixed"),
                        default="transformer")
    parser.add_argument("--prompt-source", choices=("fresh", "asked"), default="fresh")
    parser.add_argument("--student-embd", type=int, default=96)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--pretrain-bytes", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps (batch 16)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gen-length", type=int, default=224, help="tokens per query")
    parser.add_argument("--max-queries", type=int, default=2048)
    parser.add_argument("--queries-per-look", type=int, default=256)
    parser.add_argument("--alpha", type=float, default=1e-6)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--control-trials", type=int, default=200)
    parser.add_argument("--control-accounts", type=int, default=1_000)
    parser.add_argument("--control-alpha", type=float, default=0.01)
    parser.add_argument("--controls", default="plain,other-keys")
    parser.add_argument("--width", type=int, default=2)
    parser.add_argument("--min-counts", type=lambda v: [int(m) for m in v.split(",")],
                        default=[1, 4], help="views (gateway suspect --min-counts)")
    parser.add_argument("--cohort-share", type=float, default=0.0,
                        help="campaign: the share of each account's harvest served under the "
                        "campaign's cohort key (after its flag); the cohort is a candidate too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="/tmp/suspect-bench-cache")
    parser.add_argument("--json", dest="json_out", default="")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    began = time.perf_counter()
    config = WatermarkConfig(width=args.width)
    accounts = [f"acct-{i:05d}" for i in range(args.accounts)]
    owners = ([accounts[args.accounts // 3]] if args.kind == "single"
              else accounts[args.accounts // 3: args.accounts // 3 + args.campaign])
    cohort = cohort_identity("bench") if args.kind == "campaign" and args.cohort_share else None
    if cohort is not None:
        accounts.append(cohort)
    teacher = load(Path(args.teacher))
    asked, marked, plain = harvest(teacher, args, config, [derive_key(SECRET, o) for o in owners],
                                   derive_key(SECRET, cohort) if cohort is not None else None)
    tokens = sum(len(t) for t in marked)
    print(f"harvest: {args.kind} ({len(owners)} account(s)), {len(marked)} texts, {tokens} "
          f"tokens; {time.perf_counter() - began:.0f} s", flush=True)
    if args.student.startswith("trigram"):
        base = None
        marked_student = student(base, asked, marked, "marked", args)
    else:
        base = trained_base(teacher, args)
        marked_student = student(base, asked, marked, "marked", args)
    print(f"students trained; {time.perf_counter() - began:.0f} s", flush=True)
    return run_all(args, config, accounts, owners, asked, plain, base, marked_student, began)


def trained_base(teacher: Any, args: argparse.Namespace) -> Any:
    base_path = Path(args.cache_dir) / (f"base-{args.student_embd}-{args.student_layers}-"
                                        f"{args.pretrain_steps}-{args.seed}.pt")
    base = student_base("scratch", teacher, argparse.Namespace(**{**vars(args),
                                                                  "pretrain_steps": 0}))
    if base_path.exists():
        base.load_state_dict(torch.load(base_path))
    else:
        base = student_base("scratch", teacher, args)
        torch.save(base.state_dict(), base_path)
    return base


def run_all(args: argparse.Namespace, config: WatermarkConfig, accounts: list[str],
            owners: list[str], asked: Texts, plain: Texts, base: Any, marked_student: Any,
            began: float) -> None:
    groups = {"campaign": owners} if args.kind == "campaign" else {}
    candidates: Candidates = build_candidates(accounts, [SECRET], groups)
    plan = Plan(args.alpha, args.max_queries, args.queries_per_look, tuple(args.min_counts))
    sampler = LocalSampler(marked_student, args.gen_length, args.seed + 5)
    result = asyncio.run(run_suspect(
        sampler,
        prompt_stream(suspect_prompts(args), args.seed + 7), candidates, config, plan,
        on_look=lambda lk: print(f"  look {lk.index}: {lk.queries} queries, {lk.pairs} pairs, "
                                 f"best {lk.best[0].kind} {lk.best[0].name} green "
                                 f"{lk.best[0].green_fraction:.4f} corrected p "
                                 f"10^{lk.best[0].log10_p_corrected:.2f}", flush=True)))
    top = result.best[0]
    named = {"owner" if h.name in owners else ("campaign group" if h.kind == "group" else
             "cohort" if h.name.startswith(COHORT_PREFIX) else h.name)
             for h in result.attributed}
    summary: dict[str, Any] = {
        "kind": args.kind, "student": args.student, "min_counts": args.min_counts,
        "pretrain_steps": args.pretrain_steps,
        "steps": args.steps, "prompt_source": args.prompt_source,
        "harvested_tokens": args.samples * args.length, "accounts": args.accounts,
        "verdict": result.verdict, "attributed": sorted(named), "queries": result.queries,
        "tokens_sampled": result.tokens, "pairs": result.pairs,
        "cohort_share": args.cohort_share,
        "best": {"kind": top.kind, "is_harvester": (top.name in owners or top.kind == "group"
                                                    or top.name.startswith(COHORT_PREFIX)),
                 "green_fraction": top.green_fraction, "min_count": top.min_count,
                 "log10_p_corrected": top.log10_p_corrected},
        "max_looks": result.max_looks, "alpha": args.alpha}
    owner_keys = np.array([derive_key(SECRET, o) for o in owners], np.int64)
    green = green_counts_fast(*sampler.pairs.ctx_tokens(), owner_keys, config.gamma)
    summary["harvester_green_fraction"] = float(green.mean() / max(1, result.pairs))
    if args.kind == "campaign":
        members = [h for h in result.best if h.name in owners]
        summary["best_member_log10_p_corrected"] = (members[0].log10_p_corrected if members
                                                    else 0.0)
    print(f"suspect: {json.dumps(summary)}; {time.perf_counter() - began:.0f} s", flush=True)
    controls: dict[str, Any] = {}
    for name in [c for c in args.controls.split(",") if c]:
        model = (student(base, asked, plain, "plain", args) if name == "plain"
                 else marked_student)
        chunks = asyncio.run(sample_all(model, args, config.width, args.seed + 9))
        controls[name] = control_trials(chunks, args, config, plan)
        print(f"control {name}: {json.dumps(controls[name])}; "
              f"{time.perf_counter() - began:.0f} s", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"suspect": summary, "controls": controls,
                                                   "args": vars(args)}, indent=2))
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
