"""cvasr: a Common Voice speech recognition recipe (XLS-R 300M + CTC on espnet2), Assamese first."""

__version__ = "0.1.0"
