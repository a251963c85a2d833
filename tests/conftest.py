from fake_hub import fake_hub  # noqa: F401  (the fake Hugging Face Hub fixture, see tests/fake_hub.py)
