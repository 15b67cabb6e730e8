"""vLLM as the gateway's upstream: the launcher (``python -m gateway.vllm``) and the request
rewrite that names the watermark account to vLLM's logits processor."""
