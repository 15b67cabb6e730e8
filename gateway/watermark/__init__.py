"""The model side of the keyed output watermark: hashing, the logits processor (the reference
server's and vLLM's adapter), the detector and attribution, per-account keys, and the
``gateway detect`` command. The proxy's logprob defences are :mod:`gateway.logprobs`; how the
model server learns the account is :mod:`gateway.upstream_identity`."""
