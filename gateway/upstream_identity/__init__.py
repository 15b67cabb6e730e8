"""How the model server knows, verifiably, which account the gateway is serving (its watermark
key is derived from it): the signed-request format and its verifier (:mod:`.signature`) with the
gateway's signer (:mod:`.signer`), and for vLLM the tagged ``vllm_xargs`` (:mod:`.xargs_tag`)
with the gateway's request rewrite (:mod:`.vllm_xargs`). The format modules are stdlib only: the
model server and vLLM's API server import them."""
