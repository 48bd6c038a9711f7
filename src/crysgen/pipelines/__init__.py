"""Pipelines: model + sampler -> tensors -> decode -> crystals."""
