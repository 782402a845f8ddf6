"""What a chosen token does to its request: new text, the end of the request, its events.

After each pass :meth:`StopHandler.advance` gives every unfinished row its token. A row ends
at an end-of-sequence token, when a stop sequence appears in its text (the text is cut
before it), when its grammar is complete, or at its ``max_new_tokens``. Text is decoded
incrementally, as Transformers' streamer does (a short window of tokens per row, every row's
windows in one call), and sent once it can no longer change: an incomplete UTF-8 character,
or a tail that may still become a stop sequence, is held back (:func:`held_back`).
"""

from __future__ import annotations

from typing import Any

from ._detokenize import batch_decoder
from ._request import GenerationEvent, GenerationRequest

__all__ = ["StopHandler", "ends", "held_back"]


def ends(tokens: Any, eos: Any, produced: Any, limit: Any) -> Any:
    """Which rows end with their new ``tokens``: an end-of-sequence token (``eos``, a tensor
    of ids) or their ``limit`` of new tokens reached (``produced``: tokens before these).
    Tensor operations on the tokens' device, no host sync (a decode step's graph holds it:
    the step's one sync brings back the tokens and this mask together)."""
    return (tokens[:, None] == eos[None]).any(dim=-1) | (produced + 1 >= limit)


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might still become a stop sequence (or a UTF-8 char)."""
    if text.endswith("\ufffd"):
        return len(text) - len(text.rstrip("\ufffd"))
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return hold


class StopHandler:
    """Applies chosen tokens to requests and ends them, for one tokenizer."""

    def __init__(self, tokenizer: Any, eos_ids: set[int]) -> None:
        self.eos_ids = eos_ids
        self._decode_many = batch_decoder(tokenizer)

    def eos_tensor(self, device: Any) -> Any:
        """The end-of-sequence ids as a tensor on ``device`` (for :func:`ends`)."""
        import torch

        return torch.tensor(sorted(self.eos_ids), dtype=torch.long, device=device)

    def advance(self, reqs: list[GenerationRequest], chosen: list[int],
                ended: list[bool] | None = None) -> None:
        """Give each unfinished row its chosen token: the end at an end-of-sequence token,
        else its new text (every row's windows decoded in one call), stops and events.
        ``ended``: each row's verdict of :func:`ends`, when a device step computed it (a
        row it ends is looked up in ``eos_ids`` only then)."""
        rows: list[tuple[GenerationRequest, bool]] = []  # and whether it ended
        windows: list[list[int]] = []
        eos = self.eos_ids
        for i, (req, token) in enumerate(zip(reqs, chosen, strict=True)):
            if req.finish_reason is not None:
                continue
            if req.matcher is not None:
                req.matcher.accept_token(token)
            req.generated.append(token)
            at_eos = (ended is None or ended[i]) and token in eos
            rows.append((req, at_eos))
            if not at_eos:  # as Transformers' streamer: only a short window is decoded
                windows += (req.generated[req._prefix:req._read], req.generated[req._prefix:])
        texts = iter(self._decode_many(windows) if windows else ())
        for req, stopped in rows:
            if stopped:
                self.finish(req, "stop")
            else:
                self._extend(req, next(texts), next(texts))

    def _extend(self, req: GenerationRequest, before: str, after: str) -> None:
        """Add the text of ``req``'s new token (``after`` decodes the window that ``before``
        decoded, and the tokens since), then end it or send what can be shown."""
        if len(after) > len(before) and not after.endswith("\ufffd"):
            req._decoded += after[len(before):]
            req._prefix, req._read = req._read, len(req.generated)
            text = req._decoded
        else:  # an incomplete character: shown once complete
            text = req._decoded + after[len(before):]
        for stop in req.stop:
            at = text.find(stop, max(0, req._seen - len(stop)))
            if at >= 0:
                text = text[:at]
                req.finish_reason = "stop"
        req.text = text
        if req.finish_reason is None and req.matcher is not None and req.matcher.is_terminated():
            req.finish_reason = "stop"
        if req.finish_reason is None and len(req.generated) >= req.max_new_tokens:
            req.finish_reason = "length"
        if req.finish_reason is not None:
            self.finish(req, req.finish_reason)
            return
        upto = len(text) - held_back(text, req.stop)
        if upto > req._seen:  # the text that can no longer change
            req._seen = upto
            if req.stream:
                delta, req.sent = text[req.sent:upto], upto
                self.emit(req, GenerationEvent(text=delta, output_tokens=len(req.generated)))

    def finish(self, req: GenerationRequest, reason: str) -> None:
        """End ``req`` for ``reason``: its last event carries the text not sent yet."""
        req.finish_reason = reason
        delta = req.text[req.sent:] if reason != "cancelled" else ""
        req.sent = len(req.text)
        self.emit(req, GenerationEvent(text=delta, output_tokens=len(req.generated),
                                       finish_reason=reason))

    def fail(self, req: GenerationRequest, error: BaseException) -> None:
        """End ``req`` with ``error`` unless it has ended already."""
        if req.finish_reason is None:
            req.finish_reason = "error"
            self.emit(req, GenerationEvent(error=error, finish_reason="error"))

    def emit(self, req: GenerationRequest, event: GenerationEvent) -> None:
        """Send ``event`` to ``req``'s caller, with the log-probabilities kept since the last
        one; a caller whose event loop is gone has its request cancelled."""
        if req._scores and event.error is None:
            event.logprobs, req._scores = req._scores, []
        try:
            req.emit(event)
        except RuntimeError:  # the caller's event loop is gone
            req.cancelled = True
