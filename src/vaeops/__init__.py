"""vaeops: which activation function makes the best VAE, answered reproducibly.

Importing the package has no side effects and pulls in no heavy dependency; import the
submodules you need (`vaeops.models`, `vaeops.training`, ...).
"""

__version__ = "0.1.0"
