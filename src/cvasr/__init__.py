"""cvasr: a Common Voice speech recognition recipe (XLS-R 300M + CTC on espnet2), Assamese first."""

from cvasr.offline import defer_network_imports

__version__ = "0.1.0"

# Before anything imports espnet2: g2p_en's nltk downloads at import (cvasr.offline).
defer_network_imports()

