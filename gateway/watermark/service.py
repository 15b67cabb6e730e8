"""Detection glue that knows the gateway's settings (kept out of the torch-free core)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.settings import Settings
from gateway.tokenizer.core import ByteTokenizer
from gateway.watermark.attribution import Attribution, KeyRing, attribute
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.keys import LOCAL_MODE_SECRET


def watermark_config(settings: Settings) -> WatermarkConfig:
    return WatermarkConfig(gamma=settings.watermark_gamma, delta=settings.watermark_delta,
                           width=settings.watermark_context_width)


def watermark_secrets(settings: Settings) -> list[bytes]:
    """Current secret first, then previous ones (rotation); the local-mode constant when unset."""
    current = (settings.watermark_secret.get_secret_value().encode()
               if settings.watermark_secret else LOCAL_MODE_SECRET)
    return [current] + [s.get_secret_value().encode() for s in settings.watermark_previous_secrets]


def text_token_ids(text: str) -> list[int]:
    """Text → the served model's token ids. The reference model is byte-level, so this is
    exact; a deployment serving another tokenizer submits ``token_ids`` instead."""
    return ByteTokenizer().encode(text)


class AttributionService:
    """Caches the key ring for the last account list (deriving 10k keys costs ~0.1 s)."""

    def __init__(self, settings: Settings) -> None:
        self.config = watermark_config(settings)
        self.alpha = settings.watermark_alpha
        self._secrets = watermark_secrets(settings)
        self._ring: KeyRing | None = None
        self._ids: tuple[str, ...] = ()

    def ring(self, account_ids: Sequence[str]) -> KeyRing:
        ids = tuple(account_ids)
        if self._ring is None or ids != self._ids:
            self._ring, self._ids = KeyRing(ids, self._secrets), ids
        return self._ring

    def attribute(self, token_ids: Sequence[int], account_ids: Sequence[str]) -> Attribution:
        return attribute(token_ids, self.ring(account_ids), self.config, self.alpha)
