"""Stop handling: text decoded as tokens come reads as decoding all at once, stop sequences
cut it, and a request not streamed gets one event with what a stream sends."""

from __future__ import annotations

import math
import threading

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentplex.engine import BatchEngine, GenerationEvent, GenerationRequest  # noqa: E402
from agentplex.engine.lowlevel import held_back  # noqa: E402
from tests.support.engine_runs import prompts, run  # noqa: E402
from tests.support.tiny_llama import build_tokenizer  # noqa: E402


def test_held_back_keeps_what_may_still_become_a_stop() -> None:
    assert held_back("the end", ("END",)) == 0
    assert held_back("the EN", ("END",)) == 2
    assert held_back("the E", ("END", "Ex")) == 1
    assert held_back("caf\ufffd", ("END",)) == 1  # half a UTF-8 character
    assert held_back("abc", ()) == 0


def test_windows_decoded_together_read_as_each_decoded_alone() -> None:
    import copy

    from agentplex.engine._detokenize import batch_decoder

    tok = build_tokenizer()
    ids = tok("Hello there! {\"n\": [1, 2]} é 🎉 ok", add_special_tokens=False)["input_ids"]
    windows = [ids[:k] for k in range(len(ids) + 1)] + [ids[k:k + 2] for k in range(len(ids))]
    windows += [[tok.eos_token_id], [*ids, tok.eos_token_id]]
    alone = [tok.decode(w, skip_special_tokens=False) for w in windows]
    fast = batch_decoder(tok)
    assert fast.__name__ == "fast" and fast(windows) == alone
    cleaning = copy.deepcopy(tok)  # a clean-up the backend does not do: one decode each
    cleaning.clean_up_tokenization_spaces = True
    assert batch_decoder(cleaning).__name__ == "each"
    assert batch_decoder(cleaning)(windows) == [cleaning.decode(w) for w in windows]


def test_a_request_not_streamed_gets_one_event_with_what_the_stream_sends() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         initializer_range=1.0)  # varied tokens: stops are met mid-text
    eng = BatchEngine(LlamaForCausalLM(config).eval(),  # type: ignore[no-untyped-call]
                      tok, eos_ids={-1}, batch_wait=0.05, prefix_cache_bytes=0)
    prompt = prompts(1, shared=0, own=12)[0]
    events: dict[bool, list[GenerationEvent]] = {True: [], False: []}
    done = threading.Semaphore(0)

    def request(stream: bool, stop: tuple[str, ...]) -> GenerationRequest:
        def emit(event: GenerationEvent) -> None:
            events[stream].append(event)
            if event.finish_reason is not None:
                done.release()

        return GenerationRequest(prompt_ids=list(prompt), max_new_tokens=40, emit=emit,
                                 stop=stop, logprobs=2, stream=stream)

    try:
        full = run(eng, [prompt], 40)[0].text
        for stop in ((), (full[len(full) // 2:len(full) // 2 + 2],)):
            events[True].clear()
            events[False].clear()
            for stream in (True, False):
                eng.submit(request(stream, stop))
            assert done.acquire(timeout=60) and done.acquire(timeout=60)
            streamed, whole = events[True], events[False]
            assert len(whole) == 1 and len(streamed) > 1
            assert whole[0].text == "".join(e.text for e in streamed)
            assert whole[0].text == (full.split(stop[0])[0] if stop else full)
            scores = [s for e in streamed for s in e.logprobs]
            assert [s[0] for s in whole[0].logprobs] == [s[0] for s in scores]
            assert all(math.isclose(a[1], b[1], abs_tol=1e-4)
                       for a, b in zip(whole[0].logprobs, scores, strict=True))
            assert whole[0].finish_reason == streamed[-1].finish_reason
    finally:
        eng.close()
