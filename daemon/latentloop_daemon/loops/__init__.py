"""Loop making: length, plan, seam, loudness, tempo, and the pipeline that runs them in order.

``pipeline.make_loops`` is the entry point (a ``LoopRequest`` in, ``Clip``s and files out).
"""
