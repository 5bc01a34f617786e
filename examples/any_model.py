"""Any Hugging Face causal LM and any sae-lens SAE object, both built in memory (no files, no network): a tiny
random GPT-2 and a JumpReLU SAE at its layer-1 residual stream. Swap in your own model and SAE."""

import tempfile

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from transformers import GPT2Config, GPT2LMHeadModel

import saebasis as sb
from saebasis.core.models import tiny_tokenizer

torch.manual_seed(0)
tok = tiny_tokenizer()  # byte-level: any text round-trips
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=4, n_positions=256))
sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=32, d_sae=128))
pairs = [(f"Describe day {i}.", "A wonderful, happy day!", "A dreadful, gloomy day.") for i in range(16)]

steer = sb.train("sae_bias", model, tok, sae, data=pairs, hook="blocks.1.hook_resid_post", max_steps=8, progress=False)
with steer.apply(model, strength=2.0):
    print(sb.generate(model, tok, "Describe your day.", max_new_tokens=8))
print(steer.top_latents(5))  # no per-latent table for this SAE: read through the logit lens of each decoder row
with tempfile.TemporaryDirectory() as folder:
    again = sb.load(steer.save(f"{folder}/steer"), model=model, sae=sae)
    print(again, "reloaded bit for bit:", torch.equal(again.intervention.b, steer.intervention.b))
