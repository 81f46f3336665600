"""The networks and what samples them token by token: CLIP and its tokenizer, the priors,
the decoder, the upsamplers, DALL-E 1's dVAE and transformer. Networks import no pipeline."""
