"""Text: per-language normalisers (one spelling for every variant, no punctuation) and the token
lists the models are trained on."""
