"""Radioactivity as a product: test a suspect model, served behind an OpenAI-compatible API,
for the watermark of the accounts whose outputs it was trained on (``gateway suspect`` and
``POST /admin/v1/suspects``). Torch-free: the suspect is only sampled over HTTP."""
