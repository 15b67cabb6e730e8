"""Text ↔ token ids for the served model: the byte tokenizer of the shipped tiny model (which the
watermark detector uses to re-tokenise text), Hugging Face tokenizers for other models, and the
byte vocabulary as a Hugging Face ``tokenizer.json`` for vLLM. Shared by the model server and
the watermark, so neither depends on the other for it."""
