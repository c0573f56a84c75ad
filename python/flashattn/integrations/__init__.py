"""Integrations of flashattn with other libraries (imported on demand, never by `import flashattn`).

* :mod:`flashattn.integrations.transformers`: Hugging Face transformers' attention interface.
"""
