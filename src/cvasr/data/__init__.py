"""Data: Kaldi tables and data dirs, audio decoding, and the data preparation stages (1: release to
data dirs, 2: audio dump) with the report of every clip they drop."""
