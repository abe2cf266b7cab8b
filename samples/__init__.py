"""Synthetic sample data: procedural street scenes in the Cityscapes layout and a driving video.

``python -m samples.generate --out data/synth_cityscapes`` writes the dataset; the python API is
:func:`samples.generate.generate_dataset`, :func:`samples.generate.render_scene` and
:func:`samples.video.write_video`. Importing this package imports nothing heavy.
"""
