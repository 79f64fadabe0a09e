"""The benchmark harness behind scripts/benchmark.py (numbers, not tests).

- `tutorial`: the seed tutorial's way of training (`keras.Model.fit` on arrays), timed;
- `harness`: this trainer's loop timed, the input pipeline alone, FLOPs and the machine.
"""
