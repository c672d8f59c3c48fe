"""A Hugging Face ``config.json`` read as a ModelSpec (``--model config.json``).

Families read (their ``model_type``), with the fields each names a shape by:

* ``gpt2`` (GPT-2, Fugaku-LLM): n_layer, n_embd, n_head, n_inner (default 4 x n_embd),
  vocab_size, n_positions; learned positions, LayerNorm and biases, GELU; the output
  layer tied unless ``tie_word_embeddings`` is false; dropout when any of
  resid_pdrop / embd_pdrop / attn_pdrop is above 0 (default 0.1).
* ``gpt_neox`` (Pythia, GPT-NeoX): num_hidden_layers, hidden_size,
  num_attention_heads, intermediate_size, vocab_size, max_position_embeddings; rotary
  positions, LayerNorm and biases, GELU; untied unless ``tie_word_embeddings``.
* ``llama``, ``mistral``, ``qwen2``: the same names plus num_key_value_heads (grouped-
  query attention); rotary positions, RMSNorm, SwiGLU (``hidden_act`` silu), no biases
  (llama's attention_bias / mlp_bias say otherwise when set), untied unless
  ``tie_word_embeddings``; no dropout unless ``attention_dropout`` is above 0.
* ``mixtral`` (Mixtral): as ``mistral``, every MLP a mixture of num_local_experts
  experts of intermediate_size, num_experts_per_tok of them per token.
* ``deepseek`` (DeepSeekMoE): as ``llama``, with n_routed_experts experts of
  moe_intermediate_size (num_experts_per_tok per token) and n_shared_experts shared
  ones in every moe_layer_freq-th layer after the first first_k_dense_replace, which
  are dense (intermediate_size).

The sequence length is ``n_positions`` / ``max_position_embeddings`` (the longest the
model takes), or the one ``--seq`` gives. Fields that change what a step costs and
that the model cannot represent are refused by name: mixture-of-experts fields in
another family, a
sliding attention window shorter than the sequence, a head size other than hidden /
heads, biases on some projections only (but Qwen2's query, key and value biases,
a few thousand parameters a layer, are left out of the count and the model's source
says so), an activation other than GELU or SiLU. Every other field (dtypes, token ids, rope
scaling, initialiser ranges...) does not change the cost of a step and is ignored.
"""

from __future__ import annotations

import math

from fpcore.errors import SpecError, shown

from .model import ModelSpec

FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "mixtral", "deepseek")
MOE_FAMILIES = ("mixtral", "deepseek")
GELUS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python")
MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok",
              "moe_intermediate_size", "n_shared_experts")


def model_from_hf_config(data, where: str, name: str, seq: int | None = None) -> ModelSpec:
    """The model a Hugging Face ``config.json`` (already parsed) describes, trained on
    sequences of ``seq`` tokens (default: the longest it takes)."""
    if not isinstance(data, dict):
        raise SpecError(where, "must be a JSON object (a Hugging Face config.json)")
    family = data.get("model_type")
    if family not in FAMILIES:
        raise SpecError(f"{where}: model_type", f"must be one of {', '.join(FAMILIES)} "
                                                f"(the families read); got {str(family)[:40]!r}")
    for field in MOE_FIELDS if family not in MOE_FAMILIES else ():
        if data.get(field) not in ((None, 0, 1) if field == "num_experts_per_tok" else (None, 0)):
            raise SpecError(f"{where}: {field}", f"mixture-of-experts {family} models are not "
                                                 f"read (the families with experts read: "
                                                 f"{', '.join(MOE_FAMILIES)})")
    get = _reader(data, where)
    left_out = ""                       # what the count leaves out, said in the source
    if family == "gpt2":
        hidden = get("n_embd", int)
        act = get("activation_function", str, "gelu_new")
        fields = dict(layers=get("n_layer", int), hidden=hidden, heads=get("n_head", int),
                      ffn=get("n_inner", int, None) or 4 * hidden, vocab=get("vocab_size", int),
                      seq=get("n_positions", int, None) or get("n_ctx", int),
                      tied_embeddings=get("tie_word_embeddings", bool, True),
                      norm="layernorm", activation=_activation(act, where, "activation_function"),
                      position="learned", bias=True,
                      dropout=any(get(k, float, 0.1) > 0 for k in
                                  ("resid_pdrop", "embd_pdrop", "attn_pdrop")))
    else:
        heads = get("num_attention_heads", int)
        hidden = get("hidden_size", int)
        fields = dict(layers=get("num_hidden_layers", int), hidden=hidden, heads=heads,
                      ffn=get("intermediate_size", int), vocab=get("vocab_size", int),
                      seq=get("max_position_embeddings", int),
                      tied_embeddings=get("tie_word_embeddings", bool, False),
                      activation=_activation(get("hidden_act", str), where, "hidden_act"),
                      position="rope")
        if family == "gpt_neox":
            fields.update(norm="layernorm", bias=True, kv_heads=heads,
                          dropout=max(get("hidden_dropout", float, 0.0),
                                      get("attention_dropout", float, 0.0)) > 0)
        else:
            bias, left_out = _llama_bias(get, family, hidden, where)
            fields.update(norm="rmsnorm", kv_heads=get("num_key_value_heads", int, heads),
                          bias=bias, dropout=get("attention_dropout", float, 0.0) > 0)
        if family == "mixtral":
            fields.update(experts=get("num_local_experts", int),
                          top_k=get("num_experts_per_tok", int))
        elif family == "deepseek":
            fields.update(experts=get("n_routed_experts", int),
                          top_k=get("num_experts_per_tok", int),
                          expert_ffn=get("moe_intermediate_size", int),
                          shared_experts=get("n_shared_experts", int, 0),
                          first_dense=get("first_k_dense_replace", int, 0),
                          moe_every=get("moe_layer_freq", int, 1))
        head_dim = get("head_dim", int, None)
        if head_dim is not None and head_dim * heads != hidden:
            raise SpecError(f"{where}: head_dim", f"{head_dim} x {heads} heads is not the "
                                                  f"hidden size {hidden}: not modelled")
        if seq is not None:
            fields["seq"] = seq
        window = get("sliding_window", int, None)
        if window is not None and window < 1:
            raise SpecError(f"{where}: sliding_window", f"must be a whole number >= 1 (or "
                                                        f"null); got {window}")
        if window is not None and get("use_sliding_window", bool, True) \
                and window < fields["seq"]:
            raise SpecError(f"{where}: sliding_window", f"attention over a window of {window} "
                                                        f"tokens, shorter than the "
                                                        f"{fields['seq']}-token sequence, is "
                                                        f"not modelled (--seq {window} or "
                                                        f"less is)")
    try:
        return ModelSpec(name=name, source=f"Hugging Face config {where} ({family})" + left_out,
                         **fields)
    except SpecError as e:
        raise e.within(where) from None


# What a config.json value of each kind must be, as an error says it.
_KINDS = {int: "a whole number", float: "a finite number", bool: "true or false",
          str: "a string"}


def _reader(data: dict, where: str):
    missing = object()

    def get(key: str, kind, default=missing):
        value = data.get(key, missing)
        if value is missing or value is None:
            if default is missing:
                raise SpecError(f"{where}: {key}", "is required for this model_type")
            return default
        if kind in (bool, str):
            ok = isinstance(value, kind)
        else:                # a finite number (JSON's ints have no bound); a whole one for an int
            ok = isinstance(value, int) and not isinstance(value, bool) and (
                kind is int or abs(value) < 2 ** 1000) or isinstance(value, float) and \
                math.isfinite(value) and (kind is float or value.is_integer())
        if not ok:
            raise SpecError(f"{where}: {key}", f"must be {_KINDS[kind]}; got {shown(value)}")
        return kind(value)
    return get


def _activation(name: str, where: str, key: str) -> str:
    if name in GELUS:
        return "gelu"
    if name == "silu":
        return "swiglu"               # the gated MLP these families run
    raise SpecError(f"{where}: {key}", f"must be a GELU ({', '.join(GELUS)}) or silu; got "
                                       f"{str(name)[:40]!r}")


def _llama_bias(get, family: str, hidden: int, where: str) -> tuple[bool, str]:
    """Whether the projections carry biases (``get``: the config's typed reader), and
    what the count leaves out."""
    if family == "qwen2":             # biases on q, k and v only: too few to model
        return False, (f"; its query, key and value biases (at most {3 * hidden:,} "
                       f"parameters a layer) are left out")
    attention, mlp = get("attention_bias", bool, False), get("mlp_bias", bool, False)
    if attention != mlp:
        raise SpecError(f"{where}: {'attention_bias' if attention else 'mlp_bias'}",
                        "biases on some projections only are not modelled")
    return attention, ""
