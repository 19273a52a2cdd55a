"""cvasr: a Common Voice speech recognition recipe (XLS-R 300M + CTC on espnet2), Assamese first."""

from cvasr.offline import defer_network_imports

__version__ = "0.1.0"

# Before anything imports espnet2: g2p_en's nltk downloads at import (cvasr.offline).
defer_network_imports()

# Our experiments name a frontend, encoder and model of ours: make them known to stock espnet2
# (Speech2Text and the like) as soon as it loads its ASR task, without importing espnet2 here.
from cvasr.models.espnet_choices import register_when_espnet2_loads as _register  # noqa: E402

_register()
