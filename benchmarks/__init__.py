"""Side-by-side benchmarks of jaxclient against TFF, DrJAX, FedJAX and a
plain per-client loop. Run `python -m benchmarks --help`; see README.md.

Not part of the test suite: nothing here asserts anything about time.
"""
