"""Pipelines: model + sampler -> tensors -> decode -> crystals.

Each model that samples (``diffusion``, ``adversarial``, ``voxel``, ``atoms``) is its saved-model
bundle from :mod:`crysgen.models` with the sampling loop added (``cascade`` is its own bundle);
:mod:`crysgen.pipelines.sampling` (:func:`~crysgen.pipelines.sampling.sample_to_dir`) runs any of
them into a folder for `crysgen sample`.
"""
