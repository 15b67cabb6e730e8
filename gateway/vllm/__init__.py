"""vLLM as the gateway's upstream: the launcher (``python -m gateway.vllm``) and the demo's use
of it. The request rewrite that names the watermark account to vLLM's logits processor is
:mod:`gateway.upstream_identity.vllm_xargs`."""
