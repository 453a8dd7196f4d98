"""IndexTTS2 inference engine: pure PyTorch, no GUI imports.

Heavy submodules (torch models) are imported lazily by their users; importing ``core`` itself is cheap.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
