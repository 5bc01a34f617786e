"""Train an SAE-basis steering bias on the embedded SmolLM2, steer with it, read it, save and reload it."""

import saebasis as sb

model, tok = sb.load_model("smollm2")
steer = sb.train("sae_bias", model, tok, "builtin:smollm2-l12", data="sentiment", max_steps=36)
with steer.apply(model, strength=1.0):
    print(sb.generate(model, tok, "Tell me about your day."))
print(steer.top_latents(10))
steer = sb.load(steer.save("runs/quickstart-sentiment", overwrite=True), model=model)
