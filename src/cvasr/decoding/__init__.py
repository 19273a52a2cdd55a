"""Decoding: CTC search (greedy, prefix beam) over a trained model's posteriors, for data dirs
(stage 5) and for audio files (`cvasr transcribe`)."""
