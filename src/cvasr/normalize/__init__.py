"""Text normalisers, one module a language; `get_normalizer(lang)` picks one by language code."""
