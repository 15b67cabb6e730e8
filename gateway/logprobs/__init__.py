"""Defences on the logprobs clients ask for and get back (the proxy's side of logit-stealing
defence): per-tier caps on ``top_logprobs``/``logit_bias``/``n`` (:mod:`.caps`), and keyed,
deterministic noise and rounding on every logprob returned (:mod:`.noise`, :mod:`.shaping`)."""
