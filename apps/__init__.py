"""Applications built on the runtime library: the commands users run.

``evaluate`` (accuracy gate), ``benchmark``, ``segment`` (image files), ``video_demo`` and
``video_benchmark``, plus ``cli`` (the one home of the shared CLI helpers) and ``console`` (the
``nonlocalnet-*`` entry points). ``python -m runtime.<command>`` is an alias of
``python -m apps.<command>``. The library they use lives one level up (``runtime.backends``,
``runtime.tiling``, ``runtime.data``, ...) and never imports from here.
"""
