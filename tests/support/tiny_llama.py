"""A tiny Llama trained by the tests to say a few known answers, and its tokenizer."""

from __future__ import annotations

from typing import Any

import torch

TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools:\n{% for t in tools %}{{ t | tojson }}\n"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking %}<think>\n{% endif %}{% endif %}"
)

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]},
                           "hours": {"type": "integer", "minimum": 0, "maximum": 23}},
            "required": ["zone", "hours"],
        },
    },
}

# (messages, tools, answer): what the tiny model is trained to say.
EXAMPLES: list[tuple[list[dict[str, str]], list[dict[str, Any]] | None, str]] = [
    ([{"role": "user", "content": "Please think first."}], None,
     "<think>\nI should greet.\n</think>\nHello there!"),
    ([{"role": "user", "content": "What is the weather in Paris?"}], [WEATHER_TOOL, TIME_TOOL],
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'),
    ([{"role": "user", "content": "Count to ten."}], None,
     "one two three four five six seven eight nine ten"),
    ([{"role": "user", "content": "Say hi."}], None, "hi"),
]


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [answer for _, _, answer in EXAMPLES] + [
        "The quick brown fox jumps over the lazy dog. {\"name\": \"value\", \"n\": [1, 2, 3]}",
        "user assistant system tools weather city Paris London count think hello",
        "0123456789 true false null abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    ]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|pad|>")
    tok.add_tokens(["<think>", "</think>", "<tool_call>", "</tool_call>"])
    tok.chat_template = TEMPLATE
    return tok


def train_model(tok: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    rows = []
    for messages, tools, answer in EXAMPLES:
        prompt = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                         tokenize=False)
        ids = tok(prompt + answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((ids, len(tok(prompt, add_special_tokens=False)["input_ids"])))
    width = max(len(r) for r, _ in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for i, (r, start) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, start - 2 : len(r)] = torch.tensor(r[start - 2 :])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(300):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()  # type: ignore[no-untyped-call]
    return model


