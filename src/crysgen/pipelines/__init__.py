"""Pipelines: model + sampler -> tensors -> decode -> crystals.

The bundles' sampling loops live beside their models (``diffusion``, ``cascade``, ``adversarial``,
``voxel``, ``atoms``); :mod:`crysgen.pipelines.sampling` (:func:`~crysgen.pipelines.sampling.sample_to_dir`)
runs any of them into a folder for `crysgen sample`.
"""
