"""A short automatic explanation of a latent, written by the embedded model from its top contexts.

Clearly labelled as automatic and unreliable: a 135M model is a weak explainer; read the contexts.
"""

from __future__ import annotations

LABEL = "automatic explanation (SmolLM2-135M, unreliable)"


def explain(model, tokenizer, contexts: list[dict], lens: dict, max_new_tokens: int = 24) -> str:
    from saebasis.eval.generation import generate

    snippets = []
    for c in contexts[:4]:
        tokens = c["tokens"]
        peak = max(range(len(c["acts"])), key=lambda i: c["acts"][i]) if c["acts"] else 0
        text = tokenizer.convert_tokens_to_string(tokens[:peak]) + " [[" + tokenizer.convert_tokens_to_string(tokens[peak : peak + 1]) + "]]"
        snippets.append("- " + " ".join(text.split())[-160:])
    prompt = ("Here are text snippets; the word in [[double brackets]] is where a hidden feature fires.\n" + "\n".join(snippets)
              + f"\nWords this feature promotes: {', '.join(w.strip() for w in lens['promoted'][:6])}.\n"
              "In a few words, what concept does this feature detect?")
    out, _ = generate(model, tokenizer, [prompt], None, None, max_new_tokens=max_new_tokens, batch_size=1)
    return out[0].split("\n")[0].strip()
