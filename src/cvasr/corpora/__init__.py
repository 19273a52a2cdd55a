"""Corpora: reading and checking Common Voice releases, and the synthetic releases the demo and
the tests are built on."""
