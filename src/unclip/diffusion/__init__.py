"""The diffusion process, kept apart from the networks: schedules, the training objective,
samplers and classifier-free guidance, shared by the prior, the decoder and the upsamplers."""
