"""Long reliability tests (``pytest -m long``, run by ``make test-long``): minutes each."""
